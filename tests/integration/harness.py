"""Run `callhook serve` as a real process for the integration tests, and talk to its API.

    serve = Serve("/path/to/callhook").start()      # temp dir, free port, waits for /healthz
    r = serve.api("PUT", "/v1/voice-apps/a", {"BeginCallEventProcessingUrl": url})
    serve.kill9(); serve.start()                     # crash and restart on the same database
    serve.close()                                    # stop, keep the log text, remove the dir

Every process started here is killed at interpreter exit (atexit), and, where util-linux's
setpriv exists, also by the kernel if the test runner dies first (parent-death signal). Only
127.0.0.1 is ever contacted, with http.client (which, unlike urllib, never uses a proxy), and
proxy variables are removed from serve's environment so libcurl cannot use one either.
Start and restart serve from the main thread: the parent-death signal follows the thread that
forked.
"""

import atexit
import http.client
import json
import os
import re
import secrets as _secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

HOST = "127.0.0.1"
# Deadlines are multiplied by this (a sanitizer build or a loaded CI machine is slower).
TIME_SCALE = float(os.environ.get("CALLHOOK_TEST_TIME_SCALE", "1"))
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "ALL_PROXY", "ftp_proxy", "FTP_PROXY")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer", "ERROR: UndefinedBehaviorSanitizer")

# CALLHOOK_TEST_DB_URI (a PostgreSQL database; tests/pg sets it): every Serve runs on a fresh
# database of its own made beside that one, instead of SQLite, and close() drops it.
PG_BASE_URI = os.environ.get("CALLHOOK_TEST_DB_URI", "").strip() or None

_live = set()  # Serve objects with a running process
_live_lock = threading.Lock()
_workdirs = []


def scaled(seconds):
    return seconds * TIME_SCALE


def free_port():
    """A port on 127.0.0.1 that was free a moment ago (bind 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def sanitizer_lines(text):
    """The lines of text a sanitizer wrote (a report of ASan, UBSan or LSan)."""
    return [line for line in text.splitlines()
            if any(m in line for m in SANITIZER_MARKERS)]


def serve_refusing(binary, folder, env, extra=(), timeout=20):
    """Runs `callhook serve` on folder/callhook.db (a fresh port on HOST) with env as its whole
    environment, expecting it to refuse to start. Returns (exit status, output); a serve that
    starts is killed and its output is raised as an AssertionError."""
    cmd = [binary, "serve", "--listen", "%s:%d" % (HOST, free_port()),
           "--db", "sqlite:" + os.path.join(folder, "callhook.db")] + list(extra)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                         stdin=subprocess.DEVNULL, text=True)
    try:
        out, _ = p.communicate(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError("serve started although it should have refused:\n" + out[-2000:])
    return p.returncode, out


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Call predicate until it returns something truthy, and return that; TimeoutError with
    `what` (a string, or a callable giving one) once timeout seconds have passed."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, http.client.HTTPException) as e:
            last_exc = e
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else what
            raise TimeoutError("%s not met within %.1fs%s" % (
                desc, timeout, " (last error: %r)" % last_exc if last_exc else ""))
        time.sleep(interval)


class ApiResponse:
    """An HTTP answer: status, reason, headers (lower-case names), body (bytes)."""

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self._json = None
        self._parsed = False

    @property
    def json(self):
        """The body parsed as JSON, or None if it is not JSON."""
        if not self._parsed:
            self._parsed = True
            try:
                self._json = json.loads(self.body)
            except ValueError:
                self._json = None
        return self._json

    @property
    def error_code(self):
        """error.code of an error answer, or None."""
        j = self.json
        if isinstance(j, dict) and isinstance(j.get("error"), dict):
            return j["error"].get("code")
        return None

    @property
    def error_message(self):
        j = self.json
        if isinstance(j, dict) and isinstance(j.get("error"), dict):
            return j["error"].get("message")
        return None

    def __repr__(self):
        body = self.body[:300].decode("utf-8", "replace")
        return "<%d %s %s>" % (self.status, self.reason, body)


def http_request(port, method, path, body=None, headers=None, timeout=10.0, host=HOST):
    """One request on a fresh connection to host:port. A server that answers early and closes
    (a 413 before the whole body is read) still has its answer read when possible."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("integration tests only talk to loopback")
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        try:
            conn.request(method, path, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the answer may already be waiting
        resp = conn.getresponse()
        data = resp.read()
        return ApiResponse(resp.status, resp.reason,
                           {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def _psql(uri, sql, timeout=60):
    """Run one SQL statement with psql on uri (PG* variables of the caller ignored)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", uri, "-c", sql],
                       capture_output=True, text=True, timeout=timeout, env=env,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError("psql %r: %s" % (sql, (p.stderr or p.stdout).strip()))


def _with_dbname(uri, name):
    """The same libpq connection (URI or keyword=value string) with another database."""
    if uri.startswith(("postgresql://", "postgres://")):
        parts = urllib.parse.urlsplit(uri)
        return urllib.parse.urlunsplit(parts._replace(path="/" + name))
    return "%s dbname=%s" % (uri, name)


class ServeError(RuntimeError):
    """serve did not start, or exited when it should not have; the message has its log."""


class KeyCommandUnavailable(RuntimeError):
    """`callhook key create` does not exist (yet) or failed."""


def _setpriv_prefix():
    path = shutil.which("setpriv")
    if path is None:
        return []
    try:
        ok = subprocess.run([path, "--pdeathsig", "KILL", "--", "true"], timeout=5,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return [path, "--pdeathsig", "KILL", "--"] if ok else []


_PDEATHSIG = None


class Serve:
    """One `callhook serve` on 127.0.0.1 with its own temp dir, SQLite database and log.

    binary: the callhook executable. admin_key: the CALLHOOK_ADMIN_KEY (random by default).
    port: fixed port (default: a free one, chosen at the first start and kept on restarts).
    retry_base_ms: passed as --retry-base-ms when set. extra_args: more serve options.
    """

    def __init__(self, binary, admin_key=None, port=None, retry_base_ms=None, extra_args=(),
                 env=None, workdir=None, name="serve"):
        global _PDEATHSIG
        if _PDEATHSIG is None:
            _PDEATHSIG = _setpriv_prefix()
        self.binary = os.path.abspath(binary)
        self.admin_key = admin_key or "adm" + _secrets.token_hex(20)
        self.port = port
        self._fixed_port = port is not None
        self.retry_base_ms = retry_base_ms
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.name = name
        self.workdir = workdir or tempfile.mkdtemp(prefix="callhook-it-")
        _workdirs.append(self.workdir)
        self.db_path = os.path.join(self.workdir, "callhook.db")
        self.db_url = "sqlite:" + self.db_path
        self.pg_db = None  # the PostgreSQL database made for this Serve
        if PG_BASE_URI:
            self.pg_db = "callhook_it_" + _secrets.token_hex(6)
            _psql(PG_BASE_URI, 'CREATE DATABASE "%s"' % self.pg_db)
            self.db_url = _with_dbname(PG_BASE_URI, self.pg_db)
        self.log_path = os.path.join(self.workdir, "serve.log")
        self.proc = None
        self.starts = 0
        self.exits = []  # return codes of processes that ended (negative: killed by a signal)
        self._log_text = None  # kept by close() after the directory is gone

    # -- process life cycle ------------------------------------------------------------------

    def command(self):
        cmd = [self.binary, "serve", "--listen", "%s:%d" % (HOST, self.port), "--db",
               self.db_url]
        if self.retry_base_ms is not None:
            cmd += ["--retry-base-ms", str(self.retry_base_ms)]
        return cmd + self.extra_args

    def environment(self):
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env["CALLHOOK_ADMIN_KEY"] = self.admin_key
        env.update(self.extra_env)
        return env

    @property
    def base_url(self):
        return "http://%s:%d" % (HOST, self.port)

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _log_marker(self, text):
        with open(self.log_path, "a") as f:
            f.write("=== %s %s ===\n" % (time.strftime("%H:%M:%S"), text))

    def start(self, timeout=None):
        """Start serve (again, on the same database) and wait until /healthz answers 200.

        A port someone else took in the meantime is replaced by a fresh one when the port was
        not fixed by the caller."""
        if self.alive:
            raise ServeError("%s is already running" % self.name)
        timeout = scaled(STARTUP_TIMEOUT_S) if timeout is None else timeout
        last = None
        for _ in range(3):
            if self.port is None:
                self.port = free_port()
            try:
                return self._start_once(timeout)
            except ServeError as e:
                last = e
                if self._fixed_port or not re.search(r"in use|EADDRINUSE|cannot (bind|listen)",
                                                     self._tail_since_start(), re.I):
                    raise
                self.port = None  # lost a race for the port: take another one
        raise last

    def _start_once(self, timeout):
        self.starts += 1
        self._log_marker("start #%d: %s" % (self.starts, " ".join(self.command())))
        self._start_offset = os.path.getsize(self.log_path)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(_PDEATHSIG + self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         env=self.environment(), cwd=self.workdir)
        except OSError as e:
            raise ServeError("cannot run %s: %s" % (self.binary, e)) from e
        finally:
            log.close()
        with _live_lock:
            _live.add(self)
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self._reap(code)
                raise ServeError("%s exited with status %d before /healthz answered: %s\n%s" % (
                    self.name, code, " ".join(self.command()), self._tail_since_start()))
            try:
                r = http_request(self.port, "GET", "/healthz", timeout=1.0)
                if r.status == 200:
                    return self
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() >= deadline:
                self.kill9()
                raise ServeError("%s: /healthz did not answer 200 within %.1fs;\n%s" % (
                    self.name, timeout, self._tail_since_start()))
            time.sleep(0.05)

    def _reap(self, code):
        self.exits.append(code)
        self._log_marker("exit status %d" % code)
        with _live_lock:
            _live.discard(self)

    def kill9(self):
        """SIGKILL, as a crash would; waits for the process to be gone."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None and self in _live:
                self._reap(self.proc.returncode)
            return
        self._log_marker("kill -9")
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self._reap(self.proc.wait(10))

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM, then SIGKILL after timeout seconds. Returns the exit status (or None)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._log_marker("SIGTERM")
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._log_marker("did not stop within %gs: kill -9" % timeout)
                self.proc.kill()
                code = self.proc.wait(10)
            self._reap(code)
            return code
        if self in _live:
            self._reap(self.proc.returncode)
        return self.proc.returncode

    def restart(self, kill=True, timeout=None):
        """kill -9 (or a clean stop when kill is False), then start on the same db and port."""
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start(timeout)

    def close(self):
        """Stop the process, keep the log text in memory, remove the temp dir (unless
        CALLHOOK_KEEP_TMP is set)."""
        try:
            self.stop()
        finally:
            self._log_text = self._read_log()
            if not os.environ.get("CALLHOOK_KEEP_TMP"):
                shutil.rmtree(self.workdir, ignore_errors=True)
                if self.pg_db and not self.alive:
                    try:
                        _psql(PG_BASE_URI,
                              'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % self.pg_db)
                        self.pg_db = None
                    except (OSError, RuntimeError, subprocess.SubprocessError):
                        pass  # the cluster goes away with the pg fixture anyway

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- logs --------------------------------------------------------------------------------

    def _read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return self._log_text or ""

    def _tail_since_start(self, max_lines=60):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(getattr(self, "_start_offset", 0))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        lines = text.splitlines()
        return "\n".join(lines[-max_lines:])

    def logs(self, tail_lines=None):
        """Everything serve wrote to stderr/stdout over all its starts, with marker lines."""
        text = self._log_text if self._log_text is not None else self._read_log()
        if tail_lines:
            lines = text.splitlines()
            if len(lines) > tail_lines:
                text = "... (%d lines before)\n" % (len(lines) - tail_lines) + \
                    "\n".join(lines[-tail_lines:])
        return text

    def sanitizer_reports(self):
        """Log lines in which AddressSanitizer, LeakSanitizer or UBSan reported something."""
        return [line for line in self.logs().splitlines()
                if any(m in line for m in SANITIZER_MARKERS)]

    # -- the API -----------------------------------------------------------------------------

    def request(self, method, path, body=None, key="admin", headers=None,
                content_type=None, timeout=10.0):
        """A raw request. key: "admin" (the admin key), None (no Authorization), or a key.
        body: bytes (sent as is) or None. content_type: set only when given."""
        h = {}
        if key == "admin":
            key = self.admin_key
        if key is not None:
            h["Authorization"] = "Bearer " + key
        if content_type is not None:
            h["Content-Type"] = content_type
        h.update(headers or {})
        if body is not None and isinstance(body, str):
            body = body.encode()
        return http_request(self.port, method, path, body, h, timeout)

    def api(self, method, path, obj=None, key="admin", headers=None, timeout=10.0):
        """A JSON request: obj (if not None) is serialized with Content-Type application/json."""
        body = None if obj is None else json.dumps(obj).encode()
        ct = "application/json" if obj is not None else None
        return self.request(method, path, body, key, headers, ct, timeout)

    def ingest(self, app_id, event, body, key="admin", headers=None,
               content_type="application/json", timeout=10.0):
        """POST a call record (bytes as given) to /v1/voice-apps/{app_id}/{event}."""
        return self.request("POST", "/v1/voice-apps/%s/%s" % (app_id, event), body, key,
                            headers, content_type, timeout)

    # -- the CLI -----------------------------------------------------------------------------

    def run_cli(self, *args, timeout=30.0, env=None):
        """Run `callhook ARGS...` and return the CompletedProcess (text mode)."""
        e = self.environment()
        e.update(env or {})
        return subprocess.run([self.binary] + list(args), capture_output=True, text=True,
                              timeout=timeout, env=e, stdin=subprocess.DEVNULL)

    def create_key(self, role):
        """`callhook key create --role ROLE --db sqlite:PATH`; returns the key it prints (the
        last word of its output). KeyCommandUnavailable when there is no such command."""
        try:
            p = self.run_cli("key", "create", "--role", role, "--db", self.db_url)
        except (OSError, subprocess.SubprocessError) as e:
            raise KeyCommandUnavailable("callhook key create: %s" % e) from e
        words = p.stdout.split()
        if p.returncode != 0 or not words:
            raise KeyCommandUnavailable("callhook key create --role %s exited %d: %s %s" % (
                role, p.returncode, p.stdout.strip(), p.stderr.strip()))
        return words[-1]


def cleanup():
    """Kill every serve still running and remove the temp dirs (also run at exit)."""
    with _live_lock:
        live = list(_live)
    for s in live:
        try:
            if s.proc is not None and s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait(5)
        except (OSError, subprocess.SubprocessError):
            pass
    if not os.environ.get("CALLHOOK_KEEP_TMP"):
        for d in _workdirs:
            shutil.rmtree(d, ignore_errors=True)


atexit.register(cleanup)


# -- running a suite ------------------------------------------------------------------------


class Result(unittest.TextTestResult):
    """Counts each test method once (a failing subtest fails its method), prints how long each
    test took, and after a test that failed calls show_failure(test), which a suite overrides
    to print the logs of that test's processes."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.bad = []
        self.skipped_tests = []
        self._t0 = 0.0

    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def _mark(self, test):
        if test.id() not in self.bad:
            self.bad.append(test.id())

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._mark(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._mark(test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._mark(test)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if not hasattr(test, "test_case"):
            self.skipped_tests.append(test.id())

    def stopTest(self, test):
        super().stopTest(test)
        self.stream.writeln("    (%.1fs)" % (time.monotonic() - self._t0))
        if test.id() in self.bad:
            self.show_failure(test)
            self.stream.writeln("----")

    def show_failure(self, test):
        pass


def suite_args(argv, name):
    """(binary, payloads folder, name filters) from a suite's command line, or from
    CALLHOOK_BIN, CALLHOOK_PAYLOADS_DIR and CALLHOOK_TEST_FILTER; None (said on stderr) when they
    are missing or wrong."""
    binary = argv[1] if len(argv) > 1 else os.environ.get("CALLHOOK_BIN")
    payloads = argv[2] if len(argv) > 2 else os.environ.get("CALLHOOK_PAYLOADS_DIR")
    filters = argv[3:] or os.environ.get("CALLHOOK_TEST_FILTER", "").split()
    if not binary or not payloads:
        print("usage: %s CALLHOOK_BINARY PAYLOADS_DIR [NAME_FILTER...]" % name, file=sys.stderr)
        return None
    binary, payloads = os.path.abspath(binary), os.path.abspath(payloads)
    if not os.access(binary, os.X_OK) or not os.path.isdir(payloads):
        print("%s: %s is not executable or %s is not a directory" % (name, binary, payloads),
              file=sys.stderr)
        return None
    return binary, payloads, filters


def run_suite(cases, filters, result_class):
    """Runs the tests of cases whose id contains one of filters (all when none), then prints
    what was skipped and what failed, and "N passed, M failed". Returns the exit status."""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for case in cases:
        for test in loader.loadTestsFromTestCase(case):
            if not filters or any(f in test.id() for f in filters):
                suite.addTest(test)
    t0 = time.monotonic()
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=result_class)
    result = runner.run(suite)
    failed = len(result.bad)
    skipped = len(result.skipped_tests)
    passed = result.testsRun - failed - skipped
    if skipped:
        print("skipped: %s" % ", ".join(result.skipped_tests))
    if failed:
        print("failed: %s" % ", ".join(result.bad))
    print("(%.0fs)" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0
