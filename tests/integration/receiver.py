#!/usr/bin/env python3
"""A scripted webhook receiver on 127.0.0.1 for callhook's integration tests.

It records every request (method, path, lower-cased headers, raw body, arrival time), answers
with a behaviour chosen at run time per path or globally (2xx, 500, 503 with Retry-After, 410, a
stall past the client's timeout, a connection reset, "fail the first N"), and verifies Standard
Webhooks v1 signatures itself, so a test can assert that every delivery verifies.

As a library:
    rx = Receiver(secrets=["whsec_..."]).start()
    rx.script(Response.error(500), Response.error(500), path="/app/begin-call")
    ... rx.wait_for(3, path="/app/begin-call", timeout=10) ...
    rx.stop()

As a script: `receiver.py [--port N] [--secret whsec_...] [--default SPEC] [--script SPEC ...]`
prints one JSON line per request, and answers control requests under /_receiver/ (see
`--help`). `receiver.py --self-test` checks the receiver itself. Standard library only.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import http.client
import http.server
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request

__all__ = [
    "Receiver",
    "Recorded",
    "Response",
    "decode_secret",
    "sign",
    "verify",
    "parse_response_spec",
]

MAX_BODY_BYTES = 16 * 1024 * 1024
CONTROL_PREFIX = "/_receiver/"

# ---------------------------------------------------------------------------------------------
# Standard Webhooks v1 (HMAC-SHA256), written independently of callhook's C code.


def decode_secret(secret):
    """The HMAC key bytes of a `whsec_` + base64 secret (prefix and padding optional)."""
    if isinstance(secret, bytes):
        return secret
    s = secret.strip()
    if s.startswith("whsec_"):
        s = s[len("whsec_"):]
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("secret is not valid base64: %r" % secret) from e


def sign(secret, msg_id, timestamp, body):
    """The `v1,<base64>` signature entry of (msg_id, timestamp, body) under secret."""
    if isinstance(body, str):
        body = body.encode()
    content = ("%s.%s." % (msg_id, timestamp)).encode() + body
    mac = hmac.new(decode_secret(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class Verification:
    """The outcome of verify(): ok, a reason when not ok, and which secrets matched."""

    def __init__(self, ok, error=None, matched=()):
        self.ok = ok
        self.error = error
        self.matched = list(matched)  # indexes into the secrets given

    def __bool__(self):
        return self.ok

    def __repr__(self):
        return "Verification(ok=%r, error=%r, matched=%r)" % (self.ok, self.error, self.matched)


def verify(secrets, headers, body, tolerance_s=300, now=None):
    """Check a delivery as a Standard Webhooks receiver would.

    secrets: list of whsec_ strings (or raw key bytes); headers: dict with lower-case names;
    body: the raw bytes. The timestamp must be canonical decimal and within tolerance_s of now
    (both directions); any v1 entry matching any secret is a pass. Every v1 entry is checked so
    that `matched` lists all secrets that sign this delivery (a rotation sends two).
    """
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sig = headers.get("webhook-signature")
    if not msg_id:
        return Verification(False, "missing webhook-id")
    if not ts:
        return Verification(False, "missing webhook-timestamp")
    if not sig:
        return Verification(False, "missing webhook-signature")
    if not ts.isdigit() or not ts.isascii() or (len(ts) > 1 and ts[0] == "0"):
        return Verification(False, "invalid webhook-timestamp %r" % ts)
    now = time.time() if now is None else now
    if abs(now - int(ts)) > tolerance_s:
        return Verification(False, "timestamp %s is %.0f s from now" % (ts, int(ts) - now))
    keys = [decode_secret(s) for s in secrets]
    content = ("%s.%s." % (msg_id, ts)).encode() + body
    expected = [base64.b64encode(hmac.new(k, content, hashlib.sha256).digest()) for k in keys]
    matched = set()
    for entry in sig.split(" "):
        version, _, value = entry.partition(",")
        if version != "v1" or not value:
            continue
        for i, want in enumerate(expected):
            if hmac.compare_digest(want, value.encode()):
                matched.add(i)
    if not matched:
        return Verification(False, "no matching signature")
    return Verification(True, None, sorted(matched))


# ---------------------------------------------------------------------------------------------
# Behaviours


class Response:
    """What the receiver does with one request.

    action: "respond" (status, headers, body, after delay_s), "stall" (wait stall_s, then
    respond if the client is still there) or "reset" (RST the connection after reading the
    request). Use the factories: Response.ok(), .error(500), .retry_after(3), .gone(),
    .stall(5), .reset().
    """

    def __init__(self, status=200, body=b"", headers=None, delay_s=0.0, action="respond",
                 stall_s=0.0):
        if action not in ("respond", "stall", "reset"):
            raise ValueError("unknown action %r" % action)
        self.status = int(status)
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = dict(headers or {})
        self.delay_s = float(delay_s)
        self.action = action
        self.stall_s = float(stall_s)

    @classmethod
    def ok(cls, status=200, body=b"ok", delay_s=0.0):
        return cls(status, body, delay_s=delay_s)

    @classmethod
    def error(cls, status=500, body=b"error"):
        return cls(status, body)

    @classmethod
    def retry_after(cls, seconds, status=503):
        return cls(status, b"busy", headers={"Retry-After": str(seconds)})

    @classmethod
    def gone(cls):
        return cls(410, b"gone")

    @classmethod
    def stall(cls, seconds, then_status=200):
        return cls(then_status, b"late", action="stall", stall_s=seconds)

    @classmethod
    def reset(cls):
        return cls(0, action="reset")

    def describe(self):
        if self.action == "reset":
            return "reset"
        if self.action == "stall":
            return "stall:%g" % self.stall_s
        ra = self.headers.get("Retry-After")
        return "%d" % self.status + (" retry-after=%s" % ra if ra is not None else "")

    def __repr__(self):
        return "Response(%s)" % self.describe()


def parse_response_spec(spec):
    """A Response from a short text: `200`, `500`, `410`, `503:retry-after=3` (or
    `retry-after:3`), `stall:SECONDS`, `reset`, `delay:SECONDS[:STATUS]`."""
    s = str(spec).strip().lower()
    if s == "reset":
        return Response.reset()
    if s.startswith("stall:"):
        return Response.stall(float(s.split(":", 1)[1]))
    if s.startswith("retry-after:"):
        return Response.retry_after(int(s.split(":", 1)[1]))
    if s.startswith("delay:"):
        parts = s.split(":")
        return Response.ok(int(parts[2]) if len(parts) > 2 else 200, delay_s=float(parts[1]))
    status, _, rest = s.partition(":")
    if not status.isdigit() or not 100 <= int(status) <= 599:
        raise ValueError("bad response spec %r" % spec)
    if rest:
        key, _, value = rest.partition("=")
        if key != "retry-after" or not value.isdigit():
            raise ValueError("bad response spec %r" % spec)
        return Response.retry_after(int(value), status=int(status))
    return Response(int(status), b"ok" if int(status) < 300 else b"error")


def _as_response(r):
    if isinstance(r, Response):
        return r
    if isinstance(r, int):
        return Response(r, b"ok" if r < 300 else b"error")
    return parse_response_spec(r)


# ---------------------------------------------------------------------------------------------
# Recording


class Recorded:
    """One request as received."""

    __slots__ = ("seq", "method", "path", "route", "headers", "header_list", "body", "time",
                 "mono", "done_mono", "client", "response", "verification")

    def __init__(self, seq, method, path, headers, header_list, body, client):
        self.seq = seq
        self.method = method
        self.path = path  # as sent, query included
        self.route = path.split("?", 1)[0]  # what behaviours and secrets are keyed by
        self.headers = headers  # lower-case name -> value (last one wins)
        self.header_list = header_list  # [(name, value)] as sent
        self.body = body  # raw bytes
        self.time = time.time()  # arrival, wall clock (compare with webhook-timestamp)
        self.mono = time.monotonic()  # arrival, for gaps between attempts
        self.done_mono = None  # when the answer was written (or the reset done)
        self.client = client
        self.response = None  # Response.describe() of what was done
        self.verification = None  # Verification, or None when no secret is set for the route

    @property
    def webhook_id(self):
        return self.headers.get("webhook-id")

    @property
    def event(self):
        return self.headers.get("x-call-event")

    @property
    def verified(self):
        """True/False when a secret is set for the route, None otherwise."""
        return None if self.verification is None else self.verification.ok

    def summary(self):
        return {
            "seq": self.seq,
            "time": round(self.time, 3),
            "method": self.method,
            "path": self.path,
            "webhookId": self.webhook_id,
            "event": self.event,
            "bytes": len(self.body),
            "verified": self.verified,
            "verifyError": self.verification.error if self.verification else None,
            "response": self.response,
        }

    def __repr__(self):
        return "Recorded(%s)" % json.dumps(self.summary())


# ---------------------------------------------------------------------------------------------
# The server


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # A client that dies (serve killed with -9) resets its keep-alive connections: that
        # is part of the tests, not an error worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and Expect: 100-continue is answered
    def version_string(self):
        return "callhook-test-receiver"

    def do_POST(self):
        self._handle()

    do_PUT = do_PATCH = do_DELETE = do_GET = do_HEAD = do_OPTIONS = do_POST

    def log_message(self, fmt, *args):
        if self.server.receiver.verbose:
            sys.stderr.write("receiver: %s - %s\n" % (self.address_string(), fmt % args))

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    return None
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _handle(self):
        rx = self.server.receiver
        try:
            body = self._read_body()
        except (ValueError, OSError):
            body = None
        if body is None:
            self.close_connection = True
            self._send(Response(400, b"bad body"))
            return
        if rx.control and self.path.startswith(CONTROL_PREFIX):
            self._send(rx._control(self.command, self.path, body))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        rec = rx._record(self.command, self.path, headers, list(self.headers.items()), body,
                         self.client_address)
        resp = rx._choose(rec)
        rec.response = resp.describe()
        if resp.action == "reset":
            # SO_LINGER with a zero timeout makes close() send a RST instead of a FIN.
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                os.close(self.connection.detach())
            except OSError:
                pass
            self.close_connection = True
        else:
            wait_s = resp.stall_s if resp.action == "stall" else resp.delay_s
            if wait_s > 0 and rx._stopping.wait(wait_s):
                self.close_connection = True  # the receiver is stopping: drop it
            else:
                self._send(resp)
        rx._done(rec)

    def _send(self, resp):
        try:
            self.send_response(resp.status)
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (timeout) or reset


class Receiver:
    """A recording, scriptable HTTP server on 127.0.0.1. Every method is thread-safe.

    Which Response answers a request on route R (path without the query):
      1. the next scripted response queued for R (script(..., path=R)),
      2. the next scripted response queued globally (script(...)),
      3. a per-message "fail first N" rule for R, then a global one: while this webhook-id has
         been seen fewer than N times, answer the rule's failure,
      4. the default for R (set_default(..., path=R)), then the global default (200).
    """

    def __init__(self, host="127.0.0.1", port=0, secrets=None, tolerance_s=300, control=False,
                 verbose=False, on_request=None):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the test receiver only listens on loopback")
        self.host = host
        self._port = port
        self.tolerance_s = tolerance_s
        self.control = control
        self.verbose = verbose
        self.on_request = on_request  # called with each Recorded after it is answered
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._requests = []
        self._queues = {}  # route or None -> [Response]
        self._defaults = {None: Response.ok()}
        self._per_message = {}  # route or None -> (n, Response)
        self._seen = {}  # (route or None, webhook-id) -> count
        self._secrets = {None: list(secrets or [])}
        self._stopping = threading.Event()
        self._server = None
        self._thread = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self):
        self._stopping.clear()
        self._server = _Server((self.host, self._port), _Handler)
        self._server.receiver = self
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="receiver-%d" % self._port, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop accepting, wake stalled handlers, close the socket. Safe to call twice."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._port

    @property
    def base_url(self):
        return "http://%s:%d" % (self.host, self._port)

    def url(self, path="/"):
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- behaviours --------------------------------------------------------------------------

    def set_default(self, response, path=None):
        """The answer when nothing is queued (globally: 200 to begin with)."""
        with self._lock:
            self._defaults[path] = _as_response(response)

    def script(self, *responses, path=None):
        """Queue responses, consumed one per request on path (or on any path)."""
        with self._lock:
            self._queues.setdefault(path, []).extend(_as_response(r) for r in responses)

    def fail_first(self, n, response=500, path=None, per_message=False):
        """Fail the first n requests (on path, or on any path), then fall back to the default.

        per_message=True fails the first n requests of every distinct webhook-id instead.
        """
        r = _as_response(response)
        with self._lock:
            if per_message:
                self._per_message[path] = (int(n), r)
            else:
                self._queues.setdefault(path, []).extend([r] * int(n))

    def clear_behaviours(self, path=None, everything=False):
        with self._lock:
            if everything:
                self._queues.clear()
                self._per_message.clear()
                self._defaults = {None: Response.ok()}
                return
            self._queues.pop(path, None)
            self._per_message.pop(path, None)
            if path is None:
                self._defaults[None] = Response.ok()
            else:
                self._defaults.pop(path, None)

    def pending_script(self, path=None):
        """How many queued responses are left for path (None: the global queue)."""
        with self._lock:
            return len(self._queues.get(path, []))

    def set_secrets(self, secrets, path=None):
        """The secrets deliveries on path (or anywhere, for None) are verified against."""
        with self._lock:
            self._secrets[path] = list(secrets)

    # -- records -----------------------------------------------------------------------------

    @property
    def requests(self):
        """A snapshot list of every Recorded so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, path=None, webhook_id=None, event=None):
        with self._lock:
            return [r for r in self._requests
                    if (path is None or r.route == path)
                    and (webhook_id is None or r.webhook_id == webhook_id)
                    and (event is None or r.event == event)]

    def clear_requests(self):
        with self._lock:
            self._requests.clear()
            self._seen.clear()

    def wait_until(self, predicate, timeout, what="condition"):
        """Wait until predicate(requests snapshot) is true; TimeoutError after timeout s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snap = list(self._requests)
                if predicate(snap):
                    return snap
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("receiver: %s not met within %gs; %d requests: %s" % (
                        what, timeout, len(snap), [r.summary() for r in snap[-10:]]))
                self._cond.wait(min(left, 0.5))

    def wait_for(self, count, path=None, timeout=10, webhook_id=None, status_ok=False):
        """Wait for at least count requests (on path / with webhook_id; only answered 2xx ones
        if status_ok) and return them."""
        def match(r):
            return ((path is None or r.route == path)
                    and (webhook_id is None or r.webhook_id == webhook_id)
                    and (not status_ok or (r.response or "").startswith("2")))
        snap = self.wait_until(lambda rs: sum(1 for r in rs if match(r)) >= count, timeout,
                               "%d request(s)%s%s%s" % (count, " on " + path if path else "",
                                                        " id " + webhook_id if webhook_id else "",
                                                        " answered 2xx" if status_ok else ""))
        return [r for r in snap if match(r)]

    # -- internals ---------------------------------------------------------------------------

    def _record(self, method, path, headers, header_list, body, client):
        with self._lock:
            rec = Recorded(len(self._requests), method, path, headers, header_list, body,
                           client)
            secrets = self._secrets.get(rec.route)
            if secrets is None:
                secrets = self._secrets.get(None)
            if secrets:
                try:
                    rec.verification = verify(secrets, headers, body, self.tolerance_s,
                                              now=rec.time)
                except ValueError as e:
                    rec.verification = Verification(False, str(e))
            self._requests.append(rec)
            self._cond.notify_all()
            return rec

    def _choose(self, rec):
        with self._lock:
            for key in (rec.route, None):
                q = self._queues.get(key)
                if q:
                    return q.pop(0)
            for key in (rec.route, None):
                rule = self._per_message.get(key)
                if rule is not None:
                    seen_key = (key, rec.webhook_id)
                    seen = self._seen.get(seen_key, 0)
                    self._seen[seen_key] = seen + 1
                    if seen < rule[0]:
                        return rule[1]
                    break
            return self._defaults.get(rec.route) or self._defaults[None]

    def _done(self, rec):
        with self._lock:
            rec.done_mono = time.monotonic()
            self._cond.notify_all()
        if self.on_request is not None:
            self.on_request(rec)

    def _control(self, method, path, body):
        """The HTTP control interface (script mode): see main()'s help text."""
        try:
            args = json.loads(body or b"{}")
            what = path[len(CONTROL_PREFIX):].split("?", 1)[0]
            route = args.get("path")
            if method == "GET" and what == "requests":
                out = []
                for r in self.requests:
                    d = r.summary()
                    d["headers"] = r.headers
                    try:
                        d["body"] = r.body.decode()
                    except UnicodeDecodeError:
                        d["bodyBase64"] = base64.b64encode(r.body).decode()
                    out.append(d)
                return Response(200, json.dumps(out).encode())
            if method != "POST":
                return Response(405, b"use POST")
            if what == "script":
                self.script(*args["responses"], path=route)
            elif what == "default":
                self.set_default(args["response"], path=route)
            elif what == "fail-first":
                self.fail_first(args["n"], args.get("response", 500), path=route,
                                per_message=bool(args.get("perMessage")))
            elif what == "secrets":
                self.set_secrets(args["secrets"], path=route)
            elif what == "clear":
                self.clear_requests()
                self.clear_behaviours(everything=True)
            else:
                return Response(404, b"unknown control")
            return Response(200, b'{"ok":true}')
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return Response(400, str(e).encode())


# ---------------------------------------------------------------------------------------------
# Self-test: the receiver checked with urllib and http.client on 127.0.0.1.

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _post(url, body, headers=None, timeout=5):
    """POST with urllib, no proxy ever; returns (status, headers, body) even for errors."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers=dict({"Content-Type": "application/json"},
                                              **(headers or {})))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def self_test():
    checks = []

    def check(name, cond, detail=""):
        checks.append((name, bool(cond)))
        if not cond:
            print("FAIL: %s %s" % (name, detail))

    check("sign() reproduces the published vector",
          sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG)
    vh = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS),
          "webhook-signature": VECTOR_SIG}
    check("verify() accepts the vector", verify([VECTOR_SECRET], vh, VECTOR_BODY, now=VECTOR_TS))
    check("verify() refuses a stale vector", not verify([VECTOR_SECRET], vh, VECTOR_BODY))
    check("verify() refuses one more byte",
          not verify([VECTOR_SECRET], vh, VECTOR_BODY + b" ", now=VECTOR_TS))
    check("verify() refuses a leading zero",
          not verify([VECTOR_SECRET], dict(vh, **{"webhook-timestamp": "0%d" % VECTOR_TS}),
                     VECTOR_BODY, now=VECTOR_TS))
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    two = dict(vh, **{"webhook-signature": "v1a,xxxx " + sign(other, VECTOR_ID, VECTOR_TS,
                                                               VECTOR_BODY) + " " + VECTOR_SIG})
    v = verify([VECTOR_SECRET, other], two, VECTOR_BODY, now=VECTOR_TS)
    check("verify() reports both secrets of a rotation", v and v.matched == [0, 1], repr(v))
    check("verify() accepts a secret without prefix and padding",
          verify([VECTOR_SECRET[6:].rstrip("=")], vh, VECTOR_BODY, now=VECTOR_TS))

    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    rx = Receiver(secrets=[secret]).start()
    try:
        body = b'{"ActiveCallId": "abc", "x": "\xc3\xa9"}'

        def signed(msg_id="msg_selftest", b=body, key=secret):
            ts = str(int(time.time()))
            return {"webhook-id": msg_id, "webhook-timestamp": ts,
                    "webhook-signature": sign(key, msg_id, ts, b), "X-Call-Event": "begin-call",
                    "X-Extra": "yes"}

        # Fail first 2, then succeed; all three verify and are recorded byte for byte.
        rx.fail_first(2, 500, path="/a")
        statuses = [_post(rx.url("/a"), body, signed())[0] for _ in range(3)]
        check("fail first 2 then 200", statuses == [500, 500, 200], statuses)
        recs = rx.wait_for(3, path="/a", timeout=2)
        check("3 recorded on /a", len(recs) == 3)
        check("bodies recorded byte for byte", all(r.body == body for r in recs))
        check("all verified", all(r.verified for r in recs), [r.summary() for r in recs])
        check("lower-case header names", recs[0].headers.get("x-extra") == "yes"
              and recs[0].event == "begin-call" and recs[0].webhook_id == "msg_selftest")
        check("method and path", recs[0].method == "POST" and recs[0].path == "/a")
        check("arrival times increase", recs[0].mono <= recs[1].mono <= recs[2].mono)
        check("responses recorded", [r.response for r in recs] == ["500", "500", "200"],
              [r.response for r in recs])

        # Signature failures are recorded, not hidden.
        _post(rx.url("/b?q=1"), body + b" ", signed())
        _post(rx.url("/b"), body, signed(key="whsec_" + base64.b64encode(b"k" * 24).decode()))
        h = signed()
        del h["webhook-signature"]
        _post(rx.url("/b"), body, h)
        recs = rx.wait_for(3, path="/b", timeout=2)
        check("route ignores the query", recs[0].route == "/b" and recs[0].path == "/b?q=1")
        check("tampered body fails", recs[0].verified is False)
        check("wrong secret fails", recs[1].verified is False
              and recs[1].verification.error == "no matching signature")
        check("missing signature fails", recs[2].verified is False
              and "missing" in recs[2].verification.error)

        # Scripted queue: 503 + Retry-After, 410, then the per-path default.
        rx.set_default(Response.ok(204, b""), path="/c")
        rx.script(Response.retry_after(7), Response.gone(), path="/c")
        st1, h1, _ = _post(rx.url("/c"), b"{}")
        st2, _, _ = _post(rx.url("/c"), b"{}")
        st3, _, _ = _post(rx.url("/c"), b"{}")
        check("503 with Retry-After", st1 == 503 and h1.get("retry-after") == "7", (st1, h1))
        check("410 then per-path default 204", (st2, st3) == (410, 204), (st2, st3))
        rx.set_secrets([], path="/other")  # an empty list overrides the global secret
        check("global default still 200", _post(rx.url("/other"), b"{}")[0] == 200)
        check("no secret for the route -> verified None",
              rx.requests_for("/other")[0].verified is None)

        # Global queue applies to any path once the path's own queue is empty.
        rx.script(418)
        check("global script", _post(rx.url("/d"), b"{}")[0] == 418)
        check("global script consumed", _post(rx.url("/d"), b"{}")[0] == 200)

        # Per-message fail-first.
        rx.fail_first(1, 502, path="/e", per_message=True)
        got = [_post(rx.url("/e"), b"{}", {"webhook-id": m})[0] for m in ("m1", "m1", "m2",
                                                                          "m2", "m1")]
        check("per-message fail first 1", got == [502, 200, 502, 200, 200], got)

        # Reset: the client sees the connection die, not an HTTP answer.
        rx.script(Response.reset(), path="/f")
        try:
            _post(rx.url("/f"), b"{}")
            check("reset raises in the client", False, "got an answer")
        except (ConnectionResetError, http.client.RemoteDisconnected, urllib.error.URLError) as e:
            check("reset raises in the client", True, repr(e))
        check("reset recorded", rx.wait_for(1, path="/f", timeout=2)[0].response == "reset")

        # Stall past the client's timeout; stop() must not wait for the stall to end.
        rx.script(Response.stall(30), path="/g")
        t0 = time.monotonic()
        try:
            _post(rx.url("/g"), b"{}", timeout=0.5)
            check("stall times the client out", False, "got an answer")
        except (TimeoutError, socket.timeout, urllib.error.URLError) as e:
            check("stall times the client out", 0.4 < time.monotonic() - t0 < 3, repr(e))

        # Chunked upload and Expect: 100-continue (what libcurl may send) via http.client.
        conn = http.client.HTTPConnection("127.0.0.1", rx.port, timeout=5)
        conn.request("POST", "/h", body=iter([b'{"a":', b' 1}']),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        r = conn.getresponse()
        r.read()
        conn.close()
        check("chunked body", r.status == 200 and
              rx.wait_for(1, path="/h", timeout=2)[0].body == b'{"a": 1}')
        s = socket.create_connection(("127.0.0.1", rx.port), timeout=5)
        s.sendall(b"POST /i HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        first = s.recv(100)
        s.sendall(b"{}")
        rest = b""
        while b"\r\n\r\nok" not in first + rest:
            chunk = s.recv(1000)
            if not chunk:
                break
            rest += chunk
        s.close()
        check("100-continue", first.startswith(b"HTTP/1.1 100") and b" 200 " in rest,
              (first, rest))

        # wait_for gives up at its deadline.
        t0 = time.monotonic()
        try:
            rx.wait_for(1, path="/never", timeout=0.3)
            check("wait_for deadline", False)
        except TimeoutError:
            check("wait_for deadline", time.monotonic() - t0 < 1.5)

        # Thread safety: many concurrent clients, every one recorded once.
        before = len(rx.requests)
        threads = [threading.Thread(target=_post, args=(rx.url("/t"), b"{}"))
                   for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        check("40 concurrent requests recorded", len(rx.requests_for("/t")) == 40
              and len(rx.requests) == before + 40)

        # The HTTP control interface (script mode).
        rx.control = True
        st, _, _ = _post(rx.url("/_receiver/script"),
                         json.dumps({"path": "/j", "responses": ["503:retry-after=2",
                                                                 "410"]}).encode())
        a, ha, _ = _post(rx.url("/j"), b"{}")
        b, _, _ = _post(rx.url("/j"), b"{}")
        check("control script", st == 200 and a == 503 and ha.get("retry-after") == "2"
              and b == 410, (st, a, b))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(rx.url("/_receiver/requests"), timeout=5) as r:
            listed = json.loads(r.read())
        check("control requests list", len(listed) == len(rx.requests)
              and listed[0]["path"] == "/a" and listed[0]["verified"] is True)
        for spec, want in (("200", "200"), ("stall:2.5", "stall:2.5"), ("reset", "reset"),
                           ("retry-after:4", "503 retry-after=4"), ("delay:0.1:201", "201")):
            check("spec %s" % spec, parse_response_spec(spec).describe() == want)
    finally:
        t0 = time.monotonic()
        rx.stop()
        check("stop() does not wait for a stalled handler", time.monotonic() - t0 < 3)
    rx.stop()

    failed = sum(1 for _, ok in checks if not ok)
    print("receiver self-test: %d passed, %d failed" % (len(checks) - failed, failed))
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# Script mode


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="A scripted webhook receiver on 127.0.0.1 that records and verifies "
                    "Standard Webhooks deliveries; prints one JSON line per request.",
        epilog="Response specs: 200, 500, 410, 503:retry-after=N, retry-after:N, stall:SECONDS, "
               "reset, delay:SECONDS[:STATUS]. Control (JSON bodies, optional \"path\"): "
               "POST /_receiver/script {\"responses\": [...]}, POST /_receiver/default "
               "{\"response\": ...}, POST /_receiver/fail-first {\"n\": N, \"response\": ..., "
               "\"perMessage\": bool}, POST /_receiver/secrets {\"secrets\": [...]}, "
               "POST /_receiver/clear, GET /_receiver/requests.")
    ap.add_argument("--self-test", action="store_true", help="check the receiver and exit")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free)")
    ap.add_argument("--secret", action="append", default=[], help="whsec_ secret to verify with")
    ap.add_argument("--default", default="200", help="answer when nothing is scripted")
    ap.add_argument("--script", nargs="*", default=[], help="responses for the first requests")
    ap.add_argument("--fail-first", type=int, default=0, help="fail the first N with 500")
    ap.add_argument("--no-control", action="store_true", help="no /_receiver/ control paths")
    ap.add_argument("--verbose", action="store_true", help="log each request line to stderr")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    rx = Receiver(port=args.port, secrets=args.secret, control=not args.no_control,
                  verbose=args.verbose,
                  on_request=lambda r: print(json.dumps(r.summary()), flush=True))
    rx.set_default(args.default)
    rx.script(*args.script)
    if args.fail_first:
        rx.fail_first(args.fail_first)
    rx.start()
    print("listening on %s" % rx.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        rx.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
