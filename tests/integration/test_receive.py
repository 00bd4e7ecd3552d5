#!/usr/bin/env python3
"""`callhook receive` end to end: a real receiver process on 127.0.0.1, requests signed here
(Standard Webhooks v1, written independently of the C code), by `callhook sign` (v1a) and by
the npm `svix` package, real handlers (a Python script run through --exec, and --jsonl files),
the inbox looked at through `callhook inbox`, kill -9 and restarts, HTTPS with certificates
made here with the openssl CLI.

usage: test_receive.py CALLHOOK_BINARY PAYLOADS_DIR [NAME_FILTER...]
       (or CALLHOOK_BIN / CALLHOOK_PAYLOADS_DIR in the environment)

Each test has its own temp dir, free port, inbox and receiver process(es); every process is
killed in the end (SIGTERM must stop the receiver with status 0). Every wait has a deadline
(CALLHOOK_TEST_TIME_SCALE stretches them all). The last line is `N passed, M failed`; the exit
status is 1 if anything failed. CALLHOOK_KEEP_TMP keeps the temp dirs. The svix helper
(svix_sign.mjs, next to this file) needs tests/interop/node_modules: `make test-deps`.

Where `callhook receive --help` is silent, the assumption a test makes is written next to it,
marked "Assumption:".
"""

import atexit
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets as _secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import ApiResponse, free_port, scaled, wait_until  # noqa: E402

BIN = None
PAYLOADS = None
HOST = "127.0.0.1"
SVIX_HELPER = os.path.join(HERE, "svix_sign.mjs")
SVIX_MANIFEST = os.path.join(HERE, "..", "interop", "node_modules", "svix", "package.json")

CALL_TYPE_NAMES = ["GenericCall", "AnsweredCall", "MissedCall", "InitialAnsweredCall",
                   "ActiveCall", "VoiceMail", "CallTransfered", "CallAnsweredManually",
                   "OutboundCall"]
ENV_KEYS = ("CALL_EVENT", "CALL_ACTIVE_CALL_ID", "CALL_CORRELATION_ID", "CALL_TYPE",
            "CALL_TYPE_NAME", "WEBHOOK_ID")
# What must never reach the receiver's log: the payloads' phone numbers, e-mail addresses and
# names (the call ids are logged masked).
PII_PATTERNS = (re.compile(r"\+1555\d{7}"),
                re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[a-z]+"),
                re.compile(r"Jane Example|Sam Agent|please call me back"))


ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def T(seconds):
    """A deadline, stretched by CALLHOOK_TEST_TIME_SCALE."""
    return scaled(seconds)


# ---------------------------------------------------------------------------------------------
# Signing (Standard Webhooks v1), written from the specification


def new_secret(nbytes=32):
    return "whsec_" + base64.b64encode(os.urandom(nbytes)).decode()


def new_id():
    return "msg_" + _secrets.token_hex(12)


def sign_v1(secret, msg_id, ts, body):
    key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    mac = hmac.new(key, ("%s.%s." % (msg_id, ts)).encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def kill9_while_sending(rx, sender, stop, acked, step=20, deadline=20, kills=10):
    """Runs sender (which loops until stop is set, adding what was acknowledged to acked) on
    four threads, and kills rx with kill -9 `kills` times, each once `step` more events were
    acknowledged, starting it again each time; then stops the senders."""
    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(kills):
            before = len(acked)
            wait_until(lambda: len(acked) >= before + step, T(deadline),
                       what="%d more acknowledged before kill %d" % (step, i + 1))
            rx.kill9()
            rx.start()
    finally:
        stop.set()
        for t in threads:
            t.join(T(15))


def record(call_id=None, call_type=4, **fields):
    """A small call record (bytes) with a fresh ActiveCallId unless one is given; call_type
    None leaves CallType out. Every record carries a phone number and an e-mail address, so the
    log checks have something to find."""
    rec = {}
    if call_id is not False:
        rec["ActiveCallId"] = call_id or "call-" + _secrets.token_hex(8)
    if call_type is not None:
        rec["CallType"] = call_type
    rec.update({"TenantId": "00000000-1111-2222-3333-444444444444",
                "CallerId": "+15550100123", "Agent": {"Email": "sam.agent@example.com"}})
    rec.update(fields)
    return json.dumps(rec).encode()


def read_jsonl(path):
    """The complete lines of a JSON-lines file (one being appended right now is left out)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")[:-1]
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


# ---------------------------------------------------------------------------------------------
# The handler: one Python script, run by the receiver through --exec

HANDLER = r'''
import base64, json, os, sys, time
d = os.environ["CH_TEST_DIR"]
tag = os.environ.get("CH_TEST_TAG", "default")
mode_file = os.path.join(d, "mode")
mode = open(mode_file).read().strip() if os.path.exists(mode_file) else "ok"
body = sys.stdin.buffer.read()
keys = %r

def open_fds():
    """The descriptors this process holds, {fd: what}; listdir's own is gone by readlink."""
    got = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            got[fd] = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            pass
    return got

rec = {"tag": tag, "pid": os.getpid(), "pgid": os.getpgid(0), "t": time.time(),
       "env": {k: os.environ.get(k) for k in keys}, "body": base64.b64encode(body).decode(),
       "fds": open_fds(), "environ": dict(os.environ)}
wid = os.environ.get("WEBHOOK_ID", "")

def append(name, obj):
    fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (json.dumps(obj) + "\n").encode())
    os.close(fd)

append("starts.jsonl", rec)
if mode == "block":
    # Stay busy until the test says "release" (or a minute has passed: then fail).
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(d, "release")):
        if time.time() > deadline:
            sys.exit(9)
        time.sleep(0.02)
elif mode == "fail-twice":
    with open(os.path.join(d, "starts.jsonl")) as f:
        runs = sum(1 for l in f if json.loads(l)["env"]["WEBHOOK_ID"] == wid)
    if runs <= 2:
        sys.stderr.write("failing on purpose, run %%d\n" %% runs)
        sys.exit(1)
elif mode == "fail":
    if not os.path.exists(os.path.join(d, "heal")):
        # A careless handler prints what it got: none of it may reach the receiver's log.
        sys.stderr.write("cannot call back +15550100123 (sam.agent@example.com)\n")
        sys.exit(3)
elif mode.startswith("sleep "):
    time.sleep(float(mode.split()[1]))
append("done.jsonl", rec)
''' % (ENV_KEYS,)


# ---------------------------------------------------------------------------------------------
# The receiver process


class ReceiveError(RuntimeError):
    """receive did not start, or not the way it should have; the message has its log."""


_PDEATHSIG = None
_LIVE = set()  # Receive objects with a running process
_LIVE_LOCK = threading.Lock()


def kill_all():
    """Kill every receiver still running (at exit, and on SIGTERM)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for rx in live:
        try:
            if rx.proc.poll() is None:
                rx.proc.kill()
                rx.proc.wait(5)
        except (OSError, subprocess.SubprocessError):
            pass


atexit.register(kill_all)


class Receive:
    """One `callhook receive` on 127.0.0.1 with its own inbox in `workdir`.

    args: more options (the handler, routes, TLS files...). insecure: add --insecure-http.
    secrets: the --secret values. env: more environment. client_ctx: the ssl context to talk
    to it with (HTTPS), also used for the /healthz wait."""

    def __init__(self, workdir, args=(), secrets=(), insecure=True, env=None, client_ctx=None,
                 name="receive", pass_fds=()):
        global _PDEATHSIG
        if _PDEATHSIG is None:
            _PDEATHSIG = harness._setpriv_prefix()
        self.workdir = workdir
        self.args = list(args)
        self.secrets = list(secrets)
        self.insecure = insecure
        self.extra_env = dict(env or {})
        self.client_ctx = client_ctx
        self.name = name
        self.pass_fds = tuple(pass_fds)  # descriptors the receiver inherits from its parent
        self.port = None
        self.store = os.path.join(workdir, "inbox.db")
        self.log_path = os.path.join(workdir, name + ".log")
        self.proc = None
        self.exits = []  # exit statuses of the processes that ended (-9: killed by the test)
        self.starts = 0

    def command(self):
        cmd = [BIN, "receive", "--listen", "%s:%d" % (HOST, self.port), "--store", self.store]
        for s in self.secrets:
            cmd += ["--secret", s]
        if self.insecure:
            cmd.append("--insecure-http")
        # The test handler finds its folder through CH_TEST_DIR; handlers get only the
        # variables named this way (and PATH, HOME, the locale).
        return cmd + ["--handler-env", "CH_TEST_DIR"] + self.args

    def environment(self):
        env = {k: v for k, v in os.environ.items()
               if k not in harness.PROXY_VARS and not k.startswith("CALLHOOK_RECEIVE_")}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env["CH_TEST_DIR"] = self.workdir
        env.update(self.extra_env)
        return env

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _marker(self, text):
        with open(self.log_path, "a") as f:
            f.write("=== %s %s ===\n" % (time.strftime("%H:%M:%S"), text))

    def spawn(self):
        """Start the process without waiting for it to listen."""
        if self.port is None:
            self.port = free_port()
        self.starts += 1
        self._marker("start #%d: %s" % (self.starts, " ".join(self.command())))
        self._start_offset = os.path.getsize(self.log_path)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(_PDEATHSIG + self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env=self.environment(),
                                         cwd=self.workdir, pass_fds=self.pass_fds)
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self.proc

    def start(self, timeout=None):
        """Start (again, on the same inbox and port) and wait until /healthz answers 200.
        A port lost to someone else in between is replaced on the first start."""
        timeout = T(15) if timeout is None else timeout
        for attempt in range(3):
            self.spawn()
            deadline = time.monotonic() + timeout
            while True:
                code = self.proc.poll()
                if code is not None:
                    self._reaped(code)
                    tail = self.tail()
                    if attempt < 2 and self.starts == 1 and re.search(r"cannot listen", tail):
                        self.port = None
                        break
                    raise ReceiveError("%s exited with status %d before /healthz answered:\n%s"
                                       % (self.name, code, tail))
                try:
                    if self.request("GET", "/healthz", timeout=1.0).status == 200:
                        return self
                except (OSError, http.client.HTTPException):
                    pass
                if time.monotonic() >= deadline:
                    self.kill9()
                    raise ReceiveError("%s: /healthz did not answer within %.1fs:\n%s" % (
                        self.name, timeout, self.tail()))
                time.sleep(0.03)
        raise ReceiveError("no free port")

    def _reaped(self, code):
        with _LIVE_LOCK:
            _LIVE.discard(self)
        self.exits.append(code)
        self._marker("exit status %d" % code)

    def kill9(self):
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.proc.poll() is not None:
            self._reaped(self.proc.returncode)
            return
        self._marker("kill -9")
        self.proc.kill()
        self._reaped(self.proc.wait(10))

    def stop(self, timeout=None):
        """SIGTERM, then SIGKILL after the timeout. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.returncode is not None:
            return self.proc.returncode
        if self.proc.poll() is None:
            self._marker("SIGTERM")
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(T(15) if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self._marker("no exit after SIGTERM: kill -9")
                self.proc.kill()
                self.proc.wait(10)
                code = "no exit within the deadline after SIGTERM"
            self._reaped(code)
            return code
        self._reaped(self.proc.returncode)
        return self.proc.returncode

    def logs(self):
        """Everything it wrote (stdout and stderr) over all its starts, with marker lines;
        kept in memory once the temp dir is gone."""
        try:
            with open(self.log_path, "rb") as f:
                self._log_text = f.read().decode("utf-8", "replace")
        except OSError:
            pass
        return getattr(self, "_log_text", "")

    def tail(self, lines=60):
        text = self.logs()[getattr(self, "_start_offset", 0):]
        return "\n".join(text.splitlines()[-lines:])

    # -- talking to it -----------------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=10.0, ctx="default"):
        """One request on a fresh connection; HTTPS when the receiver has a client context
        (or ctx is given). Raises OSError / HTTPException when no answer comes."""
        ctx = self.client_ctx if ctx == "default" else ctx
        if ctx is not None:
            conn = http.client.HTTPSConnection(HOST, self.port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            try:
                conn.request(method, path, body=body, headers=headers or {})
            except (BrokenPipeError, ConnectionResetError):
                pass  # an early answer may be waiting
            resp = conn.getresponse()
            data = resp.read()
            return ApiResponse(resp.status, resp.reason,
                               {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def post(self, body, event="end-call", secret=None, msg_id=None, ts=None, path=None,
             headers=None, signature=None, omit=(), names=("webhook-id", "webhook-timestamp",
                                                            "webhook-signature"), **kw):
        """POST body to /hooks/<event>, signed with secret (default: the first --secret).
        Returns (response, webhook id). omit: header names to leave out."""
        msg_id = msg_id or new_id()
        ts = int(time.time()) if ts is None else ts
        if signature is None:
            signature = sign_v1(secret or self.secrets[0], msg_id, ts, body)
        h = {"Content-Type": "application/json", names[0]: msg_id, names[1]: str(ts),
             names[2]: signature}
        for k in omit:
            h.pop(k, None)
        h.update(headers or {})
        r = self.request("POST", path or "/hooks/" + event, body, h, **kw)
        return r, msg_id

    def cli(self, *args, timeout=30):
        env = self.environment()
        return subprocess.run([BIN] + list(args), capture_output=True, text=True, env=env,
                              timeout=T(timeout), stdin=subprocess.DEVNULL)

    def inbox(self, sub, *args):
        return self.cli("inbox", sub, "--store", self.store, *args)

    def inbox_rows(self, status=None):
        """{webhook id: (event, status, attempts, last error)} from `callhook inbox list`."""
        args = ["--limit", "10000"] + (["--status", status] if status else [])
        p = self.inbox("list", *args)
        if p.returncode != 0:
            raise AssertionError("callhook inbox list failed (%d): %s" % (p.returncode, p.stderr))
        rows = {}
        for line in p.stdout.splitlines()[1:]:
            # ID EVENT STATUS ATTEMPTS RECEIVED (ISO 8601, one word) LAST-ERROR...
            parts = line.split(None, 5)
            if len(parts) >= 5 and parts[1] in ("begin-call", "end-call") and \
                    parts[2] in ("pending", "running", "done", "failed", "purged"):
                if not ISO_UTC.fullmatch(parts[4]):
                    raise AssertionError("RECEIVED is not ISO 8601 UTC: %r" % line)
                rows[parts[0]] = (parts[1], parts[2], int(parts[3]),
                                  parts[5] if len(parts) > 5 else "")
        return rows


# ---------------------------------------------------------------------------------------------
# Certificates, made with the openssl CLI


def openssl(*args, cwd):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True,
                       timeout=T(30))
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), p.stderr))


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1), a client
    certificate from that CA and one from another CA. Returns {name: path}."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2",
                "-subj", "/CN=callhook test %s" % ca,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    certs = {"server": ("ca", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\n"
                        "extendedKeyUsage=serverAuth\n"),
             "client": ("ca", "/CN=good client", "extendedKeyUsage=clientAuth\n"),
             "stranger": ("other-ca", "/CN=client of another CA", "extendedKeyUsage=clientAuth\n")}
    for name, (ca, subj, ext) in certs.items():
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + ext)
        openssl("req", "-new", *ec, "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", subj, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
                "-extfile", name + ".ext", "-out", name + ".pem", cwd=d)
    return {n: os.path.join(d, n) for n in ("ca", "other-ca", "server", "client", "stranger")}


def client_context(pki, cert=None):
    """An ssl context that trusts the test CA (and checks 127.0.0.1 against the server's
    subjectAltName), presenting cert ("client", "stranger") when given."""
    ctx = ssl.create_default_context(cafile=pki["ca"] + ".pem")
    if cert:
        ctx.load_cert_chain(pki[cert] + ".pem", pki[cert] + ".key")
    return ctx


# ---------------------------------------------------------------------------------------------
# Tests


class ReceiveCase(unittest.TestCase):
    """A temp dir per test; receivers started through self.receiver() are stopped (SIGTERM,
    status 0 expected), their logs checked for sanitizer reports and personal data, and the
    handlers they left running are killed."""

    maxDiff = 4000

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="callhook-rx-")
        self.secret = new_secret()
        self.receivers = []
        self.handler_path = os.path.join(self.dir, "handler.py")
        with open(self.handler_path, "w") as f:
            f.write(HANDLER)
        self.addCleanup(self._cleanup)

    def handler_cmd(self, tag=None):
        # -S: no site module, a faster start (the handler needs the standard library only).
        cmd = "%s -S %s" % (shlex.quote(sys.executable), shlex.quote(self.handler_path))
        return ("CH_TEST_TAG=%s " % tag + cmd) if tag else cmd

    def set_mode(self, mode):
        with open(os.path.join(self.dir, "mode"), "w") as f:
            f.write(mode)

    def receiver(self, *args, secrets=None, handler=True, start=True, insecure=True, **kw):
        """A receiver on this test's inbox; handler True adds --exec with the test handler."""
        args = list(args)
        if handler is True:
            args += ["--exec", self.handler_cmd()]
        rx = Receive(self.dir, args, secrets=[self.secret] if secrets is None else secrets,
                     insecure=insecure,
                     name="receive%d" % (len(self.receivers) + 1), **kw)
        self.receivers.append(rx)
        if start:
            rx.start()
        return rx

    def _cleanup(self):
        problems = []
        for rx in self.receivers:
            if rx.alive:
                code = rx.stop()
                if code != 0:
                    with open(rx.log_path, "rb") as f:
                        tail = f.read().decode("utf-8", "replace").splitlines()[-15:]
                    problems.append("%s: SIGTERM gave exit status %r, not 0; its log ends:\n%s"
                                    % (rx.name, code, "\n".join(tail)))
            bad = [c for c in rx.exits if c not in (0, -9) and not getattr(rx, "expect_fail", 0)]
            if bad and not any("SIGTERM gave" in p for p in problems):
                problems.append("%s exited with status %s" % (rx.name, bad))
            text = rx.logs()
            problems += ["%s: sanitizer: %s" % (rx.name, line) for line in text.splitlines()
                         if any(m in line for m in harness.SANITIZER_MARKERS)][:10]
            for pat in PII_PATTERNS:
                m = pat.search(text)
                if m:
                    problems.append("%s's log shows personal data %r: %s" % (
                        rx.name, m.group(0),
                        [l for l in text.splitlines() if m.group(0) in l][:3]))
        self._kill_handlers()
        if not os.environ.get("CALLHOOK_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        if problems:
            self.fail("\n".join(problems))

    def _kill_handlers(self):
        """Handlers run in their own process group; a kill -9 of the receiver leaves them
        behind. Kill the groups this test's handlers recorded (only if they are still ours)."""
        for rec in read_jsonl(os.path.join(self.dir, "starts.jsonl")):
            pgid = rec.get("pgid")
            try:
                with open("/proc/%d/environ" % pgid, "rb") as f:
                    ours = ("CH_TEST_DIR=%s" % self.dir).encode() in f.read().split(b"\0")
            except (OSError, TypeError):
                continue
            if ours:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pass

    # -- helpers -----------------------------------------------------------------------------

    def assert_status(self, r, status, what=""):
        self.assertEqual(r.status, status, "%s: %r" % (what, r))
        self.assertIsInstance(r.json, dict, "%s: the answer is JSON: %r" % (what, r))

    def assert_401(self, r, reason_re, what):
        """401 with a reason in the body that matches reason_re."""
        self.assert_status(r, 401, what)
        msg = str(r.json.get("message", ""))
        self.assertRegex(msg, reason_re, "%s: the reason in the body: %r" % (what, r))

    def done(self):
        return read_jsonl(os.path.join(self.dir, "done.jsonl"))

    def runs(self):
        return read_jsonl(os.path.join(self.dir, "starts.jsonl"))

    def done_ids(self):
        return [d["env"]["WEBHOOK_ID"] for d in self.done()]

    def wait_done(self, ids, timeout=None):
        """Wait until the handler has finished every webhook id in ids."""
        ids = set(ids)
        return wait_until(lambda: ids <= set(self.done_ids()), timeout or T(15),
                          what=lambda: "handler done for %d ids (missing: %s)" % (
                              len(ids), sorted(ids - set(self.done_ids()))[:5]))

    def wait_inbox(self, rx, wid, status, timeout=None):
        last = {}

        def check():
            last["rows"] = rx.inbox_rows()
            return last["rows"].get(wid, (None, None))[1] == status
        wait_until(check, timeout or T(15), 0.05, what=lambda: "inbox status %s for %s (now %s)"
                   % (status, wid, last.get("rows", {}).get(wid)))


class Verification(ReceiveCase):
    """Who may deliver: signatures, timestamps, key rotation, v1a, svix."""

    def test_valid_then_duplicate(self):
        rx = self.receiver()
        body = record()
        r, wid = rx.post(body)
        self.assert_status(r, 202, "a valid request")
        again, _ = rx.post(body, msg_id=wid)
        self.assert_status(again, 200, "the same request again")
        self.wait_done([wid])
        self.assertEqual(rx.inbox_rows()[wid][:2], ("end-call", "done"))

    def test_tampered(self):
        rx = self.receiver()
        body = record()
        ts = int(time.time())
        wid = new_id()
        sig = sign_v1(self.secret, wid, ts, body)
        bad_bodies = [body + b" ", body[:-1] + b', "x": 1}',
                      body.replace(b"+15550100123", b"+15550100124")]
        for i, b in enumerate(bad_bodies):
            r, _ = rx.post(b, msg_id=wid, ts=ts, signature=sig)
            self.assert_401(r, r"signature", "tampered body #%d" % i)
        r, _ = rx.post(body, msg_id=wid + "x", ts=ts, signature=sig)
        self.assert_401(r, r"signature", "another webhook-id than the signed one")
        r, _ = rx.post(body, msg_id=wid, ts=ts + 1, signature=sig)
        self.assert_401(r, r"signature", "another timestamp than the signed one")
        r, _ = rx.post(body, secret=new_secret())
        self.assert_401(r, r"signature", "signed with a secret the receiver does not have")
        flipped = bytearray(base64.b64decode(sig[3:]))
        flipped[0] ^= 1
        r, _ = rx.post(body, signature="v1," + base64.b64encode(bytes(flipped)).decode())
        self.assert_401(r, r"signature", "one bit of the signature flipped")
        r, _ = rx.post(body, signature="v2," + sig[3:])
        self.assert_401(r, r"signature", "an unknown signature version")
        self.assertEqual(rx.inbox_rows(), {}, "nothing refused is stored")
        self.assertEqual(self.runs(), [], "nothing refused is processed")
        # The right signature among wrong ones still passes.
        r, wid2 = rx.post(body, msg_id=wid, ts=ts,
                          signature="v1,AAAA v1a,AAAA " + sig + " v1,%s" % ("B" * 44))
        self.assert_status(r, 202, "a matching entry among others")

    def test_timestamp_window(self):
        rx = self.receiver()
        now = int(time.time())
        for what, ts, reason in (("expired (400 s old)", now - 400, r"past"),
                                 ("from the future (+400 s)", now + 400, r"future"),
                                 ("a day old", now - 86400, r"past")):
            r, _ = rx.post(record(), ts=ts)
            self.assert_401(r, reason, what)
        for what, ts in (("not a number", "12ab"), ("fractional", "%d.5" % now),
                         ("negative", "-5"), ("empty", "")):
            body, wid = record(), new_id()
            sig = sign_v1(self.secret, wid, ts, body)
            r, _ = rx.post(body, msg_id=wid, ts=ts, signature=sig)
            self.assert_401(r, r"timestamp", "timestamp %s (%r)" % (what, ts))
        r, wid = rx.post(record(), ts=now - 200)
        self.assert_status(r, 202, "200 s old, inside the default 300 s window")
        r, wid = rx.post(record(), ts=now + 200)
        self.assert_status(r, 202, "200 s ahead, inside the default 300 s window")

    def test_tolerance_flag(self):
        rx = self.receiver("--tolerance-s", "5")
        now = int(time.time())
        r, _ = rx.post(record(), ts=now - 30)
        self.assert_401(r, r"past", "30 s old with --tolerance-s 5")
        r, _ = rx.post(record(), ts=now + 30)
        self.assert_401(r, r"future", "30 s ahead with --tolerance-s 5")
        r, _ = rx.post(record(), ts=now - 1)
        self.assert_status(r, 202, "1 s old with --tolerance-s 5")

    def test_missing_headers(self):
        rx = self.receiver()
        for h in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            r, _ = rx.post(record(), omit=(h,))
            self.assert_401(r, re.escape(h), "without %s" % h)
            r, _ = rx.post(record(), headers={h: ""})
            self.assert_401(r, re.escape(h), "with an empty %s" % h)
        r = rx.request("POST", "/hooks/end-call", record(), {"Content-Type": "application/json"})
        self.assert_401(r, r"missing", "no signature headers at all")
        self.assertEqual(rx.inbox_rows(), {})

    def test_rotated_secret(self):
        old, new = self.secret, new_secret(48)
        rx = self.receiver(secrets=[old, new])
        r, a = rx.post(record(), secret=old)
        self.assert_status(r, 202, "signed with the old secret")
        r, b = rx.post(record(), secret=new)
        self.assert_status(r, 202, "signed with the new secret")
        # A sender in the middle of a rotation signs with both.
        body, wid, ts = record(), new_id(), int(time.time())
        both = sign_v1(old, wid, ts, body) + " " + sign_v1(new, wid, ts, body)
        r, c = rx.post(body, msg_id=wid, ts=ts, signature=both)
        self.assert_status(r, 202, "signed with both")
        r, _ = rx.post(record(), secret=new_secret())
        self.assert_401(r, r"signature", "signed with a third secret")
        self.wait_done([a, b, c])

    def test_v1a(self):
        p = subprocess.run([BIN, "secret", "new", "--ed25519"], capture_output=True, text=True,
                           timeout=T(10))
        self.assertEqual(p.returncode, 0, p.stderr)
        sk, pk = p.stdout.split()[:2]
        self.assertTrue(sk.startswith("whsk_") and pk.startswith("whpk_"), p.stdout)
        other_sk = subprocess.run([BIN, "secret", "new", "--ed25519"], capture_output=True,
                                  text=True, timeout=T(10)).stdout.split()[0]
        rx = self.receiver("--public-key", pk)

        def v1a(secret, wid, ts, body):
            q = subprocess.run([BIN, "sign", "--secret", secret, "--id", wid, "--timestamp",
                                str(ts)], input=body, capture_output=True, timeout=T(10))
            self.assertEqual(q.returncode, 0, q.stderr)
            sig = q.stdout.decode().strip()
            self.assertTrue(sig.startswith("v1a,"), sig)
            return sig

        body, wid, ts = record(), new_id(), int(time.time())
        r, _ = rx.post(body, msg_id=wid, ts=ts, signature=v1a(sk, wid, ts, body))
        self.assert_status(r, 202, "v1a signed by callhook sign --secret whsk_")
        r, _ = rx.post(body, msg_id=wid, ts=ts, signature=v1a(sk, wid, ts, body))
        self.assert_status(r, 200, "the same v1a request again")
        body2, wid2 = record(), new_id()
        r, _ = rx.post(body2 + b" ", msg_id=wid2, ts=ts, signature=v1a(sk, wid2, ts, body2))
        self.assert_401(r, r"signature", "v1a over another body")
        r, _ = rx.post(body2, msg_id=wid2, ts=ts, signature=v1a(other_sk, wid2, ts, body2))
        self.assert_401(r, r"signature", "v1a by another key")
        r, _ = rx.post(body2, msg_id=wid2, ts=ts - 1000, signature=v1a(sk, wid2, ts - 1000, body2))
        self.assert_401(r, r"past", "v1a, expired")
        r, _ = rx.post(body2, msg_id=wid2)  # v1 with the HMAC secret still works
        self.assert_status(r, 202, "v1 next to a public key")
        self.wait_done([wid, wid2])

    def test_svix_npm(self):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node is needed for the svix interop check")
        self.assertTrue(os.path.exists(SVIX_MANIFEST),
                        "%s is missing: run `make test-deps` (npm ci --prefix tests/interop)"
                        % os.path.normpath(SVIX_MANIFEST))
        rx = self.receiver()
        sent = []
        for i, names in enumerate((("svix-id", "svix-timestamp", "svix-signature"),
                                   ("webhook-id", "webhook-timestamp", "webhook-signature"))):
            path = os.path.join(PAYLOADS, "end-call-future-fields.json" if i == 0
                                else "begin-call-camelcase.json")
            with open(path, "rb") as f:
                body = f.read()
            wid, ts = new_id(), int(time.time())
            p = subprocess.run([node, SVIX_HELPER, self.secret, wid, str(ts), path],
                               capture_output=True, text=True, timeout=T(30))
            self.assertEqual(p.returncode, 0, "svix_sign.mjs: %s" % p.stderr.strip())
            sig = p.stdout.strip()
            self.assertEqual(sig, sign_v1(self.secret, wid, ts, body),
                             "svix and this file sign alike")
            event = "end-call" if i == 0 else "begin-call"
            r, _ = rx.post(body, event=event, msg_id=wid, ts=ts, signature=sig, names=names)
            self.assert_status(r, 202, "signed by npm svix 2.5.0, headers %s" % names[0])
            sent.append((wid, body))
        self.wait_done([w for w, _ in sent])
        got = {d["env"]["WEBHOOK_ID"]: base64.b64decode(d["body"]) for d in self.done()}
        for wid, body in sent:
            self.assertEqual(got[wid], body, "the svix-signed body reaches the handler as sent")


class Dedupe(ReceiveCase):
    """A duplicate delivery is acknowledged (200) and processed once."""

    def test_same_id_and_same_call(self):
        rx = self.receiver()
        call = "call-" + _secrets.token_hex(8)
        body = record(call, 2)
        r, first = rx.post(body)
        self.assert_status(r, 202, "first delivery")
        r, _ = rx.post(body, msg_id=first)
        self.assert_status(r, 200, "same webhook-id")
        self.assertRegex(r.json.get("message", ""), r"(?i)duplicate")
        r, _ = rx.post(body)
        self.assert_status(r, 200, "same call and event under a new webhook-id")
        r, _ = rx.post(record(call, 2, EndReason="changed"))
        self.assert_status(r, 200, "same call and event, other fields, new webhook-id")
        r, _ = rx.post(record(), msg_id=first)
        self.assert_status(r, 200, "same webhook-id, another call")
        r, begin = rx.post(record(call, 4), event="begin-call")
        self.assert_status(r, 202, "same call, the other event")
        self.wait_done([first, begin])
        time.sleep(T(0.5))  # room for a wrong second run to show up
        ids = self.done_ids()
        self.assertEqual(sorted(ids), sorted([first, begin]), "each event processed once")
        self.assertEqual(len(self.runs()), 2)
        self.assertEqual(set(rx.inbox_rows()), {first, begin}, "duplicates are not stored")

    def test_correlation_id_only(self):
        rx = self.receiver()
        corr = "corr-" + _secrets.token_hex(8)
        body = record(False, 1, CorrelationId=corr)
        r, wid = rx.post(body)
        self.assert_status(r, 202, "a record with a CorrelationId only")
        r, _ = rx.post(record(False, 1, CorrelationId=corr, Note="again"))
        self.assert_status(r, 200, "the same CorrelationId and event, new webhook-id")
        r, other = rx.post(record(False, 1, CorrelationId=corr + "x"))
        self.assert_status(r, 202, "another CorrelationId")
        # Assumption: a record with neither id is deduplicated by webhook-id only.
        r, noid = rx.post(record(False, 1))
        self.assert_status(r, 202, "no ActiveCallId nor CorrelationId")
        r, noid2 = rx.post(record(False, 1))
        self.assert_status(r, 202, "no ids, another webhook-id")
        r, _ = rx.post(record(False, 1), msg_id=noid)
        self.assert_status(r, 200, "no ids, same webhook-id")
        self.wait_done([wid, other, noid, noid2])
        env = {d["env"]["WEBHOOK_ID"]: d["env"] for d in self.done()}
        self.assertEqual(env[wid]["CALL_CORRELATION_ID"], corr)
        self.assertEqual(env[wid]["CALL_ACTIVE_CALL_ID"], "")
        self.assertEqual(len(self.runs()), 4)

    def test_concurrent_duplicates(self):
        """Ten copies of one event at once, each under its own webhook-id, and ten of another
        under one webhook-id: one 202 each, the rest 200."""
        rx = self.receiver()
        body = record()
        shared_id = new_id()
        results = []
        lock = threading.Lock()

        def send(i):
            try:
                r, wid = (rx.post(body) if i < 10 else rx.post(record(), msg_id=shared_id))
                with lock:
                    results.append((i < 10, r.status, wid))
            except Exception as e:  # noqa: BLE001
                with lock:
                    results.append((i < 10, repr(e), None))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(20))
        for group in (True, False):
            statuses = sorted(s for g, s, _ in results if g == group)
            self.assertEqual(statuses, [200] * 9 + [202], "one of ten is new: %s" % statuses)
        accepted = [w for g, s, w in results if s == 202]
        self.wait_done(accepted)
        time.sleep(T(0.3))
        self.assertEqual(sorted(self.done_ids()), sorted(accepted))

    def test_purge_keeps_keys_inside_the_tolerance(self):
        """`callhook inbox purge` removes the records of processed events, but keeps their
        dedupe keys while a captured request could still be accepted: replayed as sent, or as
        the other event (path or X-Call-Event, which the signature does not cover), it is a
        duplicate and not run again."""
        rx = self.receiver()
        body, wid, ts = record(), new_id(), int(time.time())
        sig = sign_v1(self.secret, wid, ts, body)
        r, _ = rx.post(body, event="begin-call", msg_id=wid, ts=ts, signature=sig)
        self.assert_status(r, 202, "first")
        self.wait_done([wid])
        self.wait_inbox(rx, wid, "done")
        p = rx.inbox("purge", "--older-than-s", "3600")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(rx.inbox_rows()[wid][1], "done", "younger than --older-than-s: kept")
        p = rx.inbox("purge")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"purged 1 ")
        self.assertEqual(rx.inbox_rows("done"), {}, "no processed event is left")
        self.assertEqual(rx.inbox_rows()[wid][1], "purged", "its key is")
        show = rx.inbox("show", wid)
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertRegex(show.stdout, r"status\s+purged")
        self.assertNotIn("TenantId", show.stdout, "the record is gone")
        for what, kw in (("replayed as sent", {"event": "begin-call"}),
                         ("replayed as an end-call (path)", {"event": "end-call"}),
                         ("replayed as an end-call (X-Call-Event)",
                          {"path": "/hooks/x", "headers": {"X-Call-Event": "end-call"}})):
            r, _ = rx.post(body, msg_id=wid, ts=ts, signature=sig, **kw)
            self.assert_status(r, 200, "after a purge, " + what)
        time.sleep(T(0.3))  # room for a wrong second run to show up
        self.assertEqual(self.done_ids(), [wid], "processed once")
        self.assertEqual(len(self.runs()), 1)

    def test_other_kind_same_id_is_a_duplicate(self):
        """The event kind is not signed: the same signed webhook-id under the other kind is
        the same delivery, never a second event."""
        rx = self.receiver()
        body, wid, ts = record(), new_id(), int(time.time())
        sig = sign_v1(self.secret, wid, ts, body)
        r, _ = rx.post(body, event="end-call", msg_id=wid, ts=ts, signature=sig)
        self.assert_status(r, 202, "first, as an end-call")
        r, _ = rx.post(body, event="begin-call", msg_id=wid, ts=ts, signature=sig)
        self.assert_status(r, 200, "the same request as a begin-call")
        r, _ = rx.post(body, msg_id=wid, ts=ts, signature=sig, path="/",
                       headers={"X-Call-Event": "begin-call"})
        self.assert_status(r, 200, "the same request with X-Call-Event: begin-call")
        self.wait_done([wid])
        time.sleep(T(0.3))
        self.assertEqual([d["env"]["CALL_EVENT"] for d in self.done()], ["end-call"])

    def test_retention_shorter_than_twice_the_tolerance_refused(self):
        rx = self.receiver("--retention-s", "599", "--tolerance-s", "300", start=False)
        rx.expect_fail = True
        with self.assertRaises(ReceiveError) as cm:
            rx.start()
        self.assertRegex(str(cm.exception),
                         r"--retention-s 599 is shorter than twice --tolerance-s 300.*600")
        self.receiver("--retention-s", "600", "--tolerance-s", "300")

    def test_duplicate_after_restart(self):
        rx = self.receiver()
        body = record()
        r, wid = rx.post(body)
        self.assert_status(r, 202, "first")
        self.wait_done([wid])
        self.assertEqual(rx.stop(), 0)
        rx.start()
        r, _ = rx.post(body, msg_id=wid)
        self.assert_status(r, 200, "same webhook-id after a restart")
        r, _ = rx.post(body)
        self.assert_status(r, 200, "same call after a restart")
        time.sleep(T(0.3))
        self.assertEqual(self.done_ids(), [wid])


class Handlers(ReceiveCase):
    """Retries, parking, `inbox retry`, the environment, routing, the jsonl handler."""

    def test_fails_twice_then_succeeds(self):
        self.set_mode("fail-twice")
        rx = self.receiver("--max-attempts", "3", "--retry-base-ms", "100")
        r, wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        self.wait_done([wid], T(15))
        self.wait_inbox(rx, wid, "done")
        runs = [x for x in self.runs() if x["env"]["WEBHOOK_ID"] == wid]
        self.assertEqual(len(runs), 3, "ran three times")
        gaps = [b["t"] - a["t"] for a, b in zip(runs, runs[1:])]
        self.assertGreaterEqual(min(gaps), 0.08, "retries wait (--retry-base-ms 100): %s" % gaps)
        self.assertEqual(rx.inbox_rows()[wid][2], 3, "attempts")
        time.sleep(T(0.4))
        self.assertEqual(len(self.runs()), 3, "and not again")

    def test_always_fails_parked_then_retried(self):
        self.set_mode("fail")
        rx = self.receiver("--max-attempts", "3", "--retry-base-ms", "100")
        r, wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        r, ok_wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        self.wait_inbox(rx, wid, "failed", T(15))
        time.sleep(T(0.3))
        self.assertEqual(len([x for x in self.runs() if x["env"]["WEBHOOK_ID"] == wid]), 3,
                         "--max-attempts 3: three runs, then parked")
        failed = rx.inbox_rows("failed")
        self.assertIn(wid, failed, "`callhook inbox list --status failed` shows it")
        self.assertEqual(failed[wid][1:3], ("failed", 3))
        self.assertRegex(failed[wid][3], r"exit status 3", "the last error says why")
        show = rx.inbox("show", wid)
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertRegex(show.stdout, r"status\s+failed")
        # Now the handler works again: `inbox retry ID` makes the running receiver run it.
        open(os.path.join(self.dir, "heal"), "w").close()
        p = rx.inbox("retry", wid)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"\b1 event\b")
        self.wait_done([wid], T(10))
        self.wait_inbox(rx, wid, "done")
        self.assertEqual(len([x for x in self.runs() if x["env"]["WEBHOOK_ID"] == wid]), 4)
        p = rx.inbox("retry", wid)
        self.assertNotEqual(p.returncode, 0, "retry of an event that is not failed: an error")
        p = rx.inbox("retry", "msg_no_such_event")
        self.assertNotEqual(p.returncode, 0, "retry of an unknown id: an error")
        self.assertIn(ok_wid, rx.inbox_rows("failed"), "the other one is still parked")

    def test_exec_timeout(self):
        self.set_mode("sleep 30")
        # 5 s: the Python handler must have started (and noted its pid) before it is killed,
        # also on a loaded machine.
        rx = self.receiver("--exec-timeout-s", "5", "--max-attempts", "1")
        r, wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        self.wait_inbox(rx, wid, "failed", T(20))
        self.assertRegex(rx.inbox_rows()[wid][3], r"(?i)timed out")
        pid = self.runs()[0]["pid"]

        def gone():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    return f.read().split(") ")[-1].startswith("Z")
            except OSError:
                return True
        wait_until(gone, T(5), what="the timed-out handler (pid %d) killed" % pid)

    def test_exec_done_when_the_command_exits_leaving_a_process_behind(self):
        """A command that starts something in the background (which keeps its stderr open)
        and exits 0 is done when it exits, not held until its time limit and run again."""
        marker = os.path.join(self.dir, "bg-ran")
        cmd = "(sleep 8; touch %s) & echo started >&2; exit 0" % shlex.quote(marker)
        rx = self.receiver("--exec", cmd, "--exec-timeout-s", "2", "--max-attempts", "2",
                           handler=False)
        r, wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        self.wait_inbox(rx, wid, "done", T(20))
        row = rx.inbox_rows()[wid]
        self.assertEqual(row[2], 1, "one attempt: %r" % (row,))
        self.assertNotRegex(row[3], r"(?i)timed out")

    def test_no_descriptor_leaks_between_handlers(self):
        """32 commands at once, 500 events: a handler's pipes never reach a sibling handler
        (which would keep its stdin or stderr open, and the handler reported as timed out),
        and no handler holds anything but its stdin, stdout and stderr."""
        fds_dir = os.path.join(self.dir, "fds")
        os.mkdir(fds_dir)
        # ls inherits what the shell holds and lists it (its own directory under /proc too).
        cmd = "cat >/dev/null; ls -l /proc/self/fd > %s/$WEBHOOK_ID; sleep 0.02" % (
            shlex.quote(fds_dir))
        rx = self.receiver("--workers", "32", "--exec", cmd, "--exec-timeout-s", "20",
                           "--max-attempts", "1", handler=False)
        ids, lock = [], threading.Lock()

        def send(n):
            for _ in range(n):
                r, wid = rx.post(record())
                with lock:
                    ids.append((r.status, wid))
        threads = [threading.Thread(target=send, args=(50,)) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(120))
        self.assertEqual(sorted({s for s, _ in ids}), [202], "every event accepted")
        self.assertEqual(len(ids), 500)
        last = {}

        def settled():
            last["rows"] = rx.inbox_rows()
            return sum(1 for row in last["rows"].values() if row[1] in ("done", "failed")) >= 500
        wait_until(settled, T(200), 0.2, what=lambda: "500 events processed (%d so far)" % sum(
            1 for row in last.get("rows", {}).values() if row[1] in ("done", "failed")))
        bad = {w: row for w, row in last["rows"].items() if row[1] != "done"}
        self.assertEqual(bad, {}, "every handler exits 0 well inside its time limit")
        leaks = {}
        for wid in os.listdir(fds_dir):
            with open(os.path.join(fds_dir, wid)) as f:
                fds = dict(m.groups() for m in re.finditer(r" (\d+) -> (.*)", f.read()))
            std = {fds.get(k) for k in ("0", "1", "2")}
            extra = {fd: t for fd, t in fds.items()
                     if t not in std and not t.startswith("/proc/")}
            if extra:
                leaks[wid] = extra
        self.assertEqual(len(os.listdir(fds_dir)), 500)
        self.assertEqual(leaks, {}, "descriptors a handler holds besides stdin, stdout, stderr")

    def test_parent_descriptor_not_inherited(self):
        """A descriptor the receiver got from its own parent (a service manager's socket, a
        shell's open file) is not passed on to handlers."""
        secret_path = os.path.join(self.dir, "parents-file")
        with open(secret_path, "w") as f:
            f.write("not for handlers\n")
        fd = os.open(secret_path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        rx = self.receiver(pass_fds=(fd,))
        r, wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        self.wait_done([wid])
        fds = self.done()[0]["fds"]
        self.assertEqual(sorted(fds), ["0", "1", "2"], "the handler's descriptors: %s" % fds)
        self.assertNotIn(secret_path, fds.values())

    def test_every_payload_env_and_body(self):
        rx = self.receiver()
        files = sorted(f for f in os.listdir(PAYLOADS) if f.endswith(".json"))
        self.assertTrue(files, "payloads in %s" % PAYLOADS)
        sent = {}
        for name in files:
            event = "begin-call" if name.startswith("begin-call") else "end-call"
            self.assertTrue(name.startswith(event), name)
            with open(os.path.join(PAYLOADS, name), "rb") as f:
                body = f.read()
            r, wid = rx.post(body, event=event)
            self.assert_status(r, 202, name)
            sent[wid] = (name, event, body)
        self.wait_done(sent)
        got = {d["env"]["WEBHOOK_ID"]: d for d in self.done()}
        for wid, (name, event, body) in sent.items():
            obj = json.loads(body)

            def field(pascal):
                for k in (pascal, pascal[0].lower() + pascal[1:]):
                    if k in obj and obj[k] not in (None, ""):
                        return str(obj[k])
                return ""
            ct = obj.get("CallType", obj.get("callType"))
            want = {"CALL_EVENT": event, "CALL_ACTIVE_CALL_ID": field("ActiveCallId"),
                    "CALL_CORRELATION_ID": field("CorrelationId"),
                    "CALL_TYPE": "" if ct is None else str(ct),
                    "CALL_TYPE_NAME": ("absent" if ct is None else CALL_TYPE_NAMES[ct]
                                       if 0 <= ct < len(CALL_TYPE_NAMES) else "unknown (%d)" % ct),
                    "WEBHOOK_ID": wid}
            with self.subTest(payload=name):
                self.assertEqual(got[wid]["env"], want, name)
                self.assertEqual(base64.b64decode(got[wid]["body"]), body,
                                 "%s: the raw body byte-identical on stdin" % name)
        self.assertEqual(len(self.runs()), len(files))

    def test_event_from_header(self):
        rx = self.receiver()
        r, wid = rx.post(record(), path="/any/path", headers={"X-Call-Event": "begin-call"})
        self.assert_status(r, 202, "X-Call-Event: begin-call on another path")
        # Assumption: a POST whose event is neither in the path nor in X-Call-Event is refused
        # with a 4xx (the help lists no status for it; the code answers 404).
        r, _ = rx.post(record(), path="/hooks/somewhere-else")
        self.assertTrue(400 <= r.status < 500, "no event in path or header: refused, %r" % r)
        self.wait_done([wid])
        self.assertEqual(self.done()[0]["env"]["CALL_EVENT"], "begin-call")
        self.assertEqual(list(rx.inbox_rows()), [wid])

    def test_routing(self):
        missed = os.path.join(self.dir, "missed.jsonl")
        rx = self.receiver("--route", "end-call/MissedCall=jsonl:" + missed,
                           "--route", "*/OutboundCall,5=exec:" + self.handler_cmd("outbound"),
                           "--exec", self.handler_cmd("default"), handler=False)
        cases = [("end-call", 2, "missed"), ("end-call", 42, "default"),
                 ("begin-call", 2, "default"), ("end-call", None, "default"),
                 ("end-call", 5, "outbound"), ("begin-call", 8, "outbound"),
                 ("end-call", 1, "default")]
        where = {}
        for event, ct, dest in cases:
            r, wid = rx.post(record(call_type=ct), event=event)
            self.assert_status(r, 202, "%s CallType %s" % (event, ct))
            where[wid] = (event, ct, dest)
        exec_ids = [w for w, c in where.items() if c[2] != "missed"]
        self.wait_done(exec_ids)
        missed_ids = [w for w, c in where.items() if c[2] == "missed"]
        wait_until(lambda: set(missed_ids) <= {x["webhookId"] for x in read_jsonl(missed)},
                   T(10), what="the MissedCall in %s" % missed)
        tags = {d["env"]["WEBHOOK_ID"]: d["tag"] for d in self.done()}
        for wid, (event, ct, dest) in where.items():
            with self.subTest(event=event, call_type=ct):
                if dest == "missed":
                    self.assertNotIn(wid, tags, "a MissedCall end-call goes to its route only")
                else:
                    self.assertEqual(tags.get(wid), dest, "%s CallType %s" % (event, ct))
        lines = read_jsonl(missed)
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["event"], "end-call")
        self.assertEqual(lines[0]["record"]["CallType"], 2)

    def test_jsonl_handler(self):
        out = os.path.join(self.dir, "events.jsonl")
        rx = self.receiver("--jsonl", out, handler=False)
        sent = {}
        for name in sorted(os.listdir(PAYLOADS)):
            event = "begin-call" if name.startswith("begin-call") else "end-call"
            with open(os.path.join(PAYLOADS, name), "rb") as f:
                body = f.read()
            r, wid = rx.post(body, event=event)
            self.assert_status(r, 202, name)
            sent[wid] = (event, json.loads(body))
        wait_until(lambda: len(read_jsonl(out)) >= len(sent), T(10),
                   what="%d lines in %s" % (len(sent), out))
        lines = {x["webhookId"]: x for x in read_jsonl(out)}
        self.assertEqual(set(lines), set(sent))
        for wid, (event, obj) in sent.items():
            self.assertEqual(lines[wid]["event"], event)
            self.assertEqual(lines[wid]["record"], obj)

    def test_jsonl_big_integer(self):
        """A record the front accepts (an integer past 64 bits in a field callhook does not
        read) must be processable by the built-in jsonl handler too."""
        out = os.path.join(self.dir, "events.jsonl")
        rx = self.receiver("--jsonl", out, "--max-attempts", "2", "--retry-base-ms", "100",
                           handler=False)
        body = record()[:-1] + b', "Big": 123456789012345678901234567890}'
        r, wid = rx.post(body)
        self.assert_status(r, 202, "a big integer in an unread field")
        last = {}

        def settled():
            last["row"] = rx.inbox_rows().get(wid)
            return last["row"] and last["row"][1] in ("done", "failed")
        wait_until(settled, T(10), what="the event processed or parked")
        self.assertEqual(last["row"][1], "done",
                         "the jsonl handler processes what the front accepted: %s" % (last["row"],))


class Crash(ReceiveCase):
    """kill -9 after events were acknowledged and before they were processed."""

    def test_kill9_before_processing(self):
        self.set_mode("block")
        rx = self.receiver("--workers", "1", "--exec-timeout-s", "120")
        acked = []
        for i in range(6):
            r, wid = rx.post(record(call_type=i % 9), event=("begin-call", "end-call")[i % 2])
            self.assert_status(r, 202, "event %d" % i)
            acked.append(wid)
        wait_until(lambda: len(self.runs()) >= 1, T(10), what="the first handler running")
        self.assertEqual(self.done(), [], "nothing processed before the crash")
        rows = rx.inbox_rows()
        self.assertEqual(sorted(s for _, s, _, _ in rows.values()),
                         ["pending"] * 5 + ["running"], rows)
        rx.kill9()
        blocked = self.runs()[0]
        # The handler left behind should hold nothing of the dead receiver's (a listening
        # socket would keep the port; a client connection would keep a sender waiting).
        leaked, seen = [], []
        try:
            for fd in os.listdir("/proc/%d/fd" % blocked["pid"]):
                seen.append(fd)
                try:
                    target = os.readlink("/proc/%d/fd/%s" % (blocked["pid"], fd))
                except OSError:
                    continue
                if target.startswith("socket:") or "inbox.db" in target:
                    leaked.append((fd, target))
        except OSError:
            pass
        self.assertTrue(seen, "the blocked handler (pid %d) outlives the receiver and its file "
                        "descriptors can be looked at" % blocked["pid"])
        self._kill_handlers()
        self.set_mode("ok")
        rx.start()
        self.wait_done(acked, T(20))
        time.sleep(T(0.3))
        counts = {w: self.done_ids().count(w) for w in acked}
        self.assertEqual(set(counts.values()), {1}, "each acknowledged event processed once "
                         "(the interrupted one's first run was killed): %s" % counts)
        rows = rx.inbox_rows()
        self.assertEqual({w: rows[w][1] for w in acked}, {w: "done" for w in acked})
        self.assertRegex(rx.logs(), r"1 events? interrupted")
        self.assertEqual(leaked, [], "file descriptors of the receiver inherited by the handler")

    def test_kill9_under_load(self):
        """Many events, two slow-ish workers, kill -9 right after the last acknowledgement:
        after a restart every acknowledged event is processed (at least once; at most the
        in-flight ones twice)."""
        self.set_mode("sleep 0.2")
        rx = self.receiver("--workers", "2")
        acked = []
        lock = threading.Lock()

        def send(n):
            for _ in range(n):
                r, wid = rx.post(record())
                if r.status == 202:
                    with lock:
                        acked.append(wid)

        threads = [threading.Thread(target=send, args=(15,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(30))
        self.assertEqual(len(acked), 60)
        rx.kill9()
        before = len(set(self.done_ids()))
        self._kill_handlers()
        self.set_mode("ok")
        rx.start()
        self.wait_done(acked, T(30))
        ids = self.done_ids()
        extra = len(ids) - len(set(ids))
        self.assertLessEqual(extra, 2, "only events in flight at the crash run twice")
        self.assertLess(before, len(acked), "the kill came before everything was processed")
        print("  %d acknowledged, %d processed before the kill, %d run twice" % (
            len(acked), before, extra), file=sys.stderr)

    def test_sigterm_under_load(self):
        """SIGTERM while senders keep posting on kept-alive connections: exit status 0 in
        time, and every event that got a 202 or 200 is in the inbox and gets processed (by the
        jsonl handler: no process to start per event)."""
        out = os.path.join(self.dir, "events.jsonl")
        rx = self.receiver("--workers", "2", "--jsonl", out, handler=False)
        acked, others = [], []
        lock = threading.Lock()
        stop = threading.Event()

        def sender():
            conn = http.client.HTTPConnection(HOST, rx.port, timeout=T(10))
            try:
                for _ in range(150):
                    if stop.is_set():
                        break
                    body, wid, ts = record(), new_id(), int(time.time())
                    conn.request("POST", "/hooks/end-call", body, {
                        "webhook-id": wid, "webhook-timestamp": str(ts),
                        "webhook-signature": sign_v1(self.secret, wid, ts, body)})
                    resp = conn.getresponse()
                    resp.read()
                    with lock:
                        (acked if resp.status in (200, 202) else others).append(
                            (wid, resp.status))
            except (OSError, http.client.HTTPException):
                pass  # the receiver went away
            finally:
                conn.close()

        threads = [threading.Thread(target=sender) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 40, T(10), what="40 events acknowledged")
        t0 = time.monotonic()
        code = rx.stop(T(15))
        took = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(T(15))
        self.assertEqual(code, 0, "SIGTERM under load: exit status 0")
        self.assertLess(took, T(10), "and soon")
        self.assertGreater(len(acked), 10, "the senders got going")
        # Assumption: what arrives while stopping is either stored (202/200) or refused with
        # 503 (front.c: "shutting down; send it again"), never a 2xx that was not stored.
        self.assertTrue(all(s == 503 for _, s in others),
                        "refused while stopping only with 503: %s" % others[:5])
        print("  %d acknowledged, %d refused with 503 while stopping, stopped in %.2fs" % (
            len(acked), len(others), took), file=sys.stderr)
        rows = rx.inbox_rows()
        self.assertEqual([w for w, _ in acked if w not in rows], [],
                         "acknowledged means stored")
        rx.start()
        want = {w for w, _ in acked}
        wait_until(lambda: want <= {x["webhookId"] for x in read_jsonl(out)}, T(20),
                   what="every acknowledged event in %s" % out)

    def test_sigterm_finishes_running_handler(self):
        self.set_mode("sleep 1")
        rx = self.receiver("--workers", "1")
        r, wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        wait_until(lambda: self.runs(), T(10), what="the handler running")
        self.assertEqual(rx.stop(), 0, "SIGTERM while a handler runs: exit status 0")
        self.assertEqual(self.done_ids(), [wid], "the running handler was let finish")
        self.assertRegex(rx.logs(), r"stopped cleanly")
        rx.start()
        time.sleep(T(0.5))
        self.assertEqual(len(self.runs()), 1, "a finished event does not run again")
        self.assertEqual(rx.inbox_rows()[wid][1], "done")


class Transport(ReceiveCase):
    """HTTPS, client certificates, the shared-secret header, and refusing plain HTTP."""

    def run_to_exit(self, *args, secrets=None, timeout=None):
        rx = self.receiver(*args, secrets=secrets if secrets is not None else [self.secret],
                           handler=False, start=False, insecure=False)
        rx.expect_fail = True
        rx.spawn()
        try:
            code = rx.proc.wait(T(10) if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            rx.stop()
            self.fail("receive %s kept running; it should refuse to start" % " ".join(args))
        rx._reaped(code)
        return code, rx.logs()

    def test_plain_http_refused_at_start(self):
        code, log = self.run_to_exit("--exec", "true")
        self.assertNotEqual(code, 0, "no TLS files and no --insecure-http: " + log)
        self.assertRegex(log, r"--insecure-http", "the message says what to do")
        self.assertRegex(log, r"--tls-cert")
        pki = make_pki(self.dir)
        code, log = self.run_to_exit("--tls-cert", pki["server"] + ".pem")
        self.assertNotEqual(code, 0, "a certificate without its key: " + log)
        code, log = self.run_to_exit("--insecure-http", "--tls-client-ca", pki["ca"] + ".pem")
        self.assertNotEqual(code, 0, "client certificates over plain HTTP: " + log)
        code, log = self.run_to_exit("--insecure-http", secrets=[])
        self.assertNotEqual(code, 0, "no key at all: " + log)
        self.assertRegex(log, r"--secret")
        code, log = self.run_to_exit("--tls-cert", self.handler_path, "--tls-key",
                                     self.handler_path)
        self.assertNotEqual(code, 0, "files that are no certificate: " + log)
        # --insecure-http is the way to plain HTTP.
        rx = self.receiver()
        r, _ = rx.post(record())
        self.assert_status(r, 202, "with --insecure-http")

    def test_port_in_use(self):
        first = self.receiver()
        second = Receive(self.dir + "/second", ["--exec", "true"], secrets=[self.secret])
        os.makedirs(second.workdir)
        second.port = first.port
        second.expect_fail = True
        self.receivers.append(second)
        second.spawn()
        try:
            code = second.proc.wait(T(10))
        except subprocess.TimeoutExpired:
            self.fail("a second receiver on a port in use kept running")
        second._reaped(code)
        self.assertNotEqual(code, 0)
        self.assertRegex(second.logs(), r"cannot listen")
        self.assert_status(first.request("GET", "/healthz"), 200, "the first one is unharmed")

    def test_https(self):
        pki = make_pki(self.dir)
        rx = self.receiver("--tls-cert", pki["server"] + ".pem", "--tls-key",
                           pki["server"] + ".key", insecure=False,
                           client_ctx=client_context(pki))
        r, wid = rx.post(record())
        self.assert_status(r, 202, "HTTPS, certificate checked for 127.0.0.1")
        with self.assertRaises((OSError, http.client.HTTPException),
                               msg="plain HTTP to the HTTPS port gets no HTTP answer"):
            r = rx.request("POST", "/hooks/end-call", record(), {}, timeout=5, ctx=None)
            raise AssertionError("plain HTTP got an answer: %r" % r)
        self.wait_done([wid])

    def test_client_certificates(self):
        pki = make_pki(self.dir)
        rx = self.receiver("--tls-cert", pki["server"] + ".pem", "--tls-key",
                           pki["server"] + ".key", "--tls-client-ca", pki["ca"] + ".pem",
                           insecure=False, client_ctx=client_context(pki, "client"))
        r, wid = rx.post(record())
        self.assert_status(r, 202, "a client with a certificate from the CA")
        for who, ctx in (("no client certificate", client_context(pki)),
                         ("a certificate from another CA", client_context(pki, "stranger"))):
            for path in ("/hooks/end-call", "/healthz"):
                try:
                    if path == "/healthz":
                        got = rx.request("GET", path, timeout=5, ctx=ctx)
                    else:
                        got, _ = rx.post(record(), ctx=ctx, timeout=5)
                except (OSError, http.client.HTTPException):
                    continue  # no answer: right
                self.fail("%s, %s: got an answer %r" % (who, path, got))
        rows = rx.inbox_rows()
        self.assertEqual(set(rows), {wid}, "nothing from refused clients is stored")
        # curl, another TLS stack, with the good certificate.
        curl = shutil.which("curl")
        if curl:
            body, cid, ts = record(), new_id(), int(time.time())
            body_file = os.path.join(self.dir, "curl-body.json")
            with open(body_file, "wb") as f:
                f.write(body)
            env = {k: v for k, v in os.environ.items() if k not in harness.PROXY_VARS}
            p = subprocess.run(
                [curl, "-sS", "--noproxy", "*", "--max-time", str(int(T(10))), "--cacert",
                 pki["ca"] + ".pem", "--cert", pki["client"] + ".pem", "--key",
                 pki["client"] + ".key", "-o", "/dev/null", "-w", "%{http_code}",
                 "-H", "webhook-id: " + cid, "-H", "webhook-timestamp: %d" % ts,
                 "-H", "webhook-signature: " + sign_v1(self.secret, cid, ts, body),
                 "-H", "Content-Type: application/json", "--data-binary", "@" + body_file,
                 "https://127.0.0.1:%d/hooks/begin-call" % rx.port],
                capture_output=True, text=True, timeout=T(20), env=env)
            self.assertEqual(p.stdout.strip(), "202", "curl with a good certificate: %s" %
                             p.stderr)
            p = subprocess.run(
                [curl, "-sS", "--noproxy", "*", "--max-time", str(int(T(10))), "--cacert",
                 pki["ca"] + ".pem", "-o", "/dev/null", "-w", "%{http_code}",
                 "https://127.0.0.1:%d/healthz" % rx.port],
                capture_output=True, text=True, timeout=T(20), env=env)
            self.assertNotEqual(p.returncode, 0, "curl without a certificate gets no answer")
            self.assertEqual(p.stdout.strip(), "000")

    def test_require_header(self):
        rx = self.receiver("--require-header", "X-Hook-Token=s3cr3t-Value")
        for what, h in (("missing", {}), ("wrong", {"X-Hook-Token": "s3cr3t-ValuX"}),
                        ("a prefix", {"X-Hook-Token": "s3cr3t"}),
                        ("longer", {"X-Hook-Token": "s3cr3t-Value2"}),
                        ("other case", {"X-Hook-Token": "S3CR3T-VALUE"}),
                        ("empty", {"X-Hook-Token": ""})):
            r, _ = rx.post(record(), headers=h)
            self.assert_401(r, r"X-Hook-Token", "shared-secret header %s" % what)
            self.assertNotIn(b"s3cr3t", r.body, "the answer does not tell the value")
        r, wid = rx.post(record(), headers={"X-Hook-Token": "s3cr3t-Value"})
        self.assert_status(r, 202, "the right header")
        r, wid2 = rx.post(record(), headers={"x-hook-token": "s3cr3t-Value"})
        self.assert_status(r, 202, "the right header, name in lower case")
        r, _ = rx.post(record(), headers={"X-Hook-Token": "s3cr3t-Value"}, secret=new_secret())
        self.assert_401(r, r"signature", "the right header does not replace the signature")
        self.assertEqual(set(rx.inbox_rows()), {wid, wid2})


class Settings(ReceiveCase):
    """--config FILE, then the environment, then flags (`callhook receive --help`)."""

    def test_config_file_and_environment(self):
        conf = os.path.join(self.dir, "receive.conf")
        with open(conf, "w") as f:
            f.write("# a comment\nsecret = %s\ninsecure-http = true\nlisten = 127.0.0.1:9\n"
                    "exec = %s\n" % (self.secret, self.handler_cmd("config")))
        rx = self.receiver("--config", conf, secrets=[], insecure=False, handler=False,
                           env={"CALLHOOK_RECEIVE_REQUIRE_HEADER": "X-Env=on"})
        rx.secrets = [self.secret]
        r, _ = rx.post(record())
        self.assert_401(r, r"X-Env", "the environment's --require-header")
        r, wid = rx.post(record(), headers={"X-Env": "on"})
        self.assert_status(r, 202, "the config file's secret (and the flag's --listen)")
        self.wait_done([wid])
        self.assertEqual(self.done()[0]["tag"], "config")

    def test_flag_overrides_environment(self):
        """CALLHOOK_RECEIVE_EXEC in the environment and --exec on the command line: the flag
        wins, as "Settings come from --config FILE, then the environment, then flags" says
        (a service's environment file plus a one-off flag)."""
        rx = self.receiver("--exec", self.handler_cmd("flag"), handler=False, start=False,
                           env={"CALLHOOK_RECEIVE_EXEC": self.handler_cmd("env")})
        try:
            rx.start()
        except ReceiveError as e:
            rx.expect_fail = True
            self.fail("--exec with CALLHOOK_RECEIVE_EXEC set: the flag should override the "
                      "environment, but receive did not start: %s" % e)
        r, wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        self.wait_done([wid])
        self.assertEqual(self.done()[0]["tag"], "flag")


class Secrets(ReceiveCase):
    """Keys off the command line (@FILE, env:NAME), and no secret in a handler's environment."""

    def write_key_file(self, name, text, mode):
        path = os.path.join(self.dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.write(fd, text.encode())
        os.close(fd)
        os.chmod(path, mode)
        return path

    def test_secret_from_file_and_environment(self):
        path = self.write_key_file("webhook.secret", self.secret + "\n", 0o600)
        rx = self.receiver("--secret", "@" + path, secrets=[])
        rx.secrets = [self.secret]
        r, wid = rx.post(record())
        self.assert_status(r, 202, "signed with the secret of --secret @FILE")
        r, _ = rx.post(record(), secret=new_secret())
        self.assert_401(r, r"signature", "another secret")
        with open("/proc/%d/cmdline" % rx.proc.pid, "rb") as f:
            cmdline = f.read()
        self.assertNotIn(self.secret.encode(), cmdline, "the secret is not on the command line")
        self.assertNotIn(self.secret.split("_", 1)[1].encode(), cmdline)
        self.wait_done([wid])
        self.assertEqual(rx.stop(), 0)
        rx2 = self.receiver("--secret", "env:MY_HOOK_SECRET", secrets=[],
                            env={"MY_HOOK_SECRET": self.secret})
        rx2.secrets = [self.secret]
        r, wid2 = rx2.post(record())
        self.assert_status(r, 202, "signed with the secret of --secret env:NAME")
        self.wait_done([wid, wid2])

    def refused(self, args, env=None):
        """Runs receive with args, which must refuse to start: (exit status, stderr)."""
        cmd = [BIN, "receive", "--insecure-http", "--listen", "%s:%d" % (HOST, free_port()),
               "--store", os.path.join(self.dir, "inbox.db")] + list(args)
        full = {k: v for k, v in os.environ.items() if not k.startswith("CALLHOOK_RECEIVE_")}
        full.update(env or {})
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=T(10),
                               stdin=subprocess.DEVNULL, cwd=self.dir)
        except subprocess.TimeoutExpired:
            self.fail("receive %s started instead of refusing" % args)
        return p.returncode, p.stderr

    def test_key_source_errors(self):
        loose = self.write_key_file("loose.secret", self.secret, 0o644)
        empty = self.write_key_file("empty.secret", "\n", 0o600)
        cases = (
            (["--secret", "@" + os.path.join(self.dir, "nope")], None, r"cannot open '.*nope'"),
            (["--secret", "@" + loose], None, r"group or others.*0644.*chmod 600"),
            (["--secret", "@" + empty], None, r"empty"),
            (["--secret", "env:NO_SUCH_HOOK_SECRET"], None, r"NO_SUCH_HOOK_SECRET is not set"),
            (["--public-key", "env:NO_SUCH_KEY"], None, r"NO_SUCH_KEY is not set"),
            (["--secret", "env:WEBHOOK_SECRET", "--handler-env", "WEBHOOK_SECRET"],
             {"WEBHOOK_SECRET": self.secret}, r"WEBHOOK_SECRET.*receiver's key"),
            (["--secret", self.secret, "--handler-env", "CALLHOOK_RECEIVE_SECRET"], None,
             r"CALLHOOK_RECEIVE_SECRET is a setting of callhook"),
            (["--secret", self.secret, "--handler-env", "NOT-A-NAME"], None,
             r"not a variable name"),
            (["--secret", self.secret, "--handler-env", "WEBHOOK_ID"], None,
             r"set by the receiver"),
        )
        for args, env, want in cases:
            with self.subTest(args=args):
                code, err = self.refused(args, env)
                self.assertEqual(code, 2, "refused as a usage error: %s" % err)
                self.assertRegex(err, want)
                self.assertNotIn(self.secret, err, "the error does not show the secret")

    def test_handler_environment_is_an_allow_list(self):
        rx = self.receiver("--secret", "env:WEBHOOK_SECRET", "--handler-env", "FOO", secrets=[],
                           env={"WEBHOOK_SECRET": self.secret, "FOO": "bar", "BAZ": "qux",
                                "LC_TIME": "C", "LANG": "C.UTF-8", "HOME": self.dir,
                                "DATABASE_PASSWORD": "hunter2",
                                "CALLHOOK_RECEIVE_EXEC_TIMEOUT_S": "20"})
        rx.secrets = [self.secret]
        r, wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        self.wait_done([wid])
        env = self.done()[0]["environ"]
        self.assertNotIn("WEBHOOK_SECRET", env)
        self.assertNotIn("DATABASE_PASSWORD", env)
        self.assertNotIn("BAZ", env)
        self.assertEqual([k for k in env if k.startswith("CALLHOOK_")], [])
        for k, v in env.items():
            self.assertNotIn(self.secret.split("_", 1)[1], v, "the secret in %s" % k)
        self.assertEqual((env.get("FOO"), env.get("LC_TIME"), env.get("LANG"), env.get("HOME")),
                         ("bar", "C", "C.UTF-8", self.dir), "--handler-env FOO, LC_*, LANG, HOME")
        self.assertEqual(env.get("PATH"), os.environ.get("PATH"))
        allowed = set(ENV_KEYS) | {"PATH", "HOME", "LANG", "FOO", "CH_TEST_DIR",
                                   "PWD"}  # PWD: /bin/sh sets it
        self.assertEqual(sorted(k for k in env if k not in allowed and not k.startswith("LC_")),
                         [], "nothing but the allow-list")


def raw_controls(text):
    """The characters of text a terminal could obey: C0 but line feed and tab, DEL, C1."""
    return sorted({c for c in text
                   if (ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f})


class ControlCharacters(ReceiveCase):
    """Escaped control characters in a record reach no handler variable, terminal or JSON line
    raw."""

    def test_handler_variables_escaped(self):
        rx = self.receiver()
        body = (b'{"ActiveCallId": "call-\\u001b[31mred\\u0007", "CorrelationId": "c\\u009b2J\\n",'
                b' "CallType": 2}')
        r, wid = rx.post(body)
        self.assert_status(r, 202, "ids with escaped control characters")
        self.wait_done([wid])
        env = self.done()[0]["env"]
        self.assertEqual(env["CALL_ACTIVE_CALL_ID"], "call-\\x1b[31mred\\x07")
        self.assertEqual(env["CALL_CORRELATION_ID"], "c\\u009b2J\\x0a")
        self.assertEqual(base64.b64decode(self.done()[0]["body"]), body, "stdin: as received")
        for k, v in self.done()[0]["environ"].items():
            self.assertEqual(raw_controls(v), [], "a control character in %s=%r" % (k, v))

    def test_inbox_output_escaped(self):
        """`callhook inbox list` and `show`: the call id, the handler's stderr and the body show
        no control character raw; the body shown is still the same JSON."""
        cmd = "cat >/dev/null; printf '\\033[2J\\033]0;owned\\007 gone\\r\\n' >&2; exit 3"
        rx = self.receiver("--exec", cmd, "--max-attempts", "1", handler=False)
        body = ('{"ActiveCallId": "x\\u001b]0;title\\u0007", "CallType": 2,\r\n'
                '\t"Note": "del \x7f c1 \u009b2J caf\u00e9 \\u001b[31m"}').encode()
        r, wid = rx.post(body)
        self.assert_status(r, 202, "accepted")
        self.wait_inbox(rx, wid, "failed", T(10))
        for sub in (("list",), ("list", "--status", "failed"), ("show", wid)):
            p = rx.inbox(*sub)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(raw_controls(p.stdout), [],
                             "callhook inbox %s writes: %r" % (" ".join(sub), p.stdout))
        show = rx.inbox("show", wid).stdout
        self.assertIn("\\x1b]0;title\\x07", show, "the call id, escaped")
        self.assertIn("\\x1b[2J", show, "the handler's stderr, escaped")
        shown = show.split("):\n", 1)[1]
        self.assertEqual(json.loads(shown), json.loads(body), "the body shown means the same")
        self.assertIn("\\u001b[31m", shown, "an escape in the record stays text")

    def test_jsonl_lines_always_valid(self):
        """Every line the JSON-lines handler writes is valid JSON, whatever the accepted body
        holds: escaped control characters, non-ASCII text, raw DEL and C1, line breaks and tabs
        between tokens, a NUL after a number (if the front accepts it)."""
        out = os.path.join(self.dir, "events.jsonl")
        rx = self.receiver("--jsonl", out, handler=False)
        bodies = [
            b'{"ActiveCallId": "a\\u0001b\\u001b[2J\\u0007", "CallType": 1}',
            '{"Name": "Zo\u00eb \u00e9t\u00e9 \u20ac \U0001f4de", "CallType": 2}'.encode(),
            b'{"Note": "\\ud83d\\udcde \\u2028 \\u2029", "CallType": 3}',
            '{"Raw": "del \x7f c1 \u0085 \u009b", "CallType": 4}'.encode(),
            b'{\r\n\t"CallType": 5,\r\n\t"Pad": "x"\r\n}\r\n',
            b'{"CallType": 6, "Big": 123456789012345678901234567890}',
            b'{"CallType": 7, "n": 1\x00}',
            b'{"CallType": 8, "quote": "\\" \\\\ \\/ \\b \\f \\n \\r \\t"}',
        ]
        accepted = {}
        for body in bodies:
            r, wid = rx.post(body)
            # A NUL byte outside a string is not JSON: refused before it reaches a handler.
            self.assertEqual(r.status, 400 if b"\x00" in body else 202, "%r: %r" % (body, r))
            if r.status == 202:
                accepted[wid] = body
        for body in (b'{"ActiveCallId": "a\\u0000b", "CallType": 1}',):
            r, _ = rx.post(body)  # an escaped NUL: refused, as jansson refuses it
            self.assertEqual(r.status, 400, "%r: %r" % (body, r))
        self.assertEqual(len(accepted), len(bodies) - 1)
        wait_until(lambda: os.path.exists(out) and
                   open(out, "rb").read().count(b"\n") >= len(accepted), T(10),
                   what="%d lines in %s" % (len(accepted), out))
        with open(out, "rb") as f:
            lines = f.read().split(b"\n")
        self.assertEqual(lines[-1], b"", "the file ends with a line end")
        got = {}
        for line in lines[:-1]:
            try:
                obj = json.loads(line.decode("utf-8"))
            except ValueError as e:
                self.fail("not a valid JSON line (%s): %r" % (e, line))
            got[obj["webhookId"]] = obj
        self.assertEqual(set(got), set(accepted))
        for wid, body in accepted.items():
            self.assertEqual(got[wid]["record"], json.loads(body), body)


class Http(ReceiveCase):
    """Answers to what is not a call event."""

    def test_body_limit(self):
        rx = self.receiver("--max-body-bytes", "2048")
        base = record()
        pad = 2048 - len(base) - len(b', "Pad": ""')
        exact = base[:-1] + b', "Pad": "' + b"x" * pad + b'"}'
        self.assertEqual(len(exact), 2048)
        r, wid = rx.post(exact)
        self.assert_status(r, 202, "exactly --max-body-bytes")
        over = record()[:-1] + b', "Pad": "' + b"x" * pad + b'"} '
        self.assertEqual(len(over), 2049)
        r, _ = rx.post(over)
        self.assert_status(r, 413, "one byte over")
        r, _ = rx.post(record(Pad="y" * 100000))
        self.assert_status(r, 413, "100 kB")
        body, cid, ts = record(Pad="z" * 4000), new_id(), int(time.time())

        def chunks():
            for i in range(0, len(body), 1000):
                yield body[i:i + 1000]
        h = {"webhook-id": cid, "webhook-timestamp": str(ts),
             "webhook-signature": sign_v1(self.secret, cid, ts, body)}  # http.client chunks
        r = rx.request("POST", "/hooks/end-call", chunks(), h)
        self.assert_status(r, 413, "chunked, no Content-Length, over the limit")
        self.assertEqual(set(rx.inbox_rows()), {wid})

    def test_methods(self):
        rx = self.receiver()
        r = rx.request("GET", "/healthz")
        self.assert_status(r, 200, "GET /healthz")
        for method, path in (("GET", "/hooks/end-call"), ("GET", "/"), ("PUT", "/hooks/end-call"),
                             ("DELETE", "/hooks/begin-call")):
            r = rx.request(method, path)
            self.assert_status(r, 405, "%s %s" % (method, path))
        r = rx.request("POST", "/healthz", record(), {})
        self.assertNotEqual(r.status, 200, "POST /healthz is no health check")

    def test_not_an_object(self):
        rx = self.receiver()
        for what, body in (("an array", b"[1]"), ("a string", b'"x"'), ("a number", b"42"),
                           ("null", b"null"), ("invalid JSON", b'{"ActiveCallId": '),
                           ("empty", b""), ("duplicate keys",
                                            b'{"ActiveCallId": "a", "ActiveCallId": "b"}')):
            r, _ = rx.post(body)
            self.assert_status(r, 400, "a signed body that is %s" % what)
        r, _ = rx.post(b"[1]", secret=new_secret())
        self.assert_status(r, 401, "unsigned [1]: the signature is checked first")
        self.assertEqual(rx.inbox_rows(), {})

    def test_keep_alive(self):
        """Several requests on one connection (as a sender's connection pool does)."""
        rx = self.receiver()
        conn = http.client.HTTPConnection(HOST, rx.port, timeout=10)
        got, ids = [], []
        try:
            for i in range(5):
                body, wid, ts = record(), new_id(), int(time.time())
                if i == 3:
                    wid = ids[0]  # a duplicate in the middle
                conn.request("POST", "/hooks/end-call", body, {
                    "webhook-id": wid, "webhook-timestamp": str(ts),
                    "webhook-signature": sign_v1(self.secret, wid, ts, body)})
                resp = conn.getresponse()
                resp.read()
                got.append(resp.status)
                ids.append(wid)
            conn.request("GET", "/hooks/x")
            resp = conn.getresponse()
            resp.read()
            got.append(resp.status)
        finally:
            conn.close()
        self.assertEqual(got, [202, 202, 202, 200, 202, 405])
        self.wait_done(set(ids))

    def test_sigterm(self):
        rx = self.receiver()
        r, wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        self.wait_done([wid])
        self.assertEqual(rx.stop(), 0, "SIGTERM: exit status 0")
        self.assertRegex(rx.logs(), r"stopped cleanly")
        with self.assertRaises(OSError):
            rx.request("GET", "/healthz", timeout=2)

    def test_logs_without_personal_data(self):
        """Failing handlers, refused requests and every payload: the log (checked for every
        receiver in the clean-up) has no phone number, e-mail address or name in it."""
        self.set_mode("fail")
        rx = self.receiver("--max-attempts", "2", "--retry-base-ms", "50")
        ids = []
        for name in sorted(os.listdir(PAYLOADS)):
            event = "begin-call" if name.startswith("begin-call") else "end-call"
            with open(os.path.join(PAYLOADS, name), "rb") as f:
                body = f.read()
            r, wid = rx.post(body, event=event)
            self.assert_status(r, 202, name)
            ids.append(wid)
            rx.post(body[:-3], event=event)  # a 401
            rx.post(body, event=event, msg_id=wid)  # a 200
        rx.post(record(Pad="+15550100123" * 30000))  # a 413
        for wid in ids:
            self.wait_inbox(rx, wid, "failed", T(15))
        self.assertEqual(rx.stop(), 0)
        text = rx.logs()
        self.assertRegex(text, r"parked", "the log says what was parked")
        for pat in PII_PATTERNS:
            self.assertIsNone(pat.search(text), "personal data in the log: %s" % pat.pattern)


def rss_kib(pid):
    """The resident memory of process pid, in KiB (VmRSS in /proc/PID/status)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for process %d" % pid)


class SlowClients(ReceiveCase):
    """A body is read only once the headers pass: unsigned clients cannot make the receiver hold
    memory (issue 12, point 1)."""

    SOCKETS = 500

    def test_slow_unsigned_uploads_hold_no_memory(self):
        rx = self.receiver()
        r, first = rx.post(record())
        self.assert_status(r, 202, "a signed event before")
        self.wait_done([first])
        before = rss_kib(rx.proc.pid)
        old = int(time.time()) - 3600
        socks, ids, answers = [], [], []
        chunk = b"x" * 4096

        def trickle():
            for c in socks:
                try:
                    c.sendall(chunk)
                except OSError:
                    pass  # answered and closed: what should happen
            time.sleep(0.1)
        try:
            for i in range(self.SOCKETS):
                c = socket.create_connection((HOST, rx.port), timeout=T(5))
                # Half carry signature headers with an hour-old timestamp, half none at all;
                # each declares 128 KiB of body and sends it slowly, 4 KiB at a time.
                sig = (b"webhook-id: msg_slow%d\r\nwebhook-timestamp: %d\r\n"
                       b"webhook-signature: v1,%s=\r\n" % (i, old, b"A" * 43)) if i % 2 else b""
                c.sendall(b"POST /hooks/end-call HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 131072\r\n" + sig +
                          b"\r\n")
                socks.append(c)
            for _ in range(16):
                trickle()
            during = rss_kib(rx.proc.pid)  # with 64 KiB sent on each
            # Signed events go on meanwhile (after the measurement: under the sanitizer each
            # accepted event leaves memory in its quarantine, which is not what is measured).
            for _ in range(5):
                r, wid = rx.post(record())
                self.assert_status(r, 202, "a signed event among the slow uploads")
                ids.append(wid)
                trickle()
            deadline = time.monotonic() + T(10)
            for c in socks:
                c.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    answers.append(c.recv(200))
                except OSError:
                    answers.append(b"")
        finally:
            for c in socks:
                c.close()
        self.wait_done(ids)
        self.assertEqual(set(rx.inbox_rows()), {first} | set(ids), "nothing else is stored")
        grew = "the receiver's RSS grew by %d KiB (from %d KiB) for %d unsigned uploads" % (
            during - before, before, self.SOCKETS)
        answered = sum(1 for a in answers if a.startswith(b"HTTP/1.1 401"))
        self.assertEqual(answered, self.SOCKETS, "every slow upload is answered 401 from its "
                         "headers; not so: %r (%s)" % ([a[:40] for a in answers
                                                       if not a.startswith(b"HTTP/1.1 401")][:3],
                                                      grew))
        # The bound: libmicrohttpd's bookkeeping of a connection and the sanitizer build's
        # overhead, 32 KiB per connection (16 MiB for 500). Holding the 64 KiB each has sent
        # would be 32 MiB more.
        self.assertLess(during - before, 32 * self.SOCKETS, grew)


def metric(text, name, **labels):
    """The value of one sample of a Prometheus text exposition; None when absent."""
    want = name + ("{%s}" % ",".join('%s="%s"' % kv for kv in labels.items()) if labels else "")
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == want:
            return float(value)
    return None


class Visibility(ReceiveCase):
    """What the receiver says about its traffic: refusals and duplicates in the log (rate-
    limited), /metrics, `callhook inbox stats`."""

    def log_lines(self, rx, pattern):
        return [l for l in rx.logs().splitlines() if re.search(pattern, l)]

    def test_refusals_are_logged_rate_limited(self):
        """Dozens of 401s from a misconfigured sender: one line per reason per interval, with
        the remote address and the reason, then one line counting the others."""
        rx = self.receiver("--refusal-log-s", "2")
        t0 = time.monotonic()
        for _ in range(12):
            r, _ = rx.post(record(), secret=new_secret())
            self.assert_401(r, r"signature", "signed with another secret")
        for _ in range(3):
            r, _ = rx.post(record(), omit=("webhook-signature",))
            self.assert_401(r, r"webhook-signature", "no signature header")
        r, _ = rx.post(record(), ts=int(time.time()) - 3600)
        self.assert_401(r, r"past", "an hour old")
        r = rx.request("GET", "/hooks/end-call")
        self.assertEqual(r.status, 405)
        r = rx.request("POST", "/hooks/nothing", b"{}")
        self.assertEqual(r.status, 404)
        r, _ = rx.post(b"[1]")
        self.assertEqual(r.status, 400, r)
        sent = time.monotonic() - t0
        first = {
            r"refused 401 signature from 127\.0\.0\.1: no signature in webhook-signature matches":
                1,
            r"refused 401 signature_headers from 127\.0\.0\.1: missing webhook-signature": 1,
            r"refused 401 timestamp from 127\.0\.0\.1: webhook-timestamp is \d+ s in the past": 1,
            r"refused 405 method from 127\.0\.0\.1": 1,
            r"refused 404 no_event from 127\.0\.0\.1": 1,
            r"refused 400 bad_body from 127\.0\.0\.1: not a json object": 1,
        }
        for pattern, count in first.items():
            self.assertEqual(len(self.log_lines(rx, r"warn .*" + pattern)), count,
                             "one line for %r:\n%s" % (pattern, rx.tail(40)))
        if sent < 1.5:  # all within one interval: the rest held back
            self.assertEqual(len(self.log_lines(rx, r"refused 401 signature from")), 1,
                             "no second line inside the interval")
        # Once the interval has passed, the ones held back are counted in one line.
        wait_until(lambda: self.log_lines(rx, r"refused 401 signature: \d+ more like it"),
                   T(6), what="the line counting the held-back refusals")
        held = sum(int(re.search(r"signature: (\d+) more", l).group(1))
                   for l in self.log_lines(rx, r"refused 401 signature: \d+ more like it"))
        shown = len(self.log_lines(rx, r"refused 401 signature from"))
        self.assertEqual(held + shown, 12, "every refusal logged or counted:\n" + rx.tail(40))
        self.assertTrue(self.log_lines(rx, r"signature: \d+ more like it since "
                                           r"\d\d:\d\d:\d\dZ not logged, the last from 127\.0"
                                           r"\.0\.1"), rx.tail(20))
        wait_until(lambda: self.log_lines(rx, r"signature_headers: 2 more like it"), T(6),
                   what="the count of the held-back missing headers")
        self.assertEqual(self.log_lines(rx, r"refused 405 method: \d+ more"), [],
                         "nothing held back, nothing to count")

    def test_refusals_every_one_when_interval_is_zero(self):
        rx = self.receiver("--refusal-log-s", "0")
        for _ in range(5):
            r, _ = rx.post(record(), secret=new_secret())
            self.assertEqual(r.status, 401)
        wait_until(lambda: len(self.log_lines(rx, r"refused 401 signature from")) == 5, T(3),
                   what=lambda: "5 lines:\n" + rx.tail(20))

    def test_oversize_refused_by_the_front_is_logged(self):
        rx = self.receiver("--max-body-bytes", "1024")
        r, _ = rx.post(record(Pad="x" * 4000))
        self.assertEqual(r.status, 413, r)
        wait_until(lambda: self.log_lines(rx, r"refused 413 too_large from 127\.0\.0\.1"), T(3),
                   what=lambda: "the 413 logged:\n" + rx.tail(20))

    def test_duplicate_is_logged(self):
        """A replay keeps its webhook-id: 200, handler not run, and the log says so (info)."""
        rx = self.receiver()
        body = record()
        r, wid = rx.post(body)
        self.assert_status(r, 202, "first")
        self.wait_done([wid])
        r, _ = rx.post(body, msg_id=wid)
        self.assert_status(r, 200, "the replay, same webhook-id")
        line = wait_until(lambda: self.log_lines(rx, r"info .*duplicate end-call %s from "
                                                     r"127\.0\.0\.1" % re.escape(wid)), T(3),
                          what=lambda: "the duplicate logged:\n" + rx.tail(20))
        self.assertRegex(line[0], r"not processed again.*replay --new-id")
        time.sleep(T(0.3))
        self.assertEqual(len(self.runs()), 1, "the handler ran once")

    def get_metrics(self, rx):
        r = rx.request("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r.headers)
        return r.body.decode()

    def test_metrics(self):
        self.set_mode("block")
        rx = self.receiver("--max-attempts", "1")
        m = self.get_metrics(rx)
        self.assertEqual(metric(m, "callhook_receive_accepted_total"), 0)
        self.assertEqual(metric(m, "callhook_receive_inbox_depth"), 0)
        r, blocked = rx.post(record())
        self.assert_status(r, 202, "accepted")
        wait_until(lambda: self.runs(), T(10), what="the handler started")
        r, _ = rx.post(record(), msg_id=blocked)
        self.assert_status(r, 200, "duplicate")
        for _ in range(3):
            r, _ = rx.post(record(), secret=new_secret())
            self.assertEqual(r.status, 401)
        r, _ = rx.post(record(), ts=int(time.time()) + 3600)
        self.assertEqual(r.status, 401)
        time.sleep(T(1.2))  # the oldest unprocessed event ages
        m = self.get_metrics(rx)
        self.assertEqual(metric(m, "callhook_receive_accepted_total"), 1, m)
        self.assertEqual(metric(m, "callhook_receive_duplicates_total"), 1, m)
        self.assertEqual(metric(m, "callhook_receive_refused_total", reason="signature",
                                status="401"), 3, m)
        self.assertEqual(metric(m, "callhook_receive_refused_total", reason="timestamp",
                                status="401"), 1, m)
        self.assertEqual(metric(m, "callhook_receive_refused_total", reason="method",
                                status="405"), 0, m)
        self.assertEqual(metric(m, "callhook_receive_inbox_events", status="running"), 1, m)
        self.assertEqual(metric(m, "callhook_receive_inbox_depth"), 1, m)
        self.assertGreaterEqual(metric(m, "callhook_receive_oldest_unprocessed_age_seconds"), 1,
                                m)
        self.assertEqual(metric(m, "callhook_receive_inbox_up"), 1, m)
        # The handler finishes; another event fails (--max-attempts 1): parked.
        open(os.path.join(self.dir, "release"), "w").close()
        self.wait_done([blocked])
        self.set_mode("fail")
        r, failing = rx.post(record())
        self.wait_inbox(rx, failing, "failed")
        m = self.get_metrics(rx)
        self.assertEqual(metric(m, "callhook_receive_handler_runs_total", outcome="done"), 1, m)
        self.assertEqual(metric(m, "callhook_receive_handler_runs_total", outcome="failed"), 1, m)
        self.assertEqual(metric(m, "callhook_receive_inbox_events", status="done"), 1, m)
        self.assertEqual(metric(m, "callhook_receive_inbox_events", status="failed"), 1, m)
        self.assertEqual(metric(m, "callhook_receive_inbox_depth"), 0, m)
        self.assertEqual(metric(m, "callhook_receive_oldest_unprocessed_age_seconds"), 0, m)

    def test_metrics_access(self):
        """Loopback clients by default (the test can only be one); --metrics off answers as
        for any GET but /healthz (405); --metrics any is accepted."""
        rx = self.receiver(handler=False)
        self.assertEqual(rx.request("GET", "/metrics").status, 200)
        self.assertEqual(rx.stop(), 0)
        rx2 = self.receiver("--metrics", "off", handler=False)
        self.assertEqual(rx2.request("GET", "/metrics").status, 405)
        self.assertEqual(rx2.stop(), 0)
        rx3 = self.receiver("--metrics", "any", handler=False)
        self.assertEqual(rx3.request("GET", "/metrics").status, 200)
        p = subprocess.run([BIN, "receive", "--insecure-http", "--secret", self.secret,
                            "--metrics", "everyone", "--store", os.path.join(self.dir, "x.db")],
                           capture_output=True, text=True, timeout=T(10))
        self.assertEqual(p.returncode, 2)
        self.assertRegex(p.stderr, r"--metrics is loopback, any or off")

    def test_inbox_stats(self):
        self.set_mode("fail")
        rx = self.receiver("--max-attempts", "1")
        r, failed = rx.post(record())
        self.assert_status(r, 202, "accepted")
        self.wait_inbox(rx, failed, "failed")
        open(os.path.join(self.dir, "heal"), "w").close()
        r, done1 = rx.post(record(), event="begin-call")
        r, done2 = rx.post(record())
        self.wait_done([done1, done2])
        self.wait_inbox(rx, done2, "done")
        p = rx.inbox("stats")
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = {l.split()[0]: l.split()[1:] for l in p.stdout.splitlines()
                if l.split() and l.split()[0] in ("begin-call", "end-call", "all")}
        # pending running done failed purged, then the oldest unprocessed
        self.assertEqual(rows["all"][:5], ["0", "0", "2", "1", "0"], p.stdout)
        self.assertEqual(rows["begin-call"][:5], ["0", "0", "1", "0", "0"], p.stdout)
        self.assertEqual(rows["end-call"][:5], ["0", "0", "1", "1", "0"], p.stdout)
        self.assertRegex(p.stdout, r"oldest failed\s+%s" % ISO_UTC.pattern)
        self.assertRegex(p.stdout, r"last received\s+%s" % ISO_UTC.pattern)
        self.assertNotRegex(p.stdout, r"\b1[5-9]\d{8}\b", "no epoch seconds in the text")
        j = rx.inbox("stats", "--json")
        self.assertEqual(j.returncode, 0, j.stderr)
        data = json.loads(j.stdout)
        self.assertEqual(data["counts"], {"pending": 0, "running": 0, "done": 2, "failed": 1,
                                          "purged": 0})
        self.assertEqual(data["byEvent"]["begin-call"]["counts"]["done"], 1)
        self.assertEqual(data["byEvent"]["end-call"]["counts"]["failed"], 1)
        self.assertIsNone(data["oldestUnprocessedAt"])
        self.assertIsInstance(data["oldestFailedAt"], int)
        self.assertLessEqual(abs(data["newestAt"] - time.time()), 60, "epoch seconds in --json")
        show = rx.inbox("show", failed)
        self.assertRegex(show.stdout, r"received at\s+%s" % ISO_UTC.pattern)
        bad = rx.inbox("list", "--json")
        self.assertEqual(bad.returncode, 2, "--json with list: a usage error")


class Reload(ReceiveCase):
    """SIGHUP reads the config file and the key files again (docs/RECEIVER.md, rotating a
    secret); a reload that fails keeps the settings in force."""

    def write_conf(self, *lines):
        path = os.path.join(self.dir, "receive.conf")
        with open(path, "w") as f:
            f.write("".join(l + "\n" for l in lines))
        return path

    def hup_and_wait(self, rx, pattern):
        before = len(re.findall(pattern, rx.logs()))
        rx.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(re.findall(pattern, rx.logs())) > before, T(5),
                   what=lambda: "%r after SIGHUP:\n%s" % (pattern, rx.tail(20)))
        self.assertTrue(rx.alive, "SIGHUP does not stop the receiver")

    def test_rotation_by_reload(self):
        old, new = self.secret, new_secret()
        key_file = os.path.join(self.dir, "new.secret")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, (new + "\n").encode())
        os.close(fd)
        conf = self.write_conf("secret = " + old)
        rx = self.receiver("--config", conf, secrets=[])
        rx.secrets = [old]
        r, a = rx.post(record())
        self.assert_status(r, 202, "the old secret")
        r, _ = rx.post(record(), secret=new)
        self.assert_401(r, r"signature", "the new secret, before the reload")
        # 1. Add the new secret, reload.
        self.write_conf("secret = " + old, "secret = @" + key_file)
        self.hup_and_wait(rx, r"reloaded: secret/public-key; 2 keys")
        r, b = rx.post(record(), secret=new)
        self.assert_status(r, 202, "the new secret after the reload")
        r, c = rx.post(record(), secret=old)
        self.assert_status(r, 202, "the old secret still")
        # 2. The sender has rotated: remove the old one, reload.
        self.write_conf("secret = @" + key_file)
        self.hup_and_wait(rx, r"reloaded: secret/public-key; 1 key\b")
        r, _ = rx.post(record(), secret=old)
        self.assert_401(r, r"signature", "the old secret, removed")
        r, d = rx.post(record(), secret=new)
        self.assert_status(r, 202, "the new secret")
        self.wait_done([a, b, c, d])
        m = rx.request("GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "callhook_receive_reloads_total", result="ok"), 2, m)
        self.assertEqual(rx.stop(), 0, "SIGTERM after reloads: a clean stop")
        self.assertRegex(rx.logs(), r"got SIGHUP: reloading")

    def test_reload_changes_handlers_and_header(self):
        conf = self.write_conf("exec = " + self.handler_cmd("before"))
        rx = self.receiver("--config", conf, handler=False)
        r, a = rx.post(record())
        self.wait_done([a])
        self.write_conf("exec = " + self.handler_cmd("after"), "require-header = X-Token=t1")
        self.hup_and_wait(rx, r"reloaded: require-header, exec/jsonl;")
        r, _ = rx.post(record())
        self.assert_401(r, r"X-Token", "the header the reload requires")
        r, b = rx.post(record(), headers={"X-Token": "t1"})
        self.assert_status(r, 202, "with the header")
        self.wait_done([a, b])
        self.assertEqual([d["tag"] for d in self.done()], ["before", "after"])

    def test_failed_reload_keeps_the_settings(self):
        conf = self.write_conf("secret = " + self.secret, "retry-base-ms = 100")
        rx = self.receiver("--config", conf, secrets=[])
        rx.secrets = [self.secret]
        cases = (
            (("secret = " + self.secret, "retry-base-ms = soon"), r"retry-base-ms"),
            (("secret = @" + os.path.join(self.dir, "missing.secret"),), r"cannot open"),
            (("secret = " + self.secret, "tolerance-s = 600", "retention-s = 900"),
             r"--retention-s 900 is shorter than twice --tolerance-s 600"),
            (("secret = " + self.secret, "workers = 9", "max-body-bytes = 2048"),
             r"max-body-bytes, workers cannot change without a restart"),
        )
        for lines, reason in cases:
            with self.subTest(reason=reason):
                self.write_conf(*lines)
                self.hup_and_wait(rx, r"reload refused, the settings in force stay")
                self.assertRegex(rx.tail(4), reason, "the log says why")
                r, wid = rx.post(record())
                self.assert_status(r, 202, "the settings in force still work")
        m = rx.request("GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "callhook_receive_reloads_total", result="refused"),
                         len(cases), m)
        self.assertEqual(rx.stop(), 0)

    def test_listen_needs_a_restart(self):
        """The listen address of the config file (not a flag, which would win over it)."""
        rx = self.receiver(secrets=[], start=False)
        rx.port = free_port()
        conf = self.write_conf("secret = " + self.secret, "listen = %s:%d" % (HOST, rx.port))
        flags = Receive.command(rx)
        at = flags.index("--listen")
        rx.command = lambda: flags[:at] + flags[at + 2:] + ["--config", conf]
        rx.secrets = [self.secret]
        rx.start()
        self.write_conf("secret = " + self.secret, "listen = %s:%d" % (HOST, free_port()))
        self.hup_and_wait(rx, r"reload refused, the settings in force stay")
        self.assertRegex(rx.tail(2), r"listen cannot change without a restart")
        r, _ = rx.post(record())
        self.assert_status(r, 202, "still listening where it started")
        self.assertEqual(rx.stop(), 0)


V1_INBOX_SCHEMA = """
CREATE TABLE events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, webhook_id TEXT NOT NULL UNIQUE,
  event TEXT NOT NULL, call_key TEXT, call_type INTEGER, body BLOB NOT NULL,
  received_at INTEGER NOT NULL, status INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,
  last_error TEXT NOT NULL DEFAULT '', processed_at INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX events_call ON events(event, call_key) WHERE call_key IS NOT NULL;
CREATE INDEX events_due ON events(next_at) WHERE status = 0;
CREATE INDEX events_status ON events(status, seq);
CREATE TABLE meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Sinks(ReceiveCase):
    """Issue 16: an event fanned out to several sinks, each with its own retry state in the
    inbox; kill -9 under load with two sinks; an inbox from before sinks; reloads that add and
    remove sinks."""

    write_conf = Reload.write_conf
    hup_and_wait = Reload.hup_and_wait

    def sink_lines(self, rx, wid):
        """{sink: (status, attempts)} from the lines under wid's row in `callhook inbox list`."""
        p = rx.inbox("list", "--limit", "10000")
        self.assertEqual(p.returncode, 0, p.stderr)
        out, mine = {}, False
        for line in p.stdout.splitlines()[1:]:
            if not line.startswith("  -> "):
                mine = line.split(None, 1)[0] == wid
                continue
            if mine:
                m = re.match(r"  -> (\S+(?: \S+)*?)\s+(pending|running|done|failed)\s+(\d+)\s",
                             line + " ")
                self.assertIsNotNone(m, "a sink line: %r" % line)
                out[m.group(1)] = (m.group(2), int(m.group(3)))
        return out

    def test_fan_out_each_sink_retried_alone(self):
        """Two jsonl sinks and a command that fails its first two runs of each event: the
        command is retried on its own, each file gets every event exactly once; then one file
        fails for a while (it is a directory) and only that sink retries."""
        a, b = os.path.join(self.dir, "a.jsonl"), os.path.join(self.dir, "b.jsonl")
        self.set_mode("fail-twice")
        rx = self.receiver("--route", "*=jsonl:" + a, "--route", "*=jsonl:" + b,
                           "--route", "*=exec:" + self.handler_cmd(),
                           "--max-attempts", "5", "--retry-base-ms", "100", handler=False)
        ids = []
        for i in range(6):
            r, wid = rx.post(record(), event=("begin-call", "end-call")[i % 2])
            self.assert_status(r, 202, "event %d" % i)
            ids.append(wid)
        self.wait_done(ids, T(30))
        for path in (a, b):
            wait_until(lambda: set(ids) <= {x["webhookId"] for x in read_jsonl(path)}, T(10),
                       what="every event in %s" % path)
        time.sleep(T(0.5))  # room for a wrong second line
        for path in (a, b):
            got = [x["webhookId"] for x in read_jsonl(path)]
            self.assertEqual(sorted(got), sorted(ids),
                             "%s: every event exactly once, though the command was retried"
                             % os.path.basename(path))
        runs = [x["env"]["WEBHOOK_ID"] for x in self.runs()]
        self.assertEqual({w: runs.count(w) for w in ids}, {w: 3 for w in ids},
                         "the command ran three times per event")
        for wid in ids:
            self.wait_inbox(rx, wid, "done")
            sinks = self.sink_lines(rx, wid)
            self.assertEqual(sinks, {"jsonl:" + a: ("done", 1), "jsonl:" + b: ("done", 1),
                                     "exec:" + self.handler_cmd(): ("done", 3)}, wid)
        # Now b cannot be written (a directory where the file was): b retries alone.
        self.set_mode("ok")
        os.rename(b, b + ".old")
        os.mkdir(b)
        r, wid = rx.post(record())
        self.assert_status(r, 202, "with b broken")
        self.wait_done([wid], T(10))
        wait_until(lambda: wid in {x["webhookId"] for x in read_jsonl(a)}, T(10),
                   what="the event in a")
        wait_until(lambda: self.sink_lines(rx, wid).get("jsonl:" + b, ("", 0))[1] >= 2, T(10),
                   what=lambda: "b retried: %s" % self.sink_lines(rx, wid))
        # Waiting for b: pending between b's tries, running during one (tries are 50 ms apart).
        self.assertIn(rx.inbox_rows()[wid][1], ("pending", "running"), "the event waits for b")
        os.rmdir(b)
        wait_until(lambda: wid in {x["webhookId"] for x in read_jsonl(b)}, T(10),
                   what="the event in b once it can be written")
        self.wait_inbox(rx, wid, "done")
        self.assertEqual([x["webhookId"] for x in read_jsonl(a)].count(wid), 1)
        self.assertEqual([x["env"]["WEBHOOK_ID"] for x in self.done()].count(wid), 1,
                         "the command ran once: b's retries are b's")

    def test_retry_one_sink(self):
        """A sink that parks an event: the event is failed, the other sink done; `inbox retry
        ID --sink HANDLER` runs that sink alone again."""
        out = os.path.join(self.dir, "out.jsonl")
        self.set_mode("fail")
        rx = self.receiver("--jsonl", out, "--max-attempts", "2", "--retry-base-ms", "50")
        r, wid = rx.post(record())
        self.assert_status(r, 202, "accepted")
        self.wait_inbox(rx, wid, "failed")
        exec_name = "exec:" + self.handler_cmd()
        self.assertEqual(self.sink_lines(rx, wid),
                         {exec_name: ("failed", 2), "jsonl:" + out: ("done", 1)})
        show = rx.inbox("show", wid)
        self.assertRegex(show.stdout, r"sinks\n  exec:.*\n    status        failed\n"
                                      r"    attempts      2\n")
        p = rx.inbox("retry", wid, "--sink", "jsonl:" + out)
        self.assertNotEqual(p.returncode, 0, "a sink that did not fail: nothing to retry")
        self.assertRegex(p.stderr, r"no failed delivery")
        p = rx.inbox("retry", wid, "--sink", "exec:./nothing.sh")
        self.assertNotEqual(p.returncode, 0, "a sink the event does not go to")
        open(os.path.join(self.dir, "heal"), "w").close()
        p = rx.inbox("retry", wid, "--sink", exec_name)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"\b1 event will run again")
        self.wait_inbox(rx, wid, "done")
        self.assertEqual(self.sink_lines(rx, wid),
                         {exec_name: ("done", 1), "jsonl:" + out: ("done", 1)})
        self.assertEqual([x["webhookId"] for x in read_jsonl(out)], [wid], "jsonl ran once")

    def test_kill9_x10_under_load(self):
        """Four senders post signed unique events without pause; the receiver is killed with
        kill -9 ten times and started again on the same inbox: every event it acknowledged
        (202) reaches both sinks (a jsonl file and a command) at least once."""
        out = os.path.join(self.dir, "out.jsonl")
        seen = os.path.join(self.dir, "seen.txt")
        cmd = "cat >/dev/null; printf '%%s\\n' \"$WEBHOOK_ID\" >> %s" % shlex.quote(seen)
        rx = self.receiver("--jsonl", out, "--exec", cmd, "--workers", "4", handler=False)
        acked, lock, stop = set(), threading.Lock(), threading.Event()

        def sender():
            while not stop.is_set():
                try:
                    r, wid = rx.post(record(), timeout=5.0)
                except (OSError, http.client.HTTPException):
                    time.sleep(0.01)  # down: the sender would send again later
                    continue
                if r.status == 202:
                    with lock:
                        acked.add(wid)

        kill9_while_sending(rx, sender, stop, acked)

        def lines(path):
            try:
                with open(path) as f:
                    return set(f.read().split())
            except FileNotFoundError:
                return set()
        wait_until(lambda: acked <= {x["webhookId"] for x in read_jsonl(out)} and
                   acked <= lines(seen), T(60),
                   what=lambda: "every acknowledged event in both sinks (missing: jsonl %d, "
                   "exec %d)" % (len(acked - {x["webhookId"] for x in read_jsonl(out)}),
                                 len(acked - lines(seen))))
        self.assertEqual(rx.exits.count(-9), 10)
        print("  %d acknowledged over 10 kills; %d jsonl lines, %d command runs" % (
            len(acked), len(read_jsonl(out)), len(open(seen).read().split())), file=sys.stderr)

    def test_inbox_from_before_sinks(self):
        """An inbox written before sinks (schema version 1, one status per event): the
        receiver opens it, its pending events go to the handlers its routes name now, a
        failed one stays failed for each of them, done ones stay done and keep their keys."""
        import sqlite3
        store = os.path.join(self.dir, "inbox.db")
        db = sqlite3.connect(store)
        db.executescript(V1_INBOX_SCHEMA)
        now = int(time.time())
        rows = [("msg_pending", "begin-call", "call-1", 2, 0, 0, ""),
                ("msg_running", "end-call", "call-2", 2, 1, 1, ""),
                ("msg_failed", "end-call", "call-3", 2, 3, 5, "exit status 3"),
                ("msg_done", "begin-call", "call-4", 2, 2, 1, "")]
        for wid, event, call, ct, status, attempts, error in rows:
            db.execute("INSERT INTO events(webhook_id, event, call_key, call_type, body,"
                       " received_at, status, attempts, next_at, last_error, processed_at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (wid, event, call, ct, record(call), now - 10, status, attempts,
                        (now - 10) * 1000, error, now if status == 2 else 0))
        db.commit()
        db.close()
        os.chmod(store, 0o600)
        out, ends = os.path.join(self.dir, "out.jsonl"), os.path.join(self.dir, "ends.jsonl")
        rx = self.receiver("--jsonl", out, "--route", "end-call=jsonl:" + ends,
                           "--route", "end-call=jsonl:" + out, handler=False)
        wait_until(lambda: {"msg_pending", "msg_running"} <=
                   {x["webhookId"] for x in read_jsonl(out)}, T(10),
                   what="the old pending events in out.jsonl")
        wait_until(lambda: "msg_running" in {x["webhookId"] for x in read_jsonl(ends)}, T(10),
                   what="the old end-call in ends.jsonl too")
        self.assertRegex(rx.logs(), r"3 events of an inbox from before sinks")
        self.wait_inbox(rx, "msg_running", "done")
        inbox = rx.inbox_rows()
        self.assertEqual(inbox["msg_failed"][1], "failed")
        self.assertEqual(inbox["msg_done"][1], "done")
        self.assertEqual(self.sink_lines(rx, "msg_failed"),
                         {"jsonl:" + ends: ("failed", 5), "jsonl:" + out: ("failed", 5)})
        r, _ = rx.post(record("call-4"), event="begin-call")
        self.assert_status(r, 200, "a done event's key outlives the upgrade")
        p = rx.inbox("retry", "msg_failed", "--sink", "jsonl:" + ends)
        self.assertEqual(p.returncode, 0, p.stderr)
        wait_until(lambda: "msg_failed" in {x["webhookId"] for x in read_jsonl(ends)}, T(10),
                   what="the retried sink")
        time.sleep(T(0.3))
        self.assertNotIn("msg_failed", {x["webhookId"] for x in read_jsonl(out)},
                         "the other sink stays parked")
        self.assertEqual(rx.inbox_rows()["msg_failed"][1], "failed")

    def test_reload_starts_and_stops_sinks(self):
        """A reload that changes the sinks: the new ones start before the settings change, the
        dropped ones stop after; one that cannot open refuses the whole reload."""
        a, b = os.path.join(self.dir, "a.jsonl"), os.path.join(self.dir, "b.jsonl")
        conf = self.write_conf("jsonl = " + a)
        rx = self.receiver("--config", conf, handler=False)
        r, one = rx.post(record())
        wait_until(lambda: one in {x["webhookId"] for x in read_jsonl(a)}, T(10), what="one in a")
        self.write_conf("jsonl = " + b)
        self.hup_and_wait(rx, r"reloaded: exec/jsonl; 1 key; sinks: jsonl:" + re.escape(b))
        self.assertRegex(rx.logs(), r"stopping the dispatcher of jsonl:" + re.escape(a))
        r, two = rx.post(record())
        wait_until(lambda: two in {x["webhookId"] for x in read_jsonl(b)}, T(10), what="two in b")
        self.write_conf("jsonl = " + b, "route = end-call=jsonl:" + os.path.join(
            self.dir, "no-such-dir", "x.jsonl"))
        self.hup_and_wait(rx, r"reload refused, the settings in force stay")
        self.assertRegex(rx.tail(3), r"no-such-dir.*(No such file|cannot open)")
        r, three = rx.post(record())
        wait_until(lambda: three in {x["webhookId"] for x in read_jsonl(b)}, T(10),
                   what="three in b: the refused reload changed nothing")
        time.sleep(T(0.3))
        self.assertEqual([x["webhookId"] for x in read_jsonl(a)], [one])
        self.assertEqual(sorted(x["webhookId"] for x in read_jsonl(b)), sorted([two, three]))
        self.assertEqual(rx.stop(), 0)

    def test_bad_handler_refused_at_start(self):
        """A jsonl file that cannot be written, or a handler kind this build lacks: a clear
        error at start, not a silent drop later."""
        rx = self.receiver("--jsonl", os.path.join(self.dir, "no-such-dir", "x.jsonl"),
                           handler=False, start=False)
        rx.expect_fail = True
        rx.spawn()
        code = rx.proc.wait(T(10))
        rx._reaped(code)
        self.assertEqual(code, 1)
        self.assertRegex(rx.logs(), r"handler jsonl:.*no-such-dir.*cannot open")


# ---------------------------------------------------------------------------------------------
# The pipe and forward sinks, end to end (issue 16)

# A long-lived --pipe handler, from docs/examples/pipe_handler.py: worker threads, answers out of
# order. Its own log (pipe.log, one JSON object a line, written with one write(2) each under
# the lock that also guards stdout): {"k": "got", "pid", "id", "event", "attempt", "body"} for
# every line it reads, {"k": "ans", "pid", "id", "ok"} for every answer, written once the answer
# is on stdout. Files in CH_TEST_DIR steer it: fail-id (answer ok:false once for that id),
# freeze-after N (after N receipts, the first process stops with the lock held: a kill -9 then
# lands between whole answers, never between an answer and its log line).
PIPE_HANDLER = r'''
import json, os, sys, threading, time
from concurrent.futures import ThreadPoolExecutor

d = os.environ["CH_TEST_DIR"]
pid = os.getpid()
lock = threading.Lock()
log_fd = os.open(os.path.join(d, "pipe.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
got = 0

def path(name):
    return os.path.join(d, name)

def read(name):
    try:
        with open(path(name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None

def claim(name):
    """True for the first process to create the marker file name."""
    try:
        os.close(os.open(path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return True
    except FileExistsError:
        return False

def log(obj):
    os.write(log_fd, (json.dumps(obj, separators=(",", ":")) + "\n").encode())

tmp = path("pipe.pid.%d" % pid)
with open(tmp, "w") as f:
    f.write(str(pid))
os.rename(tmp, path("pipe.pid"))
fail_id = read("fail-id")
freeze_after = int(read("freeze-after") or 0)

def run(event):
    if event["event"] == "begin-call":
        time.sleep(0.003)  # begin-calls are slower: without ordering, an end-call overtakes
    ok = not (event["id"] == fail_id and claim("failed-once"))
    reply = {"id": event["id"], "ok": ok}
    if not ok:
        reply.update({"retryAfterS": 0.05, "error": "failing on purpose"})
    with lock:
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        log({"k": "ans", "pid": pid, "id": event["id"], "ok": ok})
        if freeze_after and got >= freeze_after and claim("frozen"):
            while True:  # until the test kills this process
                time.sleep(1)

with ThreadPoolExecutor(max_workers=8) as pool:
    for line in sys.stdin:
        if not line.strip():
            continue
        event = json.loads(line)
        with lock:
            got += 1
            log({"k": "got", "pid": pid, "id": event["id"], "event": event["event"],
                 "attempt": event["attempt"], "call": event["activeCallId"],
                 "body": event["body"]})
        pool.submit(run, event)
'''

# A --pipe handler for the kill -9 test: notes each id it gets (one write each), answers ok.
PIPE_NOTE_HANDLER = r'''
import json, os, sys
fd = os.open(os.path.join(os.environ["CH_TEST_DIR"], "pipe-seen.txt"),
             os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
for line in sys.stdin:
    if line.strip():
        wid = json.loads(line)["id"]
        os.write(fd, (wid + "\n").encode())
        sys.stdout.write(json.dumps({"id": wid, "ok": True}) + "\n")
        sys.stdout.flush()
'''


def verify_v1(secret, msg_id, ts, body, header):
    """Whether one v1 entry of a webhook-signature header matches (constant time)."""
    want = sign_v1(secret, msg_id, ts, body)
    return any(hmac.compare_digest(entry, want) for entry in header.split())


class ForwardTarget:
    """An internal HTTP service on 127.0.0.1 for --forward: it records every request, and for
    `flaky` it fails about half of them (a 500, a stall past the receiver's time limit, or a
    connection reset), each id at most `max_failures` times, so every event gets through.
    accepted: {webhook-id: (body, headers)} of the requests it answered 200 in time."""

    def __init__(self, flaky=False, stall_s=0.0, max_failures=3, seed=16):
        import http.server
        import random
        self.flaky, self.stall_s, self.max_failures = flaky, stall_s, max_failures
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.accepted = {}
        self.failures = {}   # id -> how many requests of it were failed on purpose
        self.kinds = {"500": 0, "stall": 0, "reset": 0, "ok": 0}
        self.requests = 0
        self.fail_pending = 0  # the next requests answered 500 whatever their id (fail_next)
        self.plan = {}         # webhook-id -> "500" or "stall": how its requests are answered
        self.seen = []         # every request's webhook-id, in arrival order
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                wid = self.headers.get("webhook-id", "")
                with target.lock:
                    target.requests += 1
                    kind = "ok"
                    target.seen.append(wid)
                    if wid in target.plan:
                        kind = target.plan[wid]
                    elif target.fail_pending > 0:
                        target.fail_pending -= 1
                        kind = "500"
                        target.failures[wid] = target.failures.get(wid, 0) + 1
                    elif target.flaky and target.failures.get(wid, 0) < target.max_failures \
                            and target.rng.random() < 0.5:
                        kind = target.rng.choice(("500", "stall", "reset"))
                        target.failures[wid] = target.failures.get(wid, 0) + 1
                    target.kinds[kind] += 1
                if kind == "500":
                    self.answer(500, b'{"error":"on purpose"}')
                elif kind == "stall":
                    time.sleep(target.stall_s)  # the receiver gave up meanwhile
                    self.close_connection = True
                elif kind == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.close_connection = True
                    self.connection.close()
                else:
                    with target.lock:
                        target.accepted.setdefault(wid, []).append(
                            (body, {k.lower(): v for k, v in self.headers.items()}))
                    self.answer(200, b"{}")

            def answer(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a receiver killed mid-request resets its connection: expected here

        self.server = Server((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.url = "http://%s:%d/calls" % (HOST, self.port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail_next(self, n):
        """The next n requests are answered 500, whichever event they carry."""
        with self.lock:
            self.fail_pending += n

    def ids(self):
        with self.lock:
            return set(self.accepted)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class PipeAndForward(ReceiveCase):
    """Issue 16's pipe and forward sinks through the real receiver: a Python pipe handler
    killed with kill -9 midway and answering ok:false once, with per-call ordering; an
    internal HTTP service that fails half the requests; kill -9 of the receiver under load
    with both sinks; bad sink settings refused at start."""

    sink_lines = Sinks.sink_lines

    def post_calls(self, rx, calls, threads=8):
        """Posts a begin-call then an end-call for each call id (the end after the begin's
        202), from several threads. Returns {webhook id: (event, call id, body)}."""
        sent, lock, errors = {}, threading.Lock(), []
        todo = list(calls)

        def worker():
            while True:
                with lock:
                    if not todo:
                        return
                    call = todo.pop()
                for event in ("begin-call", "end-call"):
                    body = record(call, call_type=2 if event == "end-call" else 4)
                    try:
                        r, wid = rx.post(body, event=event, timeout=T(20))
                    except (OSError, http.client.HTTPException) as e:
                        errors.append("%s %s: %r" % (event, call, e))
                        return
                    with lock:
                        if r.status != 202:
                            errors.append("%s %s: %r" % (event, call, r))
                        sent[wid] = (event, call, body)

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(T(300))
        self.assertEqual(errors, [], "every event acknowledged with 202")
        return sent

    def pipe_log(self):
        return read_jsonl(os.path.join(self.dir, "pipe.log"))

    def test_pipe_kill9_fail_once_in_call_order(self):
        """2,000 events (1,000 calls) to a Python --pipe handler with --ordered. The first
        handler process freezes after 1,000 receipts and the test kills it with kill -9 (its
        pid from the file it wrote); one begin-call is answered ok:false once. In the
        handler's own log, afterwards:
        - every event has exactly one ok answer, and no other id has one;
        - the chosen event has one ok:false answer, before its ok answer on a later attempt;
        - every receipt by a process that was not killed has its answer from that process;
          receipts by the killed process may be unanswered, and each id it left unanswered
          was received again by the next process (the resend after a restart);
        - for every call, the end-call's first receipt comes after the begin-call's ok answer
          (ordering asked for);
        - each line carried the record as posted."""
        script = os.path.join(self.dir, "pipe_handler.py")
        with open(script, "w") as f:
            f.write(PIPE_HANDLER)
        calls = ["call-%04d-%s" % (i, _secrets.token_hex(4)) for i in range(1000)]
        # The chosen event: the first call's begin-call, its id fixed ahead for the handler.
        chosen_call, chosen_id = calls.pop(0), new_id()
        with open(os.path.join(self.dir, "fail-id"), "w") as f:
            f.write(chosen_id)
        with open(os.path.join(self.dir, "freeze-after"), "w") as f:
            f.write("1000")
        cmd = "%s -S %s" % (shlex.quote(sys.executable), shlex.quote(script))
        # CH_TEST_PIPE_UNORDERED=1 leaves --ordered out: the order checks below then fail.
        ordered = [] if os.environ.get("CH_TEST_PIPE_UNORDERED") else ["--ordered"]
        rx = self.receiver("--pipe", cmd, *ordered, "--retry-base-ms", "50",
                           "--exec-timeout-s", "120", handler=False)
        killed = {}

        def killer():
            frozen = os.path.join(self.dir, "frozen")
            try:
                wait_until(lambda: os.path.exists(frozen), T(120), what="the handler frozen")
            except TimeoutError:
                return
            with open(os.path.join(self.dir, "pipe.pid")) as f:
                killed["pid"] = int(f.read())
            os.kill(killed["pid"], signal.SIGKILL)

        kt = threading.Thread(target=killer)
        kt.start()
        # The chosen call first, its end-call right after the begin-call's 202: the begin-call
        # is answered ok:false and retried 50 ms later, and the end-call must wait for it.
        sent = {}
        for event, wid in (("begin-call", chosen_id), ("end-call", new_id())):
            body = record(chosen_call, call_type=4 if event == "begin-call" else 2)
            r, _ = rx.post(body, event=event, msg_id=wid)
            self.assert_status(r, 202, "the chosen " + event)
            sent[wid] = (event, chosen_call, body)
        sent.update(self.post_calls(rx, calls))
        self.assertEqual(len(sent), 2000)
        kt.join(T(130))
        self.assertIn("pid", killed, "the handler froze after 1,000 receipts and was killed")

        def ok_ids():
            return {x["id"] for x in self.pipe_log() if x["k"] == "ans" and x["ok"]}
        wait_until(lambda: set(sent) <= ok_ids(), T(90), 0.2,
                   what=lambda: "every event answered ok (missing %d)"
                   % len(set(sent) - ok_ids()))
        wait_until(lambda: all(v[1] == "done" for v in rx.inbox_rows().values()), T(20),
                   what="every event done in the inbox")
        self.assertEqual(rx.stop(), 0)
        log = self.pipe_log()

        # Exactly one ok answer per event, none for anything else.
        oks = [x["id"] for x in log if x["k"] == "ans" and x["ok"]]
        dup = sorted(w for w in set(oks) if oks.count(w) > 1)
        self.assertEqual(dup, [], "ids answered ok more than once")
        self.assertEqual(set(oks), set(sent))
        # One ok:false, for the chosen event, before its ok, which came on a later attempt.
        fails = [i for i, x in enumerate(log) if x["k"] == "ans" and not x["ok"]]
        self.assertEqual([log[i]["id"] for i in fails], [chosen_id])
        ok_at = {x["id"]: i for i, x in enumerate(log) if x["k"] == "ans" and x["ok"]}
        self.assertLess(fails[0], ok_at[chosen_id])
        attempts = [x["attempt"] for x in log if x["k"] == "got" and x["id"] == chosen_id]
        self.assertGreaterEqual(max(attempts), 2, "the ok:false answer was retried")
        # Receipts and answers, per process: the handler was started twice (the kill).
        pids = []
        for x in log:
            if x["pid"] not in pids:
                pids.append(x["pid"])
        self.assertEqual(pids, [killed["pid"], pids[-1]], "two handler processes, the first "
                         "one killed")
        got, ans = {}, {}
        for x in log:
            key = (x["pid"], x["id"])
            (got if x["k"] == "got" else ans)[key] = (got if x["k"] == "got" else ans).get(
                key, 0) + 1
        for key, n in got.items():
            if key[0] != killed["pid"]:
                self.assertEqual(ans.get(key, 0), n, "receipts answered by the same process: "
                                 "%s" % (key,))
            else:
                self.assertLessEqual(ans.get(key, 0), n)
        for key in ans:
            self.assertIn(key, got, "an answer to a line it got")
        unanswered = [k[1] for k, n in got.items() if k[0] == killed["pid"] and
                      ans.get(k, 0) < n]
        self.assertGreater(len(unanswered), 0, "the killed handler left lines unanswered")
        for wid in unanswered:
            self.assertIn((pids[-1], wid), got, "%s, unanswered at the kill, sent again" % wid)
        print("  %d lines to the killed handler unanswered and sent again; %d receipts in all"
              % (len(unanswered), sum(got.values())), file=sys.stderr)
        # Order: per call, the end-call's first receipt after the begin-call's ok answer.
        first_got = {}
        for i, x in enumerate(log):
            if x["k"] == "got":
                first_got.setdefault(x["id"], i)
        by_call = {}
        for wid, (event, call, _body) in sent.items():
            by_call.setdefault(call, {})[event] = wid
        late = [call for call, ev in by_call.items()
                if first_got[ev["end-call"]] < ok_at[ev["begin-call"]]]
        self.assertEqual(late, [], "%d calls whose end-call was handed over before the "
                         "begin-call was answered ok" % len(late))
        end_chosen = by_call[chosen_call]["end-call"]
        self.assertGreater(first_got[end_chosen], ok_at[chosen_id],
                           "the end-call of the retried begin-call waited for it")
        # The record as posted, in every line.
        for x in log:
            if x["k"] == "got":
                self.assertEqual(x["body"], json.loads(sent[x["id"]][2]), x["id"])
                self.assertEqual((x["event"], x["call"]), sent[x["id"]][:2])

    def test_forward_to_a_flaky_service(self):
        """300 events forwarded to a local service that fails about half the requests (500, a
        stall past --forward-timeout-ms, a reset): every event arrives, its body byte for
        byte, with a webhook-signature that verifies with --forward-secret, and the inbox
        shows every one done."""
        target = ForwardTarget(flaky=True, stall_s=1.2)
        self.addCleanup(target.close)
        fwd_secret = new_secret()
        rx = self.receiver("--forward", target.url, "--forward-secret", "env:CH_FWD_SECRET",
                           "--forward-timeout-ms", "400", "--retry-base-ms", "50",
                           "--max-attempts", "10", handler=False,
                           env={"CH_FWD_SECRET": fwd_secret})
        sent = self.post_calls(rx, ["call-%03d-%s" % (i, _secrets.token_hex(4))
                                    for i in range(150)], threads=4)
        wait_until(lambda: set(sent) <= target.ids(), T(60), 0.1,
                   what=lambda: "every event forwarded (missing %d)"
                   % len(set(sent) - target.ids()))
        wait_until(lambda: all(v[1] == "done" for v in rx.inbox_rows().values()), T(20),
                   what="every event done in the inbox")
        with target.lock:
            accepted, kinds, requests = dict(target.accepted), dict(target.kinds), \
                target.requests
        self.assertEqual(set(accepted), set(sent))
        failed = requests - kinds["ok"]
        self.assertTrue(0.3 <= failed / requests <= 0.6, "about half failed: %s" % kinds)
        for kind in ("500", "stall", "reset"):
            self.assertGreater(kinds[kind], 10, "each kind of failure happened: %s" % kinds)
        now = time.time()
        for wid, deliveries in accepted.items():
            event, _call, body = sent[wid]
            for got_body, h in deliveries:
                self.assertEqual(got_body, body, "%s: the body byte for byte" % wid)
                self.assertEqual(h.get("webhook-id"), wid)
                self.assertEqual(h.get("x-callhook-event"), event)
                self.assertEqual(h.get("content-type"), "application/json")
                ts = int(h["webhook-timestamp"])
                self.assertLess(abs(now - ts), 300, "a fresh timestamp")
                self.assertTrue(verify_v1(fwd_secret, wid, ts, body, h["webhook-signature"]),
                                "%s: the forward signature verifies" % wid)
                self.assertFalse(verify_v1(self.secret, wid, ts, body, h["webhook-signature"]),
                                 "signed with the forward secret, not the sender's")
                # The sender's own headers, as received, beside the receiver's.
                sts = int(h["x-callhook-sender-timestamp"])
                self.assertLess(abs(now - sts), 300)
                self.assertTrue(verify_v1(self.secret, wid, sts, body,
                                          h["x-callhook-sender-signature"]),
                                "%s: the sender's signature, passed on, verifies" % wid)
        retried = [w for w in sent if target.failures.get(w)]
        self.assertGreater(len(retried), 50)
        name = "forward:" + target.url
        for wid in retried[:5]:
            sinks = self.sink_lines(rx, wid)
            self.assertEqual(sinks[name][0], "done")
            # Each failure the receiver saw is an attempt; the service may count one more than
            # it saw: libcurl sends a request again by itself when a reused connection turns
            # out reset before any answer, and the service counts both. On a loaded machine an
            # answer the service gave may also reach the receiver after --forward-timeout-ms
            # (a failure to the receiver, a success to the service: it is in accepted twice).
            self.assertGreaterEqual(sinks[name][1], 2, "attempts, %s" % wid)
            self.assertLessEqual(sinks[name][1], target.failures[wid] + len(accepted[wid]) + 1,
                                 "attempts, %s" % wid)
        print("  %d requests for %d events: %s" % (requests, len(sent), kinds), file=sys.stderr)

    def test_forward_passes_the_senders_signature_on(self):
        """Without --forward-secret the service gets the sender's own webhook-timestamp and
        webhook-signature, as received (a long header of several signatures too), so it can
        verify the sender with the sender's secret; also on a retry, and after a restart of
        the receiver (they are kept in the inbox, not in memory)."""
        target = ForwardTarget()
        self.addCleanup(target.close)
        target.fail_next(3)
        rx = self.receiver("--forward", target.url, "--retry-base-ms", "50", handler=False)
        sent = self.post_calls(rx, ["sig-%02d-%s" % (i, _secrets.token_hex(4))
                                    for i in range(10)], threads=2)
        # One more, signed with the secret among many other signatures (a rotation's shape).
        body = record("sig-long-" + _secrets.token_hex(4))
        wid, ts = "msg_" + _secrets.token_hex(12), int(time.time())
        others = " ".join("v1,%s" % base64.b64encode(os.urandom(32)).decode() for _ in range(30))
        long_sig = others + " " + sign_v1(self.secret, wid, ts, body)
        r, _ = rx.post(body, event="begin-call", msg_id=wid, ts=ts, signature=long_sig)
        self.assertEqual(r.status, 202)
        sent[wid] = ("begin-call", None, body)
        wait_until(lambda: set(sent) <= target.ids(), T(30), 0.1,
                   what=lambda: "every event forwarded (missing %d)"
                   % len(set(sent) - target.ids()))
        with target.lock:
            accepted = dict(target.accepted)
        for w, deliveries in accepted.items():
            body = sent[w][2]
            for got_body, h in deliveries:
                self.assertEqual(got_body, body)
                self.assertNotIn("x-callhook-sender-signature", h)
                self.assertTrue(verify_v1(self.secret, w, int(h["webhook-timestamp"]), body,
                                          h["webhook-signature"]),
                                "%s: the sender's signature verifies at the service" % w)
        self.assertEqual(accepted[wid][-1][1]["webhook-signature"], long_sig)
        self.assertEqual(int(accepted[wid][-1][1]["webhook-timestamp"]), ts)
        # Kept in the inbox: after a restart, a retried event still carries them.
        target.fail_next(1)
        body = record("sig-restart-" + _secrets.token_hex(4))
        r, w2 = rx.post(body, event="begin-call")
        self.assertEqual(r.status, 202)
        self.assertEqual(rx.stop(), 0)
        rx.start()
        wait_until(lambda: w2 in target.ids(), T(30), 0.1, what="the event after the restart")
        with target.lock:
            h = target.accepted[w2][-1][1]
        self.assertTrue(verify_v1(self.secret, w2, int(h["webhook-timestamp"]), body,
                                  h["webhook-signature"]))

    def test_stop_counts_a_failure_seen_before_it(self):
        """At stop, an event the service had answered 500 keeps that failure as an attempt and
        its error; one whose request was still waiting goes back as it was, not counted. (Both
        in one batch: parked in a first run, retried offline, taken together at the start.)"""
        target = ForwardTarget(stall_s=30)
        self.addCleanup(target.close)
        failing, stalled = new_id(), new_id()
        target.plan[failing] = target.plan[stalled] = "500"
        rx = self.receiver("--forward", target.url, "--forward-timeout-ms", "60000",
                           "--retry-base-ms", "60000", "--max-attempts", "1", handler=False)
        r1, _ = rx.post(record("call-f-" + _secrets.token_hex(3)), msg_id=failing)
        r2, _ = rx.post(record("call-s-" + _secrets.token_hex(3)), msg_id=stalled)
        self.assertEqual((r1.status, r2.status), (202, 202))
        wait_until(lambda: all(rx.inbox_rows()[w][1] == "failed" for w in (failing, stalled)),
                   T(20), what="both parked")
        self.assertEqual(rx.stop(), 0)
        p = rx.inbox("retry", "--all-failed")
        self.assertEqual(p.returncode, 0, p.stderr)
        target.plan[stalled] = "stall"
        n = len(target.seen)
        rx = self.receiver("--forward", target.url, "--forward-timeout-ms", "60000",
                           "--retry-base-ms", "60000", "--max-attempts", "5", handler=False)
        wait_until(lambda: len(target.seen) >= n + 2, T(20), what="both requests again")
        time.sleep(0.5)  # the 500 answer read by the receiver, the other request waiting
        self.assertEqual(rx.stop(), 0)
        rows = rx.inbox_rows()
        self.assertEqual(rows[failing][1:3], ("pending", 1), rows[failing])
        self.assertIn("500", rows[failing][3])
        self.assertEqual(rows[stalled][1:3], ("pending", 0), rows[stalled])

    def test_kill9_x10_under_load_pipe_and_forward(self):
        """Four senders post without pause; the receiver, with a --pipe handler and a
        --forward service as its two sinks (and --ordered), is killed with kill -9 ten times
        and started again on the same inbox: every acknowledged (202) event reaches both
        sinks at least once."""
        script = os.path.join(self.dir, "note_handler.py")
        with open(script, "w") as f:
            f.write(PIPE_NOTE_HANDLER)
        target = ForwardTarget()
        self.addCleanup(target.close)
        seen_path = os.path.join(self.dir, "pipe-seen.txt")
        rx = self.receiver("--pipe", "%s -S %s" % (shlex.quote(sys.executable),
                                                   shlex.quote(script)),
                           "--forward", target.url, "--ordered", handler=False)
        acked, lock, stop = set(), threading.Lock(), threading.Event()

        def sender():
            while not stop.is_set():
                call = "call-" + _secrets.token_hex(8)
                for event in ("begin-call", "end-call"):
                    try:
                        r, wid = rx.post(record(call), event=event, timeout=5.0)
                    except (OSError, http.client.HTTPException):
                        time.sleep(0.01)  # down: the sender would send again later
                        continue
                    if r.status == 202:
                        with lock:
                            acked.add(wid)

        kill9_while_sending(rx, sender, stop, acked)

        def piped():
            try:
                with open(seen_path) as f:
                    return set(f.read().split())
            except FileNotFoundError:
                return set()
        wait_until(lambda: acked <= piped() and acked <= target.ids(), T(60),
                   what=lambda: "every acknowledged event in both sinks (missing: pipe %d, "
                   "forward %d)" % (len(acked - piped()), len(acked - target.ids())))
        self.assertEqual(rx.exits.count(-9), 10)
        print("  %d acknowledged over 10 kills; %d pipe lines, %d forwarded" % (
            len(acked), len(open(seen_path).read().split()),
            sum(len(v) for v in target.accepted.values())), file=sys.stderr)

    def refused_at_start(self, *args, env=None):
        rx = self.receiver(*args, handler=False, start=False, env=env)
        rx.expect_fail = True
        rx.spawn()
        code = rx.proc.wait(T(10))
        rx._reaped(code)
        self.assertEqual(code, 1, "%s: exit status 1 at start" % (args,))
        return rx.logs()

    def test_pipe_handler_gets_eof_and_its_grace_at_stop(self):
        """At SIGTERM the pipe handler's stdin is closed and it has its grace to finish (flush
        what it buffered) before anything kills it: it used to be killed at once, as the thread
        that forked it ended before the sink was closed (PR_SET_PDEATHSIG)."""
        script = os.path.join(self.dir, "eof_handler.py")
        marker = os.path.join(self.dir, "eof-seen")
        with open(script, "w") as f:
            f.write("import json, sys, time\n"
                    "for line in sys.stdin:\n"
                    "    e = json.loads(line)\n"
                    "    print(json.dumps({'id': e['id'], 'ok': True}), flush=True)\n"
                    "time.sleep(0.3)  # what a flush of buffered work might take\n"
                    "open(%r, 'w').write('eof')\n" % marker)
        cmd = "%s -S %s" % (shlex.quote(sys.executable), shlex.quote(script))
        rx = self.receiver("--pipe", cmd, handler=False)
        r, wid = rx.post(record())
        self.assert_status(r, 202, "an event for the handler")
        self.wait_inbox(rx, wid, "done")
        self.assertEqual(rx.stop(), 0)
        self.assertTrue(os.path.exists(marker), "the handler saw EOF and had time to finish")

    def test_bad_sink_settings_refused_at_start(self):
        """A --pipe command that does not exist (a path, or a name not on PATH), one that is
        not executable, and a --forward URL that is not http(s): each a clear error at start,
        naming it, instead of a silent drop later."""
        missing = os.path.join(self.dir, "no-such-handler.py")
        log = self.refused_at_start("--pipe", missing)
        self.assertRegex(log, r"handler pipe:.*cannot find '%s'" % re.escape(missing))
        log = self.refused_at_start("--route", "end-call=pipe:no-such-program-ch16 --flag")
        self.assertRegex(log, r"'no-such-program-ch16' is not a program on PATH")
        plain = os.path.join(self.dir, "plain.py")
        open(plain, "w").close()
        os.chmod(plain, 0o644)
        log = self.refused_at_start("--pipe", plain)
        self.assertRegex(log, r"is not executable.*name its interpreter")
        for url in ("ftp://127.0.0.1/calls", "file:///etc/passwd", "127.0.0.1:9/calls"):
            log = self.refused_at_start("--forward", url)
            self.assertRegex(log, r"forward URL '%s': only http:// and https://"
                             % re.escape(url))
        log = self.refused_at_start("--route", "*=forward:gopher://127.0.0.1/")
        self.assertRegex(log, r"only http:// and https://")
        log = self.refused_at_start("--forward", "http://")
        self.assertRegex(log, r"forward URL 'http://' is not a valid URL")


class Lanes(ReceiveCase):
    """The front hands the events it commits to their sinks in memory, their deliveries
    stored as taken (dispatch.h's lanes): used while a sink keeps up, not with --ordered, and
    what a lane holds goes back to the inbox untried when its sink stops."""

    sink_lines = Sinks.sink_lines
    write_conf = Reload.write_conf
    hup_and_wait = Reload.hup_and_wait
    get_metrics = Visibility.get_metrics

    def handed(self, rx):
        m = self.get_metrics(rx)
        return (metric(m, "callhook_receive_deliveries_handed_total", via="memory"),
                metric(m, "callhook_receive_deliveries_handed_total", via="inbox"))

    def test_handed_in_memory_while_the_sink_keeps_up(self):
        out = os.path.join(self.dir, "out.jsonl")
        rx = self.receiver("--jsonl", out, handler=False)
        ids = []
        for i in range(20):
            r, wid = rx.post(record(call_type=i % 9), event=("begin-call", "end-call")[i % 2])
            self.assert_status(r, 202, "event %d" % i)
            ids.append(wid)
            wait_until(lambda: wid in {x["webhookId"] for x in read_jsonl(out)}, T(10),
                       what="event %d in out.jsonl" % i)
        self.assertEqual(self.handed(rx), (20, 0), "each event handed over in memory")
        self.assertEqual(sorted(x["webhookId"] for x in read_jsonl(out)), sorted(ids))
        rows = rx.inbox_rows()
        self.assertEqual({w: rows[w][1:3] for w in ids}, {w: ("done", 1) for w in ids})
        self.assertEqual(rx.stop(), 0)
        # --ordered: the inbox decides what a call's later event waits for, so no lane.
        rx = self.receiver("--jsonl", out, "--ordered", handler=False)
        for i in range(5):
            r, wid = rx.post(record(), event="end-call")
            self.assert_status(r, 202, "ordered event %d" % i)
            wait_until(lambda: wid in {x["webhookId"] for x in read_jsonl(out)}, T(10),
                       what="ordered event %d in out.jsonl" % i)
        self.assertEqual(self.handed(rx), (0, 5))
        self.assertEqual(rx.stop(), 0)

    def test_lane_given_back_when_its_sink_stops(self):
        """A --pipe handler that stops answering after its first event (window 2: the lane
        holds 8); a reload drops the sink. The events its lane held go back to the inbox
        pending, their try not counted (left as they were, they would stay running until a
        restart); brought back, the sink answers each event ok exactly once."""
        script = os.path.join(self.dir, "pipe_handler.py")
        with open(script, "w") as f:
            f.write(PIPE_HANDLER)
        with open(os.path.join(self.dir, "freeze-after"), "w") as f:
            f.write("1")
        cmd = "%s -S %s" % (shlex.quote(sys.executable), shlex.quote(script))
        other = os.path.join(self.dir, "other.jsonl")
        piped = ["pipe = " + cmd, "pipe-window = 2", "exec-timeout-s = 120"]
        conf = self.write_conf(*piped)
        rx = self.receiver("--config", conf, handler=False)
        ids = []
        for i in range(7):
            r, wid = rx.post(record(), event="end-call")
            self.assert_status(r, 202, "event %d" % i)
            ids.append(wid)
            if i == 0:
                wait_until(lambda: os.path.exists(os.path.join(self.dir, "frozen")), T(20),
                           what="the handler frozen after its first answer")
        # Event 0 answered; 1 and 2 in the frozen handler's window; 3-6 in the lane.
        wait_until(lambda: self.handed(rx)[0] == 7, T(10), what="seven handed in memory")
        lines = {w: self.sink_lines(rx, w)["pipe:" + cmd] for w in ids}
        self.assertEqual(lines[ids[0]], ("done", 1))
        self.assertEqual({lines[w] for w in ids[1:]}, {("running", 1)})
        self.write_conf("jsonl = " + other, "exec-timeout-s = 120")
        self.hup_and_wait(rx, r"stopping the dispatcher of pipe:")
        wait_until(lambda: all(self.sink_lines(rx, w)["pipe:" + cmd][0] == "pending"
                               for w in ids[1:]), T(10),
                   what=lambda: "the stopped sink's events pending: %s"
                   % {w: self.sink_lines(rx, w) for w in ids})
        self.assertEqual({self.sink_lines(rx, w)["pipe:" + cmd] for w in ids[1:]},
                         {("pending", 0)}, "given back untried")
        self.write_conf(*piped)
        self.hup_and_wait(rx, r"reloaded")

        def ok_ids():
            return [x["id"] for x in read_jsonl(os.path.join(self.dir, "pipe.log"))
                    if x["k"] == "ans" and x["ok"]]
        wait_until(lambda: set(ids) <= set(ok_ids()), T(30),
                   what=lambda: "every event answered ok: %s" % ok_ids())
        self.assertEqual(sorted(ok_ids()), sorted(ids), "each answered ok exactly once")
        self.assertEqual(rx.stop(), 0)


# ---------------------------------------------------------------------------------------------
# Runner


class Result(harness.Result):
    """After a failed test: the receivers' logs."""

    def show_failure(self, test):
        for rx in getattr(test, "receivers", []):
            self.stream.writeln("---- %s log of %s ----" % (rx.name, test.id()))
            self.stream.writeln(rx.tail(60) or "(gone)")


def main(argv):
    global BIN, PAYLOADS
    args = harness.suite_args(argv, "test_receive.py")
    if args is None:
        return 2
    BIN, PAYLOADS, filters = args

    def on_term(*_):
        kill_all()
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    return harness.run_suite((Verification, Dedupe, Handlers, Crash, Transport, Settings, Secrets,
                              ControlCharacters, Http, SlowClients, Visibility, Reload, Sinks,
                              PipeAndForward, Lanes),
                             filters, Result)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
