#!/usr/bin/env python3
"""sd_notify: `callhook serve` and `callhook receive`, started with NOTIFY_SOCKET pointing at a
unix datagram socket this test listens on (an abstract "@name" for one, a path for the other),
say READY=1 only once their port takes connections, STOPPING=1 on SIGTERM, and (receive)
RELOADING=1 then READY=1 around a SIGHUP reload. A daemon that cannot listen says nothing.

"Only once" is checked without a race: the socket's queue is filled before the daemon starts,
so its READY=1 waits in sendto() until this test reads. While it waits, the port must already
take a TCP connection; a READY=1 sent before listen() would hold the daemon before its port
opened (and, after its 5 s send timeout, be lost): the connection would fail, then READY=1
would never come.

usage: test_notify.py CALLHOOK_BINARY PAYLOADS_DIR [NAME_FILTER...]
"""

import os
import secrets as _secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import PROXY_VARS, SANITIZER_MARKERS, free_port, scaled, wait_until  # noqa: E402

BIN = None
HOST = "127.0.0.1"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class NotifySocket:
    """The service manager's end: a unix datagram socket bound to an abstract name or a path."""

    def __init__(self, folder, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.name = "@callhook-test-notify-" + _secrets.token_hex(8)
            self.address = "\0" + self.name[1:]
        else:
            self.name = self.address = os.path.join(folder, "notify.sock")
        self.sock.bind(self.address)
        self.fillers = []
        self.filled = 0

    def fill(self):
        """Queues datagrams until the socket takes no more, so that the next sender blocks. A
        sender's own buffer can fill before the queue does: a new sender is opened until the
        first send of a fresh one fails."""
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.fillers.append(s)
            sent = 0
            while True:
                try:
                    s.sendto(b"FILLER=1", socket.MSG_DONTWAIT, self.address)
                    sent += 1
                except BlockingIOError:
                    break
            self.filled += sent
            if sent == 0:
                return

    def receive(self, timeout):
        """The next state that is not a filler, as a dict; None when none came in time."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return None
            if data == b"FILLER=1":
                continue
            return dict(line.split("=", 1) for line in data.decode().split("\n") if line)

    def close(self):
        for s in self.fillers:
            s.close()
        self.sock.close()  # a path socket goes with the test's folder


def connects(port):
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


class NotifyTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="callhook-notify-")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.log_text = ""
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    self.log_text += "--- %s\n%s" % (name, f.read())
        subprocess.run(["rm", "-rf", self.dir])

    def start(self, what, port, notify_name):
        if what == "serve":
            cmd = [BIN, "serve", "--listen", "%s:%d" % (HOST, port), "--db",
                   "sqlite:" + os.path.join(self.dir, "callhook.db")]
        else:
            cmd = [BIN, "receive", "--insecure-http", "--listen", "%s:%d" % (HOST, port),
                   "--secret", SECRET, "--store", os.path.join(self.dir, "inbox.db")]
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env["NOTIFY_SOCKET"] = notify_name
        env["CALLHOOK_ADMIN_KEY"] = "adm" + _secrets.token_hex(20)
        self.log_path = os.path.join(self.dir, "%s.log" % what)
        with open(self.log_path, "ab") as log:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        self.procs.append(p)
        return p

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def assert_no_sanitizer_report(self):
        text = self.log()
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, text)

    def ready_only_once_listening(self, what, abstract):
        ns = NotifySocket(self.dir, abstract)
        self.addCleanup(ns.close)
        ns.fill()
        self.assertGreater(ns.filled, 0)
        port = free_port()
        p = self.start(what, port, ns.name)
        # Its READY=1 is held in sendto() by the full queue: the port must open all the same.
        wait_until(lambda: connects(port) or p.poll() is not None, scaled(20),
                   what="%s's port taking connections" % what)
        self.assertIsNone(p.poll(), self.log())
        state = ns.receive(scaled(20))
        self.assertIsNotNone(state, "no READY=1 from %s: %s" % (what, self.log()))
        self.assertEqual(state.get("READY"), "1", state)
        self.assertEqual(state.get("STATUS"), "listening on http://%s:%d" % (HOST, port))
        self.assertNotIn("cannot tell the service manager", self.log())
        return ns, p, port

    def stop_says_stopping(self, ns, p):
        p.send_signal(signal.SIGTERM)
        state = ns.receive(scaled(10))
        self.assertEqual(state, {"STOPPING": "1"}, self.log())
        self.assertEqual(p.wait(scaled(30)), 0, self.log())
        self.assertIsNone(ns.receive(0.2), "nothing after STOPPING=1")
        self.assert_no_sanitizer_report()

    def test_serve_abstract_socket(self):
        ns, p, port = self.ready_only_once_listening("serve", abstract=True)
        self.assertIsNone(ns.receive(0.5), "one READY=1, nothing else while running")
        self.stop_says_stopping(ns, p)

    def test_receive_path_socket(self):
        ns, p, port = self.ready_only_once_listening("receive", abstract=False)
        self.assertIsNone(ns.receive(0.5), "one READY=1, nothing else while running")
        self.stop_says_stopping(ns, p)

    def test_receive_reload(self):
        ns, p, port = self.ready_only_once_listening("receive", abstract=True)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        p.send_signal(signal.SIGHUP)
        state = ns.receive(scaled(10))
        self.assertIsNotNone(state, self.log())
        self.assertEqual(state.get("RELOADING"), "1", state)
        # MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds, taken after the signal was sent.
        usec = int(state.get("MONOTONIC_USEC", "0"))
        self.assertGreaterEqual(usec, before)
        self.assertLess(usec, time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        state = ns.receive(scaled(10))
        self.assertEqual(state, {"READY": "1", "STATUS": "listening on http://%s:%d" % (
            HOST, port)}, self.log())
        wait_until(lambda: "reloaded:" in self.log(), scaled(10), what="the reload's log line")
        self.stop_says_stopping(ns, p)

    def test_no_ready_when_the_port_is_taken(self):
        for what in ("serve", "receive"):
            with self.subTest(what=what):
                ns = NotifySocket(self.dir, abstract=True)
                self.addCleanup(ns.close)
                taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self.addCleanup(taken.close)
                taken.bind((HOST, 0))
                taken.listen(1)
                p = self.start(what, taken.getsockname()[1], ns.name)
                self.assertNotEqual(p.wait(scaled(30)), 0, self.log())
                self.assertIsNone(ns.receive(0.2), "a daemon that cannot listen is not ready")
                self.assert_no_sanitizer_report()

    def test_no_notify_socket_and_a_bad_one(self):
        # Without NOTIFY_SOCKET nothing is sent and nothing is said; with one that is neither a
        # path nor an abstract name, the daemon runs and says why it cannot notify.
        for name, warned in (("", False), ("relative/notify.sock", True)):
            with self.subTest(notify_socket=name):
                port = free_port()
                p = self.start("serve", port, name)
                wait_until(lambda: connects(port) or p.poll() is not None, scaled(20),
                           what="serve's port")
                self.assertIsNone(p.poll(), self.log())
                wait_until(lambda: not warned or "cannot tell the service manager" in self.log(),
                           scaled(10), what="the warning")
                self.assertEqual("NOTIFY_SOCKET 'relative/notify.sock' is neither" in self.log(),
                                 warned, self.log())
                p.send_signal(signal.SIGTERM)
                self.assertEqual(p.wait(scaled(30)), 0, self.log())
                os.unlink(self.log_path)


class Result(harness.Result):
    def show_failure(self, test):
        self.stream.writeln(getattr(test, "log_text", ""))


def main():
    global BIN
    args = harness.suite_args(sys.argv, "test_notify.py")
    if args is None:
        return 2
    BIN, _, filters = args
    return harness.run_suite([NotifyTest], filters, Result)


if __name__ == "__main__":
    sys.exit(main())
