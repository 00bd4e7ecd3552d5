#!/usr/bin/env python3
"""The security work of issue 5, end to end: the SSRF guard, URL checks at save time, TLS and
mTLS towards a Voice App's endpoint, personal data kept out of the log and (with a data key)
out of the database, and retention.

usage: test_security.py CALLHOOK_BINARY PAYLOADS_DIR [NAME_FILTER...]
       (or CALLHOOK_BIN / CALLHOOK_PAYLOADS_DIR in the environment)

Only 127.0.0.1 is contacted: the receivers (tests/integration/receiver.py, and `callhook
receive` for HTTPS) listen there, and the URLs that the guard must refuse name loopback in
other spellings (localhost, [::ffff:127.0.0.1], 2130706433, ...), which resolve without any
network and are refused before a socket exists. Certificates are made in each test's temp dir
with the openssl CLI. Every test has its own temp dir, serve, receiver and free ports; every
process is killed in a finally/cleanup; every wait has a deadline (CALLHOOK_TEST_TIME_SCALE
stretches them all). The last line is `N passed, M failed`; the exit status is 1 if anything
failed. CALLHOOK_KEEP_TMP keeps the temp dirs.

Where the docs are silent, the assumption a test makes is written next to it, marked
"Assumption:".
"""

import atexit
import base64
import http.client
import json
import os
import re
import secrets as _secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import Serve, free_port, scaled, wait_until  # noqa: E402
from receiver import Receiver, Response, decode_secret  # noqa: E402

BIN = None
PAYLOADS = None
HOST = "127.0.0.1"

# Settings of serve/receive that the caller's environment must not change under a test (an
# empty value is ignored by callhook's settings loader).
NEUTRAL_ENV = {k: "" for k in (
    "CALLHOOK_DATA_KEY", "CALLHOOK_DATA_KEY_FILE", "CALLHOOK_ALLOW_CIDR",
    "CALLHOOK_PAYLOAD_RETENTION_S", "CALLHOOK_ATTEMPT_RETENTION_S", "CALLHOOK_PURGE_INTERVAL_S",
    "CALLHOOK_LISTEN", "CALLHOOK_DB", "CALLHOOK_CONFIG")}

# Delivery to the plain-HTTP test receiver on 127.0.0.1.
LOCAL_APP = {
    "allowInsecureHttp": True,
    "allowPrivateNetwork": True,
    "retryScheduleSeconds": [1],
    "timeoutMs": 3000,
    "connectTimeoutMs": 2000,
}
ERROR_CLASSES = {"http", "timeout", "connect", "tls", "refused", "other"}


def T(seconds):
    """A deadline, stretched by CALLHOOK_TEST_TIME_SCALE."""
    return scaled(seconds)


def payload_files():
    """(event, file name, bytes) of every payload: begin-call*.json and end-call*.json."""
    out = []
    for name in sorted(os.listdir(PAYLOADS)):
        if not name.endswith(".json"):
            continue
        event = ("begin-call" if name.startswith("begin-call") else
                 "end-call" if name.startswith("end-call") else None)
        if event is None:
            continue
        with open(os.path.join(PAYLOADS, name), "rb") as f:
            out.append((event, name, f.read()))
    return out


def personal_data(obj, found=None):
    """Phone numbers (strings of '+' and a digit...), e-mail addresses (strings with '@') and
    the values of CallerDisplayName and DisplayName found anywhere in a parsed record."""
    found = set() if found is None else found
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("CallerDisplayName", "DisplayName") and isinstance(v, str) and v:
                found.add(v)
            personal_data(v, found)
    elif isinstance(obj, list):
        for v in obj:
            personal_data(v, found)
    elif isinstance(obj, str):
        if re.match(r"^\+\d", obj) or "@" in obj:
            found.add(obj)
    return found


def spellings(text):
    """The byte forms in which text could show up in a file: UTF-8, JSON-escaped, and for a
    phone number also its digits alone."""
    forms = {text.encode("utf-8"), json.dumps(text)[1:-1].encode("ascii")}
    if re.match(r"^\+\d+$", text):
        forms.add(text[1:].encode())
    return forms


def read_folder(folder):
    """{file name: bytes} of every regular file in folder."""
    out = {}
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            with open(p, "rb") as f:
                out[name] = f.read()
    return out


def occurrences(files, needles):
    """[(needle, file)] for each needle (bytes) found in any of files ({name: bytes})."""
    return [(n, name) for n in needles for name, data in files.items() if n in data]


sanitizer_lines = harness.sanitizer_lines


# ---------------------------------------------------------------------------------------------
# Certificates, made with the openssl CLI in the test's temp dir


def openssl(*args, cwd):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True,
                       timeout=T(30), stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), p.stderr))


def make_pki(d):
    """A CA; a server certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1) and a client
    certificate, both signed by it; a second, unrelated CA and a server certificate for
    127.0.0.1 signed by that one. Returns {name: absolute path prefix} (+ .pem / .key)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2",
                "-subj", "/CN=callhook security test %s" % ca,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    server_ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    certs = {"server": ("ca", "/CN=127.0.0.1", server_ext),
             "client": ("ca", "/CN=callhook sender", "extendedKeyUsage=clientAuth\n"),
             "client2": ("ca", "/CN=callhook sender two", "extendedKeyUsage=clientAuth\n"),
             "other-server": ("other-ca", "/CN=127.0.0.1", server_ext)}
    for name, (ca, subj, ext) in certs.items():
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + ext)
        openssl("req", "-new", *ec, "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", subj, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
                "-extfile", name + ".ext", "-out", name + ".pem", cwd=d)
    return {n: os.path.join(d, n) for n in ("ca", "other-ca", "server", "client", "client2",
                                            "other-server")}


# ---------------------------------------------------------------------------------------------
# `callhook receive` over HTTPS on 127.0.0.1


class ReceiveError(RuntimeError):
    pass


_LIVE = set()  # ReceiveProc objects that may have a running process
_LIVE_LOCK = threading.Lock()
_PDEATHSIG = None


def _pdeathsig():
    global _PDEATHSIG
    if _PDEATHSIG is None:
        _PDEATHSIG = harness._setpriv_prefix()
    return _PDEATHSIG


def cleanup():
    """Kill every `callhook receive` and serve still running (also at exit)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for p in live:
        try:
            p.kill()
        except (OSError, subprocess.SubprocessError):
            pass
    harness.cleanup()


atexit.register(cleanup)


class ReceiveProc:
    """One `callhook receive` process: HTTPS with the given certificate, optional mTLS, a
    JSON-lines handler. start() waits until GET /healthz answers 200 (presenting the client
    certificate when mTLS is on)."""

    def __init__(self, workdir, secret, cert, client_ca=None, probe_ca=None, probe_cert=None,
                 name="receive"):
        self.workdir = workdir
        self.secret = secret
        self.cert = cert
        self.client_ca = client_ca
        self.probe_ca = probe_ca
        self.probe_cert = probe_cert
        self.name = name
        self.port = None
        self.store = os.path.join(workdir, name + "-inbox.db")
        self.jsonl = os.path.join(workdir, name + "-events.jsonl")
        self.log_path = os.path.join(workdir, name + ".log")
        self.proc = None
        self.exits = []

    def command(self):
        cmd = [BIN, "receive", "--listen", "%s:%d" % (HOST, self.port), "--store", self.store,
               "--secret", self.secret, "--tls-cert", self.cert + ".pem",
               "--tls-key", self.cert + ".key", "--jsonl", self.jsonl,
               "--retry-base-ms", "100"]
        if self.client_ca:
            cmd += ["--tls-client-ca", self.client_ca + ".pem"]
        return cmd

    def environment(self):
        env = {k: v for k, v in os.environ.items()
               if k not in harness.PROXY_VARS and not k.startswith("CALLHOOK_RECEIVE_")}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def _ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.probe_ca + ".pem")
        if self.probe_cert:
            ctx.load_cert_chain(self.probe_cert + ".pem", self.probe_cert + ".key")
        return ctx

    def healthz(self):
        conn = http.client.HTTPSConnection(HOST, self.port, timeout=2,
                                           context=self._ssl_context())
        try:
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            return r.status == 200
        finally:
            conn.close()

    def start(self, timeout=None):
        timeout = T(15) if timeout is None else timeout
        for attempt in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                log.write(("=== start: %s ===\n" % " ".join(self.command())).encode())
                log.flush()
                self.proc = subprocess.Popen(_pdeathsig() + self.command(),
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             env=self.environment(), cwd=self.workdir)
            with _LIVE_LOCK:
                _LIVE.add(self)
            deadline = time.monotonic() + timeout
            while True:
                code = self.proc.poll()
                if code is not None:
                    if attempt < 2 and "cannot listen" in self.log():
                        break  # lost the port to someone: another one
                    self.exits.append(code)
                    raise ReceiveError("%s exited with %d before /healthz answered:\n%s" % (
                        self.name, code, self.log()[-3000:]))
                try:
                    if self.healthz():
                        return self
                except (OSError, http.client.HTTPException, ssl.SSLError):
                    pass
                if time.monotonic() >= deadline:
                    self.kill()
                    raise ReceiveError("%s: /healthz did not answer within %.1fs:\n%s" % (
                        self.name, timeout, self.log()[-3000:]))
                time.sleep(0.05)
        raise ReceiveError("%s: no free port" % self.name)

    def url(self, path):
        return "https://%s:%d%s" % (HOST, self.port, path)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.exits.append(self.proc.wait(10))

    def stop(self, timeout=None):
        """SIGTERM, then SIGKILL after the deadline. Returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(T(10) if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.exits.append(code)
        return code

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def events(self):
        """The lines the JSON-lines handler wrote, parsed."""
        try:
            with open(self.jsonl, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in data.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# Tests


class SecurityCase(unittest.TestCase):
    """A temp dir per test; the serves, receivers and `callhook receive` processes made through
    the helpers are stopped at the end, and a crash, an unclean stop or a sanitizer report in
    any of their logs fails the test."""

    maxDiff = 4000

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="callhook-sec-")
        harness._workdirs.append(self.tmp)  # removed by harness.cleanup() on a timeout too
        self.serves = []
        self.receivers = []
        self.procs = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        problems = []
        for rx in self.receivers:
            rx.stop()
        for p in self.procs:
            try:
                p.stop()
            finally:
                p.kill()
                with _LIVE_LOCK:
                    _LIVE.discard(p)
            bad = [c for c in p.exits if c != 0]
            if bad:
                problems.append("%s exited with %s" % (p.name, bad))
            problems += ["%s: %s" % (p.name, line) for line in sanitizer_lines(p.log())]
        for s in self.serves:
            try:
                s.stop()
            finally:
                s.kill9()
            bad = [c for c in s.exits if c != 0]
            if bad:
                problems.append("%s exited with status %s (SIGTERM should stop it cleanly)" % (
                    s.name, bad))
            problems += ["%s: %s" % (s.name, line) for line in s.sanitizer_reports()]
        # Keep the logs for the failure report, then remove everything.
        self.final_logs = {s.name: s.logs(tail_lines=120) for s in self.serves}
        self.final_logs.update({p.name: p.log()[-6000:] for p in self.procs})
        if not os.environ.get("CALLHOOK_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("kept %s" % self.tmp)
        if problems:
            self.fail("\n".join(problems[:20]))

    # -- helpers -----------------------------------------------------------------------------

    def serve(self, *extra_args, env=None, name="serve", start=True):
        """A serve with its own folder (the database folder) under the test's temp dir."""
        e = dict(NEUTRAL_ENV)
        e.update(env or {})
        folder = os.path.join(self.tmp, name)
        os.makedirs(folder)
        s = Serve(BIN, extra_args=list(extra_args), env=e, workdir=folder, name=name)
        self.serves.append(s)
        if start:
            s.start()
        return s

    def receiver(self, **kw):
        rx = Receiver(**kw).start()
        self.receivers.append(rx)
        return rx

    def put_app(self, serve, app_id, body, expect=(200, 201)):
        r = serve.api("PUT", "/v1/voice-apps/" + app_id, body)
        self.assertIn(r.status, expect, "PUT /v1/voice-apps/%s %s: %r" % (
            app_id, json.dumps(body), r))
        return r

    def secret_of(self, serve, app_id):
        r = serve.api("GET", "/v1/voice-apps/%s/secret" % app_id)
        self.assertEqual(r.status, 200, r)
        secret = (r.json or {}).get("secret")
        self.assertTrue(isinstance(secret, str) and secret.startswith("whsec_"), r)
        return secret

    def local_app(self, serve, rx, app_id, **settings):
        """An app whose URLs are rx's /<id>/begin-call and /<id>/end-call, LOCAL_APP settings
        updated by settings; rx verifies its signatures on those paths. Returns the secret."""
        body = {"BeginCallEventProcessingUrl": rx.url("/%s/begin-call" % app_id),
                "EndCallEventProcessingUrl": rx.url("/%s/end-call" % app_id)}
        body.update(LOCAL_APP)
        body.update(settings)
        self.put_app(serve, app_id, body)
        secret = self.secret_of(serve, app_id)
        for ev in ("begin-call", "end-call"):
            rx.set_secrets([secret], path="/%s/%s" % (app_id, ev))
        return secret

    def ingest(self, serve, app_id, event, body, expect=202):
        r = serve.ingest(app_id, event, body)
        self.assertEqual(r.status, expect, "ingest %s/%s: %r" % (app_id, event, r))
        mid = (r.json or {}).get("messageId")
        self.assertRegex(mid or "", r"^msg_", r)
        return mid

    def message(self, serve, mid):
        r = serve.api("GET", "/v1/messages/" + mid)
        self.assertEqual(r.status, 200, "GET /v1/messages/%s: %r" % (mid, r))
        return r.json

    def wait_message(self, serve, mid, predicate, timeout, what):
        last = {}

        def check():
            m = self.message(serve, mid)
            last["m"] = m
            return m if predicate(m) else None

        return wait_until(check, timeout, 0.1, what=lambda: "%s for %s (last seen: %s)" % (
            what, mid, json.dumps(last.get("m"))[:1500]))

    def wait_settled(self, serve, mid, timeout):
        """Wait until the message is delivered or dead (whichever), and return it."""
        return self.wait_message(serve, mid, lambda m: m.get("status") in ("delivered", "dead"),
                                 timeout, "status 'delivered' or 'dead'")

    def wait_status(self, serve, mid, status, timeout=None):
        return self.wait_message(serve, mid, lambda m: m.get("status") == status,
                                 timeout or T(15), "status %r" % status)

    def attempts(self, m):
        a = m.get("attempts")
        self.assertIsInstance(a, list, m)
        for at in a:
            self.assertIn(at.get("errorClass"), ERROR_CLASSES | {None}, at)
        return sorted(a, key=lambda at: at.get("atMs", 0))

    def failed_attempts_metric(self, serve, klass):
        r = serve.api("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        m = re.search(r'^callhook_failed_attempts_total\{class="%s"\}\s+(\d+)' % klass,
                      r.body.decode(), re.M)
        return int(m.group(1)) if m else 0

    def run_cli(self, *args, timeout=None):
        env = {k: v for k, v in os.environ.items() if k not in harness.PROXY_VARS}
        env.update(NEUTRAL_ENV)
        return subprocess.run([BIN] + list(args), capture_output=True, text=True,
                              timeout=T(30) if timeout is None else timeout, env=env,
                              stdin=subprocess.DEVNULL)

    def serve_fails(self, folder, env=None, extra=()):
        """Runs serve on folder/callhook.db, expecting it to refuse to start: returns its
        output. A serve that starts is stopped and fails the test."""
        e = {k: v for k, v in os.environ.items() if k not in harness.PROXY_VARS}
        e.update(NEUTRAL_ENV)
        e.update(env or {})
        code, out = harness.serve_refusing(BIN, folder, e, extra)
        self.assertNotEqual(code, 0, out)
        self.assertEqual(sanitizer_lines(out), [], out)
        return out

    def data_key_file(self):
        path = os.path.join(self.tmp, "data.key")
        key = os.urandom(32)
        with open(path, "w") as f:
            f.write(base64.b64encode(key).decode() + "\n")
        os.chmod(path, 0o600)
        return path, key


# ---------------------------------------------------------------------------------------------
# 1. The SSRF guard


def call_record(prefix="sec"):
    return json.dumps({"ActiveCallId": "%s-%s" % (prefix, _secrets.token_hex(8)),
                       "CallType": 4}).encode()


class Ssrf(SecurityCase):

    def assert_refused(self, serve, rx, mid, addr_hint=None, pause=True):
        """The message is dead after exactly one attempt of class "refused", although its
        schedule had retries left, and the receiver saw nothing."""
        m = self.wait_settled(serve, mid, T(10))
        self.assertEqual(m.get("status"), "dead", m)
        if pause:
            time.sleep(T(1.5))  # a retry (schedule [1, 1]) would have come by now
        m = self.message(serve, mid)
        a = self.attempts(m)
        self.assertEqual(m.get("status"), "dead", m)
        self.assertEqual(len(a), 1, "a refused address goes dead at once, no retries: %s" % m)
        self.assertEqual(m.get("attemptCount"), 1, m)
        self.assertEqual(a[0].get("errorClass"), "refused", a)
        self.assertEqual(a[0].get("httpStatus"), 0, a)
        if addr_hint:
            self.assertIn(addr_hint, a[0].get("error") or "", a)
        self.assertEqual(rx.requests, [], "the receiver must not be contacted")

    def test_loopback_refused_without_allow_private_network(self):
        s = self.serve()
        rx = self.receiver()
        self.local_app(s, rx, "noprivate", allowPrivateNetwork=False,
                       retryScheduleSeconds=[1, 1])
        before = self.failed_attempts_metric(s, "refused")
        mid = self.ingest(s, "noprivate", "begin-call", call_record())
        self.assert_refused(s, rx, mid, addr_hint="127.0.0.1")
        self.assertEqual(self.failed_attempts_metric(s, "refused"), before + 1)
        # The hint names the key and the flag the operator has (issue 15, point 8).
        a = self.attempts(self.message(s, mid))
        self.assertIn("allowPrivateNetwork, or --allow-private", a[0].get("error") or "", a)

    def test_loopback_delivered_with_allow_private_network(self):
        s = self.serve()
        rx = self.receiver()
        self.local_app(s, rx, "private", allowPrivateNetwork=True)
        body = call_record()
        mid = self.ingest(s, "private", "begin-call", body)
        recs = rx.wait_for(1, path="/private/begin-call", timeout=T(10), status_ok=True)
        self.assertEqual(recs[0].body, body)
        self.assertTrue(recs[0].verified, recs[0].verification)
        m = self.wait_status(s, mid, "delivered")
        self.assertEqual([at.get("httpStatus") for at in self.attempts(m)], [200], m)

    def test_proxy_variables_are_not_followed(self):
        # A proxy would hide the endpoint's address from the guard: serve connects directly.
        proxy = self.receiver()
        via = proxy.url("/")
        s = self.serve(env={"http_proxy": via, "HTTP_PROXY": via, "https_proxy": via,
                            "HTTPS_PROXY": via, "all_proxy": via, "ALL_PROXY": via,
                            "no_proxy": "", "NO_PROXY": ""})
        rx = self.receiver()
        self.local_app(s, rx, "direct", allowPrivateNetwork=True)
        mid = self.ingest(s, "direct", "begin-call", call_record())
        rx.wait_for(1, path="/direct/begin-call", timeout=T(10), status_ok=True)
        self.wait_status(s, mid, "delivered")
        self.assertEqual(proxy.requests, [], "the proxy must not be contacted")

    def test_allow_cidr_lets_every_app_reach_the_range(self):
        s = self.serve("--allow-cidr", "127.0.0.0/8")
        rx = self.receiver()
        self.local_app(s, rx, "noprivate", allowPrivateNetwork=False)
        body = call_record()
        mid = self.ingest(s, "noprivate", "begin-call", body)
        recs = rx.wait_for(1, path="/noprivate/begin-call", timeout=T(10), status_ok=True)
        self.assertEqual(recs[0].body, body)
        self.assertTrue(recs[0].verified, recs[0].verification)
        self.wait_status(s, mid, "delivered")

    def test_allow_cidr_of_another_range_still_refuses_loopback(self):
        # The range is matched, not merely "some --allow-cidr given".
        s = self.serve("--allow-cidr", "10.20.0.0/16", "--allow-cidr", "127.0.0.2/32")
        rx = self.receiver()
        self.local_app(s, rx, "noprivate", allowPrivateNetwork=False,
                       retryScheduleSeconds=[1, 1])
        mid = self.ingest(s, "noprivate", "begin-call", call_record())
        self.assert_refused(s, rx, mid, addr_hint="127.0.0.1")

    def test_loopback_spellings_refused(self):
        # localhost (resolves to loopback) and other spellings of 127.0.0.1: the guard judges
        # the address the socket would use, not the text of the URL. Nothing is contacted.
        s = self.serve()
        rx = self.receiver()
        hosts = {"localhost": "localhost", "mapped": "[::ffff:127.0.0.1]",
                 "decimal": "2130706433", "short": "127.1", "hex": "0x7f000001"}
        mids = {}
        for app_id, host in hosts.items():
            url = "http://%s:%d/%s/begin-call" % (host, rx.port, app_id)
            self.put_app(s, app_id, dict(LOCAL_APP, allowPrivateNetwork=False,
                                         retryScheduleSeconds=[1, 1],
                                         BeginCallEventProcessingUrl=url))
            mids[app_id] = self.ingest(s, app_id, "begin-call", call_record())
        for mid in mids.values():
            self.wait_settled(s, mid, T(10))
        time.sleep(T(1.5))  # retries (schedule [1, 1]) would have come by now
        for app_id, mid in mids.items():
            with self.subTest(host=hosts[app_id]):
                self.assert_refused(s, rx, mid, pause=False)


    # A connection one app may use stays in libcurl's pool; another app whose settings do not
    # allow that address must not be carried over it (issue 11, point 1). Each spelling below
    # reaches the pooled connection to 127.0.0.1 without a new socket, so only a check made
    # for every request (not only for new sockets) refuses it.
    POOLED_SPELLINGS = ("127.0.0.1", "127.1", "0x7f000001", "2130706433", "127.0.0.1.")

    def pooled_refusals(self, s, rx, spellings=POOLED_SPELLINGS, trusted_host=None):
        if trusted_host is None:
            self.local_app(s, rx, "trusted", allowPrivateNetwork=True)
        else:
            self.put_app(s, "trusted", dict(
                LOCAL_APP, allowPrivateNetwork=True, BeginCallEventProcessingUrl=(
                    "http://%s:%d/trusted/begin-call" % (trusted_host, rx.port))))
        mid = self.ingest(s, "trusted", "begin-call", call_record("trusted"))
        self.wait_status(s, mid, "delivered")
        for i, host in enumerate(spellings):
            with self.subTest(host=host):
                app_id = "pooled%d" % i
                url = "http://%s:%d/%s/begin-call" % (host, rx.port, app_id)
                self.put_app(s, app_id, dict(LOCAL_APP, allowPrivateNetwork=False,
                                             retryScheduleSeconds=[1, 1],
                                             BeginCallEventProcessingUrl=url))
                mid = self.ingest(s, app_id, "begin-call", call_record(app_id))
                m = self.wait_settled(s, mid, T(10))
                self.assertEqual(m.get("status"), "dead", m)
                a = self.attempts(m)
                self.assertEqual([at.get("errorClass") for at in a], ["refused"], m)
                self.assertEqual(rx.requests_for(path="/%s/begin-call" % app_id), [],
                                 "%s must not reach the receiver over a pooled connection" % url)
                # The trusted app keeps its connection busy between the tries.
                mid = self.ingest(s, "trusted", "begin-call", call_record("trusted"))
                self.wait_status(s, mid, "delivered")
        self.assertEqual({r.route for r in rx.requests}, {"/trusted/begin-call"})

    def test_pooled_connection_is_judged_for_each_app(self):
        s = self.serve()
        self.pooled_refusals(s, self.receiver())

    def test_pooled_connection_to_a_name_is_judged_for_each_app(self):
        # A name is not judged from the URL: the second app's request would go out on the
        # trusted app's connection to localhost unless the check runs before each request.
        s = self.serve()
        self.pooled_refusals(s, self.receiver(), spellings=("localhost",),
                             trusted_host="localhost")

    def test_pooled_connection_is_judged_with_allow_cidr(self):
        # The operator's ranges are matched on reused connections too: 127.0.0.2/32 does not
        # cover the pooled connection to 127.0.0.1.
        s = self.serve("--allow-cidr", "127.0.0.2/32")
        self.pooled_refusals(s, self.receiver())


# ---------------------------------------------------------------------------------------------
# 2. URL and TLS settings checked at save time


class UrlValidation(SecurityCase):

    def assert_rejected(self, s, body, field, why=None):
        app_id = "bad-" + _secrets.token_hex(4)
        r = s.api("PUT", "/v1/voice-apps/" + app_id, body)
        self.assertEqual(r.status, 400, "%s: %r" % (json.dumps(body), r))
        self.assertEqual(r.error_code, "invalid_settings", r)
        self.assertIn(field, r.error_message or "", r)
        if why:
            self.assertRegex(r.error_message or "", why, r)
        self.assertEqual(s.api("GET", "/v1/voice-apps/" + app_id).status, 404,
                         "a rejected PUT must not create the app")

    def test_rejected_urls(self):
        s = self.serve()
        port = free_port()  # never contacted: nothing is ingested
        cases = [
            ({"BeginCallEventProcessingUrl": "http://127.0.0.1:%d/b" % port},
             "BeginCallEventProcessingUrl", r"https|allowInsecureHttp"),
            ({"EndCallEventProcessingUrl": "http://127.0.0.1:%d/e" % port},
             "EndCallEventProcessingUrl", r"https|allowInsecureHttp"),
            ({"BeginCallEventProcessingUrl": "http://127.0.0.1:%d/b" % port,
              "allowInsecureHttp": False}, "BeginCallEventProcessingUrl", None),
            ({"BeginCallEventProcessingUrl": "https://user:pass@127.0.0.1:%d/b" % port},
             "BeginCallEventProcessingUrl", r"user|password|credential"),
            ({"EndCallEventProcessingUrl": "http://user:pass@127.0.0.1:%d/e" % port,
              "allowInsecureHttp": True}, "EndCallEventProcessingUrl",
             r"user|password|credential"),
            ({"BeginCallEventProcessingUrl": "https://user@127.0.0.1:%d/b" % port},
             "BeginCallEventProcessingUrl", None),
            ({"BeginCallEventProcessingUrl": "https:///b"}, "BeginCallEventProcessingUrl",
             r"host"),
            ({"BeginCallEventProcessingUrl": "https://"}, "BeginCallEventProcessingUrl",
             r"host"),
            ({"BeginCallEventProcessingUrl": "http://?x=1", "allowInsecureHttp": True},
             "BeginCallEventProcessingUrl", r"host"),
            ({"BeginCallEventProcessingUrl": "ftp://127.0.0.1:%d/b" % port},
             "BeginCallEventProcessingUrl", None),
            ({"BeginCallEventProcessingUrl": "file:///etc/passwd"},
             "BeginCallEventProcessingUrl", None),
        ]
        for body, field, why in cases:
            with self.subTest(body=body):
                self.assert_rejected(s, body, field, why)
        # The same http:// URL is fine once allowInsecureHttp is set.
        r = s.api("PUT", "/v1/voice-apps/ok", {
            "BeginCallEventProcessingUrl": "http://127.0.0.1:%d/b" % port,
            "allowInsecureHttp": True})
        self.assertEqual(r.status, 201, r)

    def test_rejected_tls_settings(self):
        s = self.serve()
        url = "https://127.0.0.1:%d/b" % free_port()
        pem = os.path.join(self.tmp, "exists.pem")
        with open(pem, "w") as f:
            f.write("not really a certificate\n")
        cases = [
            ({"tls": {"caFile": "relative/ca.pem"}}, "tls.caFile"),
            ({"tls": {"clientCertFile": pem}}, "clientKeyFile"),  # cert without key
            ({"tls": {"clientKeyFile": pem}}, "clientCertFile"),  # key without cert
            ({"tls": {"caFile": pem, "crlFile": pem}}, "tls.crlFile"),
            ({"tls": "yes"}, "tls"),
        ]
        for extra, field in cases:
            with self.subTest(tls=extra):
                self.assert_rejected(s, dict({"BeginCallEventProcessingUrl": url}, **extra),
                                     field)
        # Assumption: a file that cannot be read is refused at save time (app.c has
        # app_config_check_files for that), naming the field.
        with self.subTest(tls="missing file"):
            self.assert_rejected(s, {"BeginCallEventProcessingUrl": url,
                                     "tls": {"caFile": os.path.join(self.tmp, "nope.pem")}},
                                 "tls.caFile")


# ---------------------------------------------------------------------------------------------
# 3. TLS and mTLS towards the endpoint, with `callhook receive` as the receiving end


class Mtls(SecurityCase):

    def setUp(self):
        super().setUp()
        self.pki = make_pki(self.tmp)

    def https_app(self, s, app_id, receive_proc=None, tls=None, **settings):
        """PUT an app whose begin-call URL is https://127.0.0.1:PORT/<id>/begin-call."""
        port = receive_proc.port if receive_proc else free_port()
        body = {"BeginCallEventProcessingUrl":
                "https://%s:%d/%s/begin-call" % (HOST, port, app_id),
                "allowPrivateNetwork": True, "retryScheduleSeconds": [1],
                "timeoutMs": 10000, "connectTimeoutMs": 8000}
        if tls is not None:
            body["tls"] = tls
        body.update(settings)
        self.put_app(s, app_id, body)
        return body

    def start_receive(self, s, app_id, cert="server", client_ca="ca", probe_ca="ca",
                      name="receive", tls=None):
        """Make the app (to learn its secret), start `callhook receive` with that secret on a
        free port, then point the app at it. Returns the ReceiveProc."""
        self.https_app(s, app_id, tls=tls)
        secret = self.secret_of(s, app_id)
        p = ReceiveProc(self.tmp, secret, self.pki[cert],
                        client_ca=self.pki[client_ca] if client_ca else None,
                        probe_ca=self.pki[probe_ca],
                        probe_cert=self.pki["client"] if client_ca else None, name=name)
        self.procs.append(p)
        p.start()
        self.https_app(s, app_id, receive_proc=p, tls=tls)
        self.assertEqual(self.secret_of(s, app_id), secret,
                         "a PUT that replaces the settings keeps the signing secret")
        return p

    def full_tls(self):
        return {"caFile": self.pki["ca"] + ".pem",
                "clientCertFile": self.pki["client"] + ".pem",
                "clientKeyFile": self.pki["client"] + ".key"}

    def test_mtls_delivery(self):
        s = self.serve()
        p = self.start_receive(s, "mtls", tls=self.full_tls())
        # docs/SECURITY.md: the API returns the paths, never the key material.
        r = s.api("GET", "/v1/voice-apps/mtls")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json.get("tls"), self.full_tls(), r)
        self.assertNotIn(b"-----BEGIN", r.body, r)
        body = call_record("mtls")
        mid = self.ingest(s, "mtls", "begin-call", body)
        m = self.wait_status(s, mid, "delivered", T(15))
        a = self.attempts(m)
        self.assertEqual(len(a), 1, m)
        self.assertEqual(a[0].get("httpStatus"), 202, "callhook receive answers 202: %s" % a)
        events = wait_until(lambda: [e for e in p.events() if e.get("webhookId") == mid],
                            T(10), what="the jsonl line of %s" % mid)
        self.assertEqual(len(events), 1, events)
        self.assertEqual(events[0].get("event"), "begin-call", events)
        self.assertEqual(events[0].get("record"), json.loads(body), events)

    def test_without_client_certificate_not_delivered(self):
        s = self.serve()
        p = self.start_receive(s, "nocert", tls={"caFile": self.pki["ca"] + ".pem"})
        mid = self.ingest(s, "nocert", "begin-call", call_record("nocert"))
        m = self.wait_settled(s, mid, T(15))
        self.assertEqual(m.get("status"), "dead", m)  # schedule [1]: two failed attempts
        a = self.attempts(m)
        self.assertGreaterEqual(len(a), 1, m)
        for at in a:
            self.assertEqual(at.get("httpStatus"), 0, a)
            # Assumption (brief): the receiver closes without an answer, which libcurl may
            # see as a TLS error, an empty reply or a failed connection.
            self.assertIn(at.get("errorClass"), {"tls", "other", "connect"}, a)
        self.assertIsNone(m.get("deliveredAt") or None, m)
        self.assertEqual(p.events(), [], "nothing may reach the handler")

    def test_server_certificate_of_another_ca_is_a_tls_failure(self):
        s = self.serve()
        p = self.start_receive(s, "untrusted", cert="other-server", probe_ca="other-ca",
                               tls=self.full_tls())
        mid = self.ingest(s, "untrusted", "begin-call", call_record("untrusted"))
        m = self.wait_settled(s, mid, T(15))
        self.assertEqual(m.get("status"), "dead", m)
        a = self.attempts(m)
        self.assertGreaterEqual(len(a), 1, m)
        for at in a:
            self.assertEqual(at.get("errorClass"), "tls", a)
            self.assertEqual(at.get("httpStatus"), 0, a)
        self.assertEqual(p.events(), [])
        self.assertGreaterEqual(self.failed_attempts_metric(s, "tls"), len(a))

    def test_system_trust_does_not_cover_a_private_ca(self):
        # No caFile: the system's CAs, which do not know the test CA.
        s = self.serve()
        p = self.start_receive(s, "noca", tls={"clientCertFile": self.pki["client"] + ".pem",
                                               "clientKeyFile": self.pki["client"] + ".key"})
        mid = self.ingest(s, "noca", "begin-call", call_record("noca"))
        m = self.wait_settled(s, mid, T(15))
        self.assertEqual(m.get("status"), "dead", m)
        self.assertEqual({at.get("errorClass") for at in self.attempts(m)}, {"tls"}, m)
        self.assertEqual(p.events(), [])


class TlsRecorder:
    """An HTTPS/1.1 endpoint on 127.0.0.1 with keep-alive that asks for a client certificate
    (optional, from the test CA) and records, for every request, the certificate's CN and the
    request's headers. hold_s delays the TLS handshake of each new connection."""

    def __init__(self, pki, hold_s=0.0):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki["server"] + ".pem", pki["server"] + ".key")
        self.ctx.load_verify_locations(pki["ca"] + ".pem")
        self.ctx.verify_mode = ssl.CERT_OPTIONAL
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.requests = []  # (path, client CN or None, {lower-case header: value})
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path):
        return "https://%s:%d%s" % (HOST, self.port, path)

    def stop(self):
        self.stopped = True
        self.sock.close()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(T(20))
            if self.hold_s:
                time.sleep(self.hold_s)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            cert = tls.getpeercert() or {}
            cn = None
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        cn = v
            f = tls.makefile("rb")
            while True:
                line = f.readline(65536)
                if not line:
                    return
                path = line.decode("latin-1").split(" ")[1]
                headers = {}
                while True:
                    h = f.readline(65536).decode("latin-1")
                    if h in ("\r\n", "\n", ""):
                        break
                    k, _, v = h.partition(":")
                    headers[k.strip().lower()] = v.strip()
                f.read(int(headers.get("content-length", "0")))
                with self.lock:
                    self.requests.append((path, cn, headers))
                tls.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        except (OSError, ValueError, IndexError):
            return
        finally:
            conn.close()

    def recorded(self):
        with self.lock:
            return list(self.requests)


class PooledTls(SecurityCase):
    """libcurl's connection pool and a Voice App's TLS settings and headers (issue 11, points 1
    and 9)."""

    def setUp(self):
        super().setUp()
        self.pki = make_pki(self.tmp)
        self.endpoint = None

    def tearDown(self):
        if self.endpoint is not None:
            self.endpoint.stop()
        super().tearDown()

    def tls_app(self, s, app_id, client, **settings):
        tls = {"caFile": self.pki["ca"] + ".pem"}
        if client:
            tls.update({"clientCertFile": self.pki[client] + ".pem",
                        "clientKeyFile": self.pki[client] + ".key"})
        body = {"BeginCallEventProcessingUrl": self.endpoint.url("/%s/begin-call" % app_id),
                "allowPrivateNetwork": True, "retryScheduleSeconds": [1], "timeoutMs": 8000,
                "connectTimeoutMs": 5000, "tls": tls}
        body.update(settings)
        self.put_app(s, app_id, body)

    def test_each_request_carries_its_own_apps_client_certificate(self):
        self.endpoint = TlsRecorder(self.pki)
        s = self.serve()
        self.tls_app(s, "certone", "client")
        self.tls_app(s, "certtwo", "client2")
        self.tls_app(s, "nocert", None)
        mids = []
        for i in range(4):
            for app_id in ("certone", "certtwo", "nocert"):
                mids.append(self.ingest(s, app_id, "begin-call", call_record(app_id)))
                self.wait_status(s, mids[-1], "delivered")
        want = {"certone": "callhook sender", "certtwo": "callhook sender two", "nocert": None}
        got = self.endpoint.recorded()
        self.assertEqual(len(got), 12, got)
        for path, cn, _ in got:
            app_id = path.split("/")[1]
            self.assertEqual(cn, want[app_id], "%s arrived with the certificate of %r" % (
                path, cn))

    def test_headers_after_a_change_while_the_handshake_is_held(self):
        # Two of app A's attempts wait in a held TLS handshake while A is changed and app B,
        # with a distinctive header, sends an event: A's endpoint sees A's headers only (the
        # old or the new ones), and serve, built with ASan, reads no freed memory.
        self.endpoint = TlsRecorder(self.pki, hold_s=1.0)
        s = self.serve()
        rx = self.receiver()
        self.tls_app(s, "appa", "client", headers={"X-App-A": "old"}, maxInFlight=2)
        mids = [self.ingest(s, "appa", "begin-call", call_record("appa")) for _ in range(3)]
        time.sleep(0.3)  # both connections are in their handshake now
        self.tls_app(s, "appa", "client", headers={"X-App-A": "new"}, maxInFlight=2)
        self.local_app(s, rx, "appb", headers={"X-Secret-B": "b-token-" + "b" * 900})
        mid_b = self.ingest(s, "appb", "begin-call", call_record("appb"))
        self.wait_status(s, mid_b, "delivered")
        for mid in mids:
            self.wait_status(s, mid, "delivered", T(20))
        got = self.endpoint.recorded()
        self.assertEqual(len(got), 3, got)
        for path, _, headers in got:
            self.assertIn(headers.get("x-app-a"), ("old", "new"), headers)
            self.assertNotIn("x-secret-b", headers, "app B's header reached app A: %s" % headers)
            for k, v in headers.items():
                self.assertNotIn("b-token", v, "app B's header value reached app A: %s" % k)
        # The first two started before the change, the third after it was seen.
        self.assertEqual(sorted(h.get("x-app-a") for _, _, h in got), ["new", "old", "old"], got)


class FilesAndKeys(SecurityCase):
    """Files that hold secrets or personal data are the owner's alone from the moment they
    exist, and key ids say nothing of the keys (issue 12, points 3 and 6)."""

    def folder(self, name):
        d = os.path.join(self.tmp, name)
        os.makedirs(d, mode=0o700)
        return d

    def test_key_ids_are_random_and_list_no_part_of_a_key(self):
        s = self.serve()
        r = s.api("GET", "/v1/voice-apps")
        self.assertEqual(r.status, 200, r)
        s.stop()
        out = self.run_cli("key", "list", "--db", s.db_url)
        self.assertEqual(out.returncode, 0, out.stderr)
        ids = re.findall(r"^(\S+)\s+admin", out.stdout, re.M)
        self.assertEqual(len(ids), 1, out.stdout)
        self.assertRegex(ids[0], r"^key_[0-9a-f]{12}$")
        for n in range(4, len(s.admin_key) + 1):
            for i in range(len(s.admin_key) - n + 1):
                self.assertNotIn(s.admin_key[i:i + n], out.stdout)
        # Nor in the database, where the id sits next to the key's hash.
        con = sqlite3.connect(s.db_path)
        rows = con.execute("SELECT key_id FROM api_keys").fetchall()
        con.close()
        self.assertEqual([r[0] for r in rows], ids)
        self.assertNotIn(s.admin_key[:4], ids[0])

    def test_short_bootstrap_admin_key_is_refused(self):
        out = self.serve_fails(self.folder("short"), env={"CALLHOOK_ADMIN_KEY": "a" * 31})
        self.assertIn("CALLHOOK_ADMIN_KEY", out)
        self.assertIn("32", out)
        self.assertNotIn("a" * 31, out, "the key itself must not be printed")

    def test_new_database_and_admin_key_are_owner_only(self):
        d = self.folder("fresh")
        e = {k: v for k, v in os.environ.items() if k not in harness.PROXY_VARS}
        e.update(NEUTRAL_ENV)
        e["CALLHOOK_ADMIN_KEY"] = ""
        old = os.umask(0o022)  # what most shells have: 0644 for a file made without care
        try:
            p = subprocess.Popen([BIN, "serve", "--listen", "%s:%d" % (HOST, free_port()),
                                  "--db", "sqlite:" + os.path.join(d, "callhook.db")],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=e,
                                 stdin=subprocess.DEVNULL, text=True)
        finally:
            os.umask(old)
        try:
            wait_until(lambda: os.path.exists(os.path.join(d, "admin.key")), T(20),
                       what="admin.key")
            for name in ("callhook.db", "admin.key"):
                mode = os.stat(os.path.join(d, name)).st_mode & 0o777
                self.assertEqual(mode, 0o600, "%s has mode %o" % (name, mode))
        finally:
            p.terminate()
            out, _ = p.communicate(timeout=T(20))
        self.assertEqual(p.returncode, 0, out)

    def test_readable_database_is_refused(self):
        d = self.folder("wide")
        path = os.path.join(d, "callhook.db")
        open(path, "w").close()
        os.chmod(path, 0o644)
        out = self.serve_fails(d)
        self.assertIn("chmod 600", out)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o644, "nothing was changed")

    def test_database_through_a_symbolic_link_is_refused(self):
        d = self.folder("link")
        target = os.path.join(self.tmp, "elsewhere.db")
        open(target, "w").close()
        os.chmod(target, 0o600)
        os.symlink(target, os.path.join(d, "callhook.db"))
        out = self.serve_fails(d)
        self.assertIn("symbolic link", out)
        self.assertEqual(os.path.getsize(target), 0, "nothing was written through the link")

    def test_existing_admin_key_file_is_not_written_into(self):
        d = self.folder("keyfile")
        path = os.path.join(d, "admin.key")
        with open(path, "w") as f:
            f.write("left here\n")
        os.chmod(path, 0o644)
        out = self.serve_fails(d, env={"CALLHOOK_ADMIN_KEY": ""})
        self.assertIn("admin.key", out)
        with open(path) as f:
            self.assertEqual(f.read(), "left here\n", "the file must not get a key")

    def test_sealed_database_needs_its_data_key(self):
        # Issue 12 point 13: a database sealed with a data key records so (with a check value
        # of the key); serve refuses it without the key and with another key, with a message
        # that says what to do, instead of failing quietly later.
        key_path, _ = self.data_key_file()
        s = self.serve("--data-key-file", key_path)
        rx = self.receiver()
        secret = self.local_app(s, rx, "sealed")
        self.assertEqual(s.stop(), 0)
        folder = os.path.dirname(s.db_path)
        out = self.serve_fails(folder)
        self.assertIn("this database is sealed: give its data key with --data-key-file or "
                      "CALLHOOK_DATA_KEY", out)
        wrong = os.path.join(self.tmp, "wrong.key")
        with open(wrong, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        os.chmod(wrong, 0o600)
        out = self.serve_fails(folder, extra=["--data-key-file", wrong])
        self.assertIn("the data key does not match this database's", out)
        out = self.serve_fails(folder, env={"CALLHOOK_DATA_KEY": base64.b64encode(
            os.urandom(32)).decode()})
        self.assertIn("the data key does not match this database's", out)
        # With its key it starts and reads what it sealed.
        s.start()
        self.assertEqual(self.secret_of(s, "sealed"), secret)

    def test_readable_data_key_file_is_refused(self):
        d = self.folder("datakey")
        path, _ = self.data_key_file()
        os.chmod(path, 0o640)
        out = self.serve_fails(d, extra=["--data-key-file", path])
        self.assertIn("chmod 600", out)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class SlowClients(SecurityCase):
    """Request bodies are read only for a valid key (issue 12, point 1)."""

    SOCKETS = 500

    def test_slow_unauthenticated_uploads_hold_no_memory(self):
        s = self.serve()
        rx = self.receiver()
        self.local_app(s, rx, "busy")
        self.ingest(s, "busy", "begin-call", call_record("warm"))
        time.sleep(0.5)
        before = rss_kib(s.proc.pid)
        socks, answered = [], 0
        chunk = b"x" * 8192
        try:
            for i in range(self.SOCKETS):
                c = socket.create_connection((HOST, s.port), timeout=T(5))
                auth = b"" if i % 2 else b"Authorization: Bearer chk_" + b"0" * 64 + b"\r\n"
                c.sendall(b"POST /v1/voice-apps/busy/begin-call HTTP/1.1\r\nHost: x\r\n" + auth +
                          b"Content-Type: application/json\r\nContent-Length: 262144\r\n\r\n")
                socks.append(c)
            # Each sends a little of its body, slowly, as a client that means to hold memory.
            for _ in range(8):
                for c in socks:
                    try:
                        c.sendall(chunk)
                    except OSError:
                        pass
                time.sleep(0.2)
            during = rss_kib(s.proc.pid)
            # Authenticated ingest goes on meanwhile.
            mids = [self.ingest(s, "busy", "begin-call", call_record("ok%d" % i))
                    for i in range(5)]
            for c in socks:
                c.settimeout(T(5))
                try:
                    head = c.recv(200)
                except OSError:
                    head = b""
                if head.startswith(b"HTTP/1.1 401"):
                    answered += 1
        finally:
            for c in socks:
                c.close()
        for mid in mids:
            self.wait_status(s, mid, "delivered")
        # The bound: what libmicrohttpd keeps per connection (a 16 KiB pool) and the sanitizer
        # build's overhead, 32 KiB each: 16 MiB for 500. Before, each also held the 64 KiB of
        # body it had sent (up to 256 KiB): 32 MiB more, 88 KiB each in all.
        grew_kib = during - before
        self.assertEqual(answered, self.SOCKETS, "every one is answered 401 from its headers")
        self.assertLess(grew_kib, 32 * self.SOCKETS, "serve's RSS grew by %d KiB for %d "
                        "unauthenticated uploads" % (grew_kib, self.SOCKETS))


# ---------------------------------------------------------------------------------------------
# 4. Personal data: not in the log, and with a data key not in the database


class PersonalData(SecurityCase):

    def setUp(self):
        super().setUp()
        self.files = payload_files()
        self.assertGreaterEqual(len(self.files), 2, "no payloads in %s" % PAYLOADS)
        found = set()
        for _, _, body in self.files:
            personal_data(json.loads(body), found)
        self.pii = sorted(found)
        self.assertTrue(self.pii, "the payloads hold no personal data to look for")

    def deliver_all(self, s, rx, app_id):
        """Every payload through serve to rx, each failing once first (so the retry and error
        paths run too); waits until all are delivered. Returns {messageId: body}."""
        rx.fail_first(1, Response.error(500, b"try again"), per_message=True)
        secret = self.local_app(s, rx, app_id)
        sent = {}
        for event, name, body in self.files:
            sent[self.ingest(s, app_id, event, body)] = body
        # Some error paths of the API on the way, with personal data in the bodies.
        s.ingest(app_id, "begin-call", self.files[0][2][:-5])  # invalid JSON
        s.ingest("no-such-app", "end-call", self.files[-1][2])  # unknown app
        for mid in sent:
            self.wait_status(s, mid, "delivered", T(20))
        for mid, body in sent.items():
            ok = [r for r in rx.requests_for(webhook_id=mid) if (r.response or "") == "200"]
            self.assertEqual(len(ok), 1, rx.requests_for(webhook_id=mid))
            self.assertEqual(ok[0].body, body)
            for r in rx.requests_for(webhook_id=mid):
                self.assertTrue(r.verified, "every delivery must verify: %r" % r)
        return sent, secret

    def secret_needles(self, secret):
        b64 = secret[len("whsec_"):]
        return {secret.encode(), b64.encode(), b64.rstrip("=").encode(), decode_secret(secret)}

    def check_folder(self, s, secrets, key, when):
        """No personal data, signing secret, data key or API key in the database folder
        (serve's log included) of a serve running with a data key."""
        files = read_folder(os.path.dirname(s.db_path))
        self.assertIn("callhook.db", files)
        log = files.pop("serve.log", b"")
        needles = set()
        for text in self.pii:
            needles |= spellings(text)
        self.assertEqual(occurrences({"serve.log": log}, needles), [],
                         "personal data in serve's log (%s)" % when)
        self.assertEqual(occurrences(files, needles), [],
                         "personal data in the database folder with a data key (%s): %s" % (
                             when, sorted(files)))
        for secret in secrets:
            self.assertEqual(occurrences(files, self.secret_needles(secret)), [],
                             "a signing secret is in the database in clear with a data key "
                             "(%s)" % when)
            self.assertEqual(occurrences({"serve.log": log}, self.secret_needles(secret)), [],
                             "a signing secret is in serve's log (%s)" % when)
        everything = dict(files, log=log)
        self.assertEqual(occurrences(everything, {key, base64.b64encode(key)}), [],
                         "the data key itself must not be stored or logged (%s)" % when)
        self.assertEqual(occurrences(everything, {s.admin_key.encode()}), [],
                         "only hashes of API keys are stored, and none is logged (%s)" % when)
        return files

    def test_log_and_encrypted_database_hold_no_personal_data(self):
        key_path, key = self.data_key_file()
        s = self.serve("--data-key-file", key_path, env={"CALLHOOK_LOG": "debug"})
        rx = self.receiver()
        sent, old = self.deliver_all(s, rx, "enc")
        # The secret is still readable through the API with encryption on; a rotation seals the
        # new one and the previous one alike.
        self.assertEqual(self.secret_of(s, "enc"), old)
        r = s.api("POST", "/v1/voice-apps/enc/secret/rotate", {"graceSeconds": 3600})
        self.assertEqual(r.status, 200, r)
        new = (r.json or {}).get("secret")
        self.assertTrue(isinstance(new, str) and new.startswith("whsec_") and new != old, r)
        self.assertEqual(r.json.get("previous"), old, r)
        # A Voice App's header values (receivers' tokens) are sealed like secrets.
        token = "Bearer hdr-" + _secrets.token_hex(12)
        self.local_app(s, rx, "hdr", headers={"Authorization": token})
        # While serve runs (the WAL is there), then after a clean stop.
        for when in ("serve running", "serve stopped"):
            if when == "serve stopped":
                self.assertEqual(s.stop(), 0)
            files = self.check_folder(s, [old, new], key, when)
            self.assertEqual(occurrences(files, {token.encode(), token[7:].encode()}), [],
                             "a header value is in the database in clear with a data key "
                             "(%s)" % when)

        # Same key again: the sealed secrets open, and a new delivery carries both signatures.
        s.start()
        r = s.api("GET", "/v1/voice-apps/enc/secret")
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json.get("secret"), r.json.get("previous")), (new, old), r)
        for ev in ("begin-call", "end-call"):
            rx.set_secrets([old, new], path="/enc/" + ev)
        body = json.dumps({"ActiveCallId": "after-restart-" + _secrets.token_hex(4)}).encode()
        mid = self.ingest(s, "enc", "begin-call", body)
        self.wait_status(s, mid, "delivered", T(15))
        ok = [r for r in rx.requests_for(webhook_id=mid) if r.response == "200"]
        self.assertEqual(len(ok), 1, rx.requests_for(webhook_id=mid))
        self.assertEqual(ok[0].body, body)
        self.assertTrue(ok[0].verified, ok[0].verification)
        self.assertEqual(ok[0].verification.matched, [0, 1],
                         "during the grace period both secrets sign")

    def since_last_start(self, s):
        """serve's log since its latest start."""
        text = s.logs()
        return text[text.rfind("start #%d:" % s.starts):]

    def replayed_verified(self, s, rx, mid, body):
        """A replay of mid reaches rx with the same record, signed with the app's secret."""
        before = len([r for r in rx.requests_for(webhook_id=mid) if r.response == "200"])
        r = s.api("POST", "/v1/messages/%s/replay" % mid)
        self.assertIn(r.status, (200, 202), r)
        ok = rx.wait_for(before + 1, webhook_id=mid, timeout=T(15), status_ok=True)
        self.assertEqual(ok[-1].body, body)
        self.assertTrue(ok[-1].verified, ok[-1].verification)

    def store_cmd(self, *args):
        p = self.run_cli("store", *args)
        self.assertEqual(sanitizer_lines(p.stdout + p.stderr), [], p)
        return p

    def test_store_seal_then_rekey(self):
        # Issue 12 point 8: a database written before its data key was set is read in its old
        # forms (with a warning naming the command) until 'callhook store seal' seals every
        # value in place; 'callhook store rekey' then moves it to a new key.
        s = self.serve(env={"CALLHOOK_LOG": "debug"})
        rx = self.receiver()
        sent, secret = self.deliver_all(s, rx, "old")
        token = "Bearer hdr-" + _secrets.token_hex(12)
        self.local_app(s, rx, "hdr", headers={"Authorization": token})
        self.assertEqual(s.stop(), 0)
        key_path, key = self.data_key_file()
        s.extra_args = ["--data-key-file", key_path]
        s.start()
        self.assertIn("'callhook store seal --db URI'", self.since_last_start(s))
        self.assertEqual(self.secret_of(s, "old"), secret)
        mid, body = next(iter(sent.items()))
        self.replayed_verified(s, rx, mid, body)
        # Not while serve has the database.
        p = self.store_cmd("seal", "--db", s.db_url, "--data-key-file", key_path)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("callhook serve is running on '%s': stop it first" % s.db_path, p.stderr)
        self.assertEqual(s.stop(), 0)

        p = self.store_cmd("seal", "--db", s.db_url, "--data-key-file", key_path)
        self.assertEqual(p.returncode, 0, p)
        # Both apps' secrets, both apps' settings, every record.
        self.assertIn("sealed in place: 2 signing secrets, 2 Voice App settings, %d call "
                      "records (0 values were already done)" % len(sent), p.stdout)
        again = self.store_cmd("seal", "--db", s.db_url, "--data-key-file", key_path)
        self.assertEqual(again.returncode, 0, again)
        self.assertIn("sealed in place: 0 signing secrets, 0 Voice App settings, 0 call records "
                      "(%d values were already done)" % (len(sent) + 4), again.stdout)
        files = self.check_folder(s, [secret], key, "after store seal")
        self.assertEqual(occurrences(files, {token.encode(), token[7:].encode()}), [],
                         "a header value is in the database in clear after store seal")

        s.start()
        self.assertNotIn("callhook store seal", self.since_last_start(s))
        self.assertEqual(self.secret_of(s, "old"), secret)
        self.replayed_verified(s, rx, mid, body)
        self.assertEqual(s.stop(), 0)

        # A new key: the old one is refused afterwards, the new one reads everything and
        # deliveries are signed with the same secret.
        new_path = os.path.join(self.tmp, "new.key")
        with open(new_path, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        os.chmod(new_path, 0o600)
        p = self.store_cmd("rekey", "--db", s.db_url, "--new-key-file", new_path,
                           "--data-key-file", key_path)
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("re-sealed under the new data key: 2 signing secrets, 2 Voice App "
                      "settings, %d call records" % len(sent), p.stdout)
        out = self.serve_fails(os.path.dirname(s.db_path), extra=["--data-key-file", key_path])
        self.assertIn("the data key does not match this database's", out)
        s.extra_args = ["--data-key-file", new_path]
        s.start()
        self.assertEqual(self.secret_of(s, "old"), secret)
        for m, b in sent.items():
            self.replayed_verified(s, rx, m, b)
        fresh = json.dumps({"ActiveCallId": "after-rekey-" + _secrets.token_hex(4)}).encode()
        new_mid = self.ingest(s, "old", "begin-call", fresh)
        self.wait_status(s, new_mid, "delivered", T(15))
        self.assertTrue(rx.requests_for(webhook_id=new_mid)[-1].verified)
        self.assertEqual(s.stop(), 0)

        # A plaintext secret written behind serve's back is refused now, not read.
        con = sqlite3.connect(s.db_path)
        con.execute("UPDATE voice_apps SET secret = ? WHERE id = 'old'", (secret,))
        con.commit()
        con.close()
        s.start()
        r = s.api("GET", "/v1/voice-apps/old/secret")
        self.assertNotEqual(r.status, 200, r)
        self.assertNotIn(secret, r.body.decode("utf-8", "replace"))

    def test_database_folder_is_created_owner_only(self):
        # docs/SECURITY.md: the database "is created 0700 in its folder" (the folders callhook
        # makes on the way to the file are 0700).
        # serve makes the database (purge and key no longer do: they say where they looked).
        db = os.path.join(self.tmp, "made-by-callhook", "sub", "callhook.db")
        e = {k: v for k, v in os.environ.items() if k not in harness.PROXY_VARS}
        e.update(NEUTRAL_ENV)
        e["CALLHOOK_ADMIN_KEY"] = "adm" + "0" * 40
        p = subprocess.Popen([BIN, "serve", "--listen", "%s:%d" % (HOST, free_port()),
                              "--db", "sqlite:" + db], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=e, stdin=subprocess.DEVNULL, text=True)
        try:
            wait_until(lambda: os.path.exists(db), T(20), what="the database")
        finally:
            p.terminate()
            out, _ = p.communicate(timeout=T(20))
        self.assertEqual(p.returncode, 0, out)
        p = self.run_cli("purge", "--db", "sqlite:" + db + ".missing")
        self.assertEqual(p.returncode, 1, p)
        self.assertFalse(os.path.exists(db + ".missing"))
        for d in (os.path.dirname(os.path.dirname(db)), os.path.dirname(db)):
            self.assertEqual(os.stat(d).st_mode & 0o777, 0o700, d)

    def test_without_data_key_the_database_holds_personal_data(self):
        # The control of the test above: the same search finds what is there in clear, so a
        # "nothing found" there means something.
        s = self.serve(env={"CALLHOOK_LOG": "debug"})
        rx = self.receiver()
        sent, secret = self.deliver_all(s, rx, "plain")
        self.assertEqual(s.stop(), 0)
        files = read_folder(os.path.dirname(s.db_path))
        log = files.pop("serve.log", b"")
        needles = set()
        for text in self.pii:
            needles |= spellings(text)
        self.assertEqual(occurrences({"serve.log": log}, needles), [],
                         "personal data in serve's log")
        db = {k: v for k, v in files.items() if k.startswith("callhook.db")}
        missing = [t for t in self.pii if not occurrences(db, {t.encode("utf-8")})]
        self.assertEqual(missing, [], "without a data key every record is stored as sent, so "
                         "each of these should be found in %s" % sorted(db))
        self.assertTrue(occurrences(db, {secret.encode()}) or
                        occurrences(db, {secret[6:].encode()}),
                        "without a data key the secret is stored in clear (control)")


# ---------------------------------------------------------------------------------------------
# 5. Retention


def marked_record(tag):
    """A record with personal data made unique to this test run, so its bytes can be looked
    for in the database files."""
    digits = "".join(str(b % 10) for b in os.urandom(9))
    return json.dumps({"ActiveCallId": "ret-%s-%s" % (tag, _secrets.token_hex(6)),
                       "CallType": 4, "CallerId": "+1555%s" % digits,
                       "CallerDisplayName": "Retention %s %s" % (tag, _secrets.token_hex(5)),
                       "Agent": {"Email": "agent.%s.%s@example.com" % (
                           tag, _secrets.token_hex(4))}}).encode()


def record_markers(body):
    return sorted(personal_data(json.loads(body)))


class Retention(SecurityCase):

    PURGE_RE = re.compile(r"removed (\d+) delivered records and (\d+) attempts")

    def purge(self, s, payload_s, attempt_s, key_path=None):
        args = ["purge", "--db", s.db_url, "--payload-retention-s", str(payload_s),
                "--attempt-retention-s", str(attempt_s)]
        if key_path:
            args += ["--data-key-file", key_path]
        p = self.run_cli(*args)
        self.assertEqual(p.returncode, 0, "callhook %s: %s %s" % (" ".join(args), p.stdout,
                                                                  p.stderr))
        m = self.PURGE_RE.search(p.stdout)
        self.assertIsNotNone(m, "callhook purge said: %r %r" % (p.stdout, p.stderr))
        return int(m.group(1)), int(m.group(2))

    def sql(self, s, *statements, secure_delete=True):
        """Run statements on serve's (stopped) database; returns the last one's rows."""
        conn = sqlite3.connect(s.db_path, timeout=10)
        try:
            if secure_delete:
                # This test's own edits must not leave old bytes behind either.
                conn.execute("PRAGMA secure_delete=ON")
            rows = None
            for st in statements:
                rows = conn.execute(st).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    def run_retention(self, encrypted):
        key_path = None
        args = []
        if encrypted:
            key_path, _ = self.data_key_file()
            args = ["--data-key-file", key_path]
        s = self.serve(*args)
        rx = self.receiver()
        self.local_app(s, rx, "keep")
        self.local_app(s, rx, "dies", retryScheduleSeconds=[1])
        rx.set_default(Response.error(500, b"down"), path="/dies/begin-call")

        delivered = {}
        for i in range(3):
            body = marked_record("ok%d" % i)
            delivered[self.ingest(s, "keep", "begin-call", body)] = body
        dead_body = marked_record("dead")
        dead = self.ingest(s, "dies", "begin-call", dead_body)
        # Assumption (docs/SECURITY.md, sqlite.c): a skipped message (no URL for its event)
        # loses its record after payload-retention-s counted from its creation, like a
        # delivered one, and `callhook purge` counts it among the "delivered records".
        self.put_app(s, "nourl", {"BeginCallEventProcessingUrl": None})
        skipped_body = marked_record("skipped")
        skipped = self.ingest(s, "nourl", "end-call", skipped_body)
        for mid in delivered:
            self.wait_status(s, mid, "delivered", T(15))
        self.wait_status(s, dead, "dead", T(15))
        self.wait_status(s, skipped, "skipped", T(15))
        self.assertEqual(s.stop(), 0)

        seqs = dict(self.sql(s, "SELECT id, seq FROM messages"))
        n_attempts = self.sql(s, "SELECT count(*) FROM attempts")[0][0]
        self.assertGreaterEqual(n_attempts, 5, "3 deliveries and 2 failed attempts")

        # Too young for a 60 s retention: nothing goes.
        self.assertEqual(self.purge(s, 60, 60, key_path), (0, 0))
        # Age everything by 100000 s (27.8 h).
        self.sql(s, "UPDATE messages SET delivered_at = delivered_at - 100000, "
                    "created_at = created_at - 100000",
                 "UPDATE attempts SET at_ms = at_ms - 100000000")
        # Still within a 200000 s retention: nothing goes.
        self.assertEqual(self.purge(s, 200000, 200000, key_path), (0, 0))
        # Past a 60 s retention: the delivered records and every attempt.
        self.assertEqual(self.purge(s, 60, 60, key_path), (len(delivered) + 1, n_attempts))
        self.assertEqual(self.purge(s, 60, 60, key_path), (0, 0), "a second run finds nothing")

        lengths = dict(self.sql(s, "SELECT m.id, length(b.body) FROM messages m"
                                        " JOIN message_bodies b ON b.seq = m.seq"))
        for mid in delivered:
            self.assertEqual(lengths[mid], 0, "delivered record of %s not emptied" % mid)
        self.assertEqual(lengths[skipped], 0, "skipped record of %s not emptied" % skipped)
        self.assertGreater(lengths[dead], 0, "a dead message keeps its record")
        self.assertEqual(self.sql(s, "SELECT count(*) FROM attempts")[0][0], 0)
        self.assertEqual(len(seqs), len(delivered) + 2, "messages themselves stay")

        # What retention removed is gone from the files, not just unreferenced (serve sets
        # secure_delete; `callhook purge` closes the database, so the WAL is checkpointed).
        files = {k: v for k, v in read_folder(os.path.dirname(s.db_path)).items()
                 if k.startswith("callhook.db")}
        gone = set()
        for body in list(delivered.values()) + [skipped_body]:
            for t in record_markers(body):
                gone.add(t.encode())
        self.assertEqual(occurrences(files, gone), [],
                         "purged personal data still in the database files")
        dead_marks = {t.encode() for t in record_markers(dead_body)}
        if encrypted:
            self.assertEqual(occurrences(files, dead_marks), [], "encrypted at rest")
        else:
            self.assertTrue(occurrences(files, dead_marks),
                            "control: the dead record is kept, in clear without a data key")

        # Through the API after a restart.
        s.start()
        for mid, body in delivered.items():
            m = self.message(s, mid)
            self.assertEqual(m.get("status"), "delivered", m)
            self.assertEqual(m.get("bodyBytes"), 0, m)
            self.assertEqual(m.get("attempts"), [], m)
            r = s.api("POST", "/v1/messages/%s/replay" % mid)
            self.assertEqual(r.status, 409, "replay of a purged message: %r" % r)
            self.assertEqual(r.error_code, "conflict", r)
        m = self.message(s, skipped)
        self.assertEqual((m.get("status"), m.get("bodyBytes")), ("skipped", 0), m)
        m = self.message(s, dead)
        self.assertEqual(m.get("status"), "dead", m)
        self.assertEqual(m.get("bodyBytes"), len(dead_body), m)
        # The dead record is intact: a replay delivers it byte for byte (and it opens with the
        # data key when encrypted).
        rx.set_default(Response.ok(), path="/dies/begin-call")
        n_before = len(rx.requests_for(webhook_id=dead))
        r = s.api("POST", "/v1/messages/%s/replay" % dead)
        self.assertEqual(r.status, 202, r)
        self.wait_status(s, dead, "delivered", T(15))
        recs = rx.requests_for(webhook_id=dead)[n_before:]
        self.assertTrue(recs, "the replay reached the receiver")
        self.assertEqual(recs[-1].body, dead_body)
        self.assertTrue(recs[-1].verified, recs[-1].verification)
        # A purged message sends nothing (no replay of an empty record slipped through).
        time.sleep(T(0.5))
        for mid in delivered:
            self.assertEqual(len(rx.requests_for(webhook_id=mid)), 1, mid)

    def test_retention_plain(self):
        self.run_retention(encrypted=False)

    def test_retention_encrypted(self):
        self.run_retention(encrypted=True)

    def test_retention_settings_have_a_floor(self):
        # --attempt-retention-s and --payload-retention-s: at least 60.
        s = self.serve(start=False)
        for flag in ("--payload-retention-s", "--attempt-retention-s"):
            with self.subTest(flag=flag):
                p = self.run_cli("purge", "--db", s.db_url, flag, "59")
                self.assertNotEqual(p.returncode, 0, p)
                self.assertIn(flag.lstrip("-"), p.stdout + p.stderr, p)


# ---------------------------------------------------------------------------------------------
# Runner


class Result(harness.Result):
    """After a failed test: the logs of its processes and its receivers' last requests."""

    def show_failure(self, test):
        for name, text in sorted(getattr(test, "final_logs", {}).items()):
            self.stream.writeln("---- %s log of %s ----" % (name, test.id()))
            self.stream.writeln(text)
        for rx in getattr(test, "receivers", []):
            reqs = rx.requests
            self.stream.writeln("---- receiver: %d requests, last ones ----" % len(reqs))
            for r in reqs[-15:]:
                self.stream.writeln(json.dumps(r.summary()))


CASES = (Ssrf, UrlValidation, Mtls, PooledTls, FilesAndKeys, SlowClients, PersonalData,
         Retention)


def main(argv):
    global BIN, PAYLOADS
    args = harness.suite_args(argv, "test_security.py")
    if args is None:
        return 2
    BIN, PAYLOADS, filters = args
    if shutil.which("openssl") is None:
        print("test_security.py: the openssl CLI is needed for the TLS tests", file=sys.stderr)
        return 2

    def on_term(*_):  # a timeout: kill what runs, remove the temp dirs, go
        cleanup()
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)

    return harness.run_suite(CASES, filters, Result)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
