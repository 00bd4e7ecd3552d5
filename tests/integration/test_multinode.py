#!/usr/bin/env python3
"""Several `callhook serve` nodes sharing one PostgreSQL database, under load.

usage: test_multinode.py CALLHOOK_BINARY PAYLOADS_DIR

environment:
  CALLHOOK_TEST_DB_URI     the database (a libpq URI or connection string; required). A fresh
                           database is made beside it for the run when psql can (and dropped
                           after); otherwise this one is used as it is.
  CALLHOOK_TEST_PG_DIR     the cluster of scripts/pg-test.sh serving it, for the database
                           restart part (that part fails without it)
  CALLHOOK_TEST_PG_SCRIPT  scripts/pg-test.sh (default: the one of this checkout)
  CALLHOOK_MN_CALLS        calls of the kill -9 part (default 1500: 3000 events)
  CALLHOOK_MN_PARTS        the parts to run, e.g. "E,G" (default: all; B needs A)
  CALLHOOK_TEST_TIME_SCALE, CALLHOOK_KEEP_TMP as for test_serve.py; CALLHOOK_TEST_SEED fixes
  the random parts.

Three nodes (same database, same admin key, --lease-s 5), one receiver, Voice Apps with short
retry schedules:
  A. Thousands of events (begin-call then end-call per call) spread round-robin over the nodes by
     several client threads, each event sent again to another node on a 503 or a connection
     error until acknowledged; one node is killed with kill -9 midway (and started again). Every
     acknowledged event is delivered, signed and as ingested; nothing is delivered twice but
     what could have been in flight on the killed node (at most its maxInFlight, each first sent
     before the kill); each call's begin-call arrives before its end-call.
  B. A repeat sent to another node is 200 duplicate with the same messageId, also when two
     nodes get the same event at the same moment.
  C. The database is stopped under load (pg-test.sh down, then up): while it is down, ingest
     answers 503 `unavailable` within a few seconds on every node (never 202), and what got a
     503 was not stored; once it is back, ingest works again on every node without a restart,
     and every event acknowledged before, during and after is delivered.
  D. A node holding more fresh events than it can send within its lease (slow endpoint, small
     maxInFlight): the others must not take them over while it holds them (no duplicates).
  E. Voice App changes made on node0 reach node1 within 2 s, for events ingested (and so
     delivered) on node1: a new URL; a secret rotated with graceSeconds 2 (both signatures
     until previousExpiresAt, only the new one from it on); disabled (nothing sent; sent once
     enabled again).
  F. rateLimitPerSecond 20 with 200 events stored on two nodes at once: at most 22 arrive in
     any one second (sliding, by arrival), all arrive, /metrics shows the waits.
  G. The database stopped for 10 s while node0 and node1 have deliveries in flight (the
     receiver holds its answers 5 s): the attempts complete, their results are stored once the
     database is back (delivered, one attempt), ingest answered 503 meanwhile, nothing is lost
     or delivered twice. Node0 and node1 run with a lease longer than the outage for this.
Every wait has a deadline; every process is cleaned up. The last line is `N passed, M failed`;
the exit status is 1 if anything failed.
"""

import collections
import http.client
import itertools
import json
import os
import random
import re
import secrets as _secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import Serve, ServeError, scaled, wait_until  # noqa: E402
from receiver import Receiver, Response  # noqa: E402

# The nodes share the database this test makes: a harness that gives every Serve a database of
# its own when CALLHOOK_TEST_DB_URI is set must not do so here.
harness.PG_BASE_URI = None

NODES = 3
LEASE_S = 8  # renewed every third; room for a loaded CI machine
CLIENT_THREADS = 12
MAX_IN_FLIGHT_A = 16          # the kill -9 part's app: the duplicate bound
MAX_IN_FLIGHT_C = 8           # the restart part's app (a receiver slow enough for work in
                              # flight at the stop, fast enough for no backlog)
MAX_IN_FLIGHT_D = 2           # the backlog part's app
DOWN_S = 5.0                  # how long the database stays down
HANG_S = 5.0                  # "never a hang beyond a few seconds"
CHANGE_S = 2.0                # a Voice App change reaches every node within this
RATE_F = 20                   # the rate limit part's rateLimitPerSecond
RATE_EVENTS = 200             # ... and its events, stored half on node0, half on node1
DOWN_G_S = 10.0               # the in-flight part: how long the database stays down,
HOLD_G_S = 9.0                # how long the receiver holds each answer (more than the
                              # database takes to stop on a loaded machine: 4.2 s seen),
EVENTS_G = 10                 # and how many events node0 and node1 each have in flight
SCHEDULE = [1, 1, 2, 2, 4, 4, 8, 8]
MSGID = re.compile(r"^msg_[0-9A-Za-z]{27}$")


def T(seconds):
    return scaled(seconds)


def log(msg):
    print("  " + msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Results


class Checks:
    """Named checks; a failed one prints why. `N passed, M failed` at the end."""

    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print("ok    %s" % name, flush=True)
        else:
            self.failed.append(name)
            print("FAIL  %s%s" % (name, ("\n      " + str(detail)[:4000]) if detail else ""),
                  flush=True)
        return bool(ok)


# ---------------------------------------------------------------------------------------------
# The database


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def with_dbname(uri, name):
    """The same connection with another database name (URI or keyword=value form)."""
    if uri.startswith(("postgresql://", "postgres://")):
        parts = urllib.parse.urlsplit(uri)
        return urllib.parse.urlunsplit(parts._replace(path="/" + name))
    return "%s dbname=%s" % (uri, name)


def psql(uri, sql, timeout=60):
    exe = shutil.which("psql")
    if exe is None:
        raise FileNotFoundError("psql")
    p = subprocess.run([exe, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", uri, "-c", sql],
                       capture_output=True, text=True, timeout=timeout, env=clean_env(),
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError("psql %r: %s" % (sql, (p.stderr or p.stdout).strip()))
    return p.stdout


def make_database(base_uri):
    """A fresh database for this run beside base_uri's; (uri, name) or (base_uri, None)."""
    name = "callhook_mn_" + _secrets.token_hex(4)
    try:
        psql(base_uri, 'CREATE DATABASE "%s"' % name)
    except FileNotFoundError:
        log("no psql: using %s as it is" % base_uri)
        return base_uri, None
    return with_dbname(base_uri, name), name


def drop_database(base_uri, name):
    if name and not os.environ.get("CALLHOOK_KEEP_TMP"):
        try:
            psql(base_uri, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            log("could not drop database %s: %s" % (name, e))


class Cluster:
    """scripts/pg-test.sh down/up on CALLHOOK_TEST_PG_DIR; remembers to bring it back up."""

    def __init__(self, script, pg_dir):
        self.script = script
        self.dir = pg_dir
        self.is_down = False

    def run(self, cmd):
        p = subprocess.run([self.script, cmd, self.dir], capture_output=True, text=True,
                           timeout=T(90), stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RuntimeError("pg-test.sh %s %s exited %d: %s" % (
                cmd, self.dir, p.returncode, p.stderr.strip()))
        return p.stdout.strip()

    def down(self):
        self.is_down = True
        return self.run("down")

    def up(self):
        out = self.run("up")
        self.is_down = False
        return out

    def server_log_tail(self, lines=30):
        try:
            with open(os.path.join(self.dir, "home")) as f:
                home = f.read().strip()
            with open(os.path.join(home, "server.log"), "rb") as f:
                text = f.read().decode("utf-8", "replace")
            return "\n".join(text.splitlines()[-lines:])
        except OSError as e:
            return "(no server log: %s)" % e


def port_of(uri):
    if uri.startswith(("postgresql://", "postgres://")):
        return urllib.parse.urlsplit(uri).port or 5432
    m = re.search(r"\bport\s*=\s*(\d+)", uri)
    return int(m.group(1)) if m else 5432


def port_closed(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


# ---------------------------------------------------------------------------------------------
# Events and ingest


class Templates:
    """Call records from the payloads dir with a fresh ActiveCallId (synthetic ones otherwise)."""

    def __init__(self, payloads):
        self.begin = self.end = None
        for attr, name in (("begin", "begin-call.json"), ("end", "end-call-answered.json")):
            try:
                with open(os.path.join(payloads, name), "rb") as f:
                    setattr(self, attr, json.loads(f.read()))
            except (OSError, ValueError):
                pass

    def body(self, event, call_id, seq):
        tpl = self.begin if event == "begin-call" else self.end
        rec = dict(tpl) if isinstance(tpl, dict) else {
            "CallType": 4 if event == "begin-call" else 1,
            "TenantId": "00000000-1111-2222-3333-444444444444"}
        rec["ActiveCallId"] = call_id
        rec["CorrelationId"] = "corr-" + call_id
        rec["Seq"] = seq
        return json.dumps(rec).encode()


class Sent:
    __slots__ = ("mid", "app", "call", "event", "body", "node", "status", "t_ack")

    def __init__(self, mid, app, call, event, body, node, status, t_ack):
        self.mid, self.app, self.call, self.event, self.body = mid, app, call, event, body
        self.node, self.status, self.t_ack = node, status, t_ack


class Ingester:
    """Sends events round-robin over the nodes. An event that gets a 503 or a connection error
    goes to the next node, until it is acknowledged (202, or 200 duplicate) or its deadline."""

    def __init__(self, nodes, checks_window=None):
        self.nodes = nodes
        self._rr = itertools.count()
        self._lock = threading.Lock()
        self.acked = {}        # messageId -> Sent
        self.by_event = {}     # (app, call, event) -> messageId
        self.problems = []
        self.log = []          # (t_send, t_recv, node, status or None, error class, probe)
        self.statuses = collections.Counter()
        # (start, end) of the database's stop, end None while it lasts: a 503 answered then
        # may come from a commit that happened but whose answer was lost.
        self.ambiguous = None

    def problem(self, text):
        with self._lock:
            if len(self.problems) < 200:
                self.problems.append(text)

    def _ambiguous_at(self, t_send, t_recv):
        w = self.ambiguous
        return w is not None and t_recv >= w[0] and (w[1] is None or t_send <= w[1])

    def send(self, app, call, event, body, deadline_s, pause=0.05, start_node=None):
        """Returns the Sent once acknowledged, None (and a problem) otherwise."""
        start = next(self._rr) if start_node is None else start_node
        deadline = time.monotonic() + deadline_s
        maybe_stored = False  # an earlier try may have stored it: 200 duplicate is fine
        tries = 0
        while True:
            idx = (start + tries) % len(self.nodes)
            node = self.nodes[idx]
            tries += 1
            t0 = time.monotonic()
            err = None
            try:
                r = node.ingest(app, event, body, timeout=T(10))
            except ConnectionRefusedError:
                r, err = None, "refused"  # never reached a node: nothing stored
            except (OSError, http.client.HTTPException, AttributeError) as e:
                # AttributeError: http.client itself, when the socket vanishes under a read
                # (the node was killed mid-answer).
                r, err = None, type(e).__name__
                maybe_stored = True  # the node may have died after its commit
            t1 = time.monotonic()
            with self._lock:
                self.log.append((t0, t1, idx, r.status if r else None, err, False))
                self.statuses[r.status if r else err] += 1
            if r is not None and r.status in (200, 202):
                j = r.json if isinstance(r.json, dict) else {}
                mid = j.get("messageId")
                if not MSGID.match(str(mid or "")) or j.get("duplicate") is not (r.status == 200):
                    self.problem("node%d: bad ingest answer for %s %s: %r" % (idx, call, event, r))
                    return None
                if r.status == 200 and not maybe_stored:
                    self.problem("node%d: 200 duplicate for %s %s, which no earlier try can "
                                 "have stored (%d tries): %r" % (idx, call, event, tries, r))
                sent = Sent(mid, app, call, event, body, idx, r.status, t1)
                with self._lock:
                    other = self.acked.get(mid)
                    if other is not None and (other.app, other.call, other.event) != (
                            app, call, event):
                        self.problems.append("messageId %s for both %s/%s and %s/%s" % (
                            mid, other.call, other.event, call, event))
                    prev = self.by_event.get((app, call, event))
                    if prev is not None and prev != mid:
                        self.problems.append("%s %s got two messageIds %s and %s" % (
                            call, event, prev, mid))
                    self.acked[mid] = sent
                    self.by_event[(app, call, event)] = mid
                return sent
            if r is not None and r.status != 503:
                self.problem("node%d: unexpected answer for %s %s: %r" % (idx, call, event, r))
                return None
            if r is not None and self._ambiguous_at(t0, t1):
                maybe_stored = True
            if time.monotonic() >= deadline:
                self.problem("%s %s never acknowledged within %.0fs (last: %s)" % (
                    call, event, deadline_s, r if r is not None else err))
                return None
            if tries % len(self.nodes) == 0:
                time.sleep(pause)

    def probe(self, idx, app, call, event, body):
        """One try on one node, logged; (status or None, error class, seconds, response)."""
        t0 = time.monotonic()
        r, err = None, None
        try:
            r = self.nodes[idx].ingest(app, event, body, timeout=T(10))
        except (OSError, http.client.HTTPException) as e:
            err = type(e).__name__
        t1 = time.monotonic()
        with self._lock:
            self.log.append((t0, t1, idx, r.status if r else None, err, True))
        return (r.status if r else None), err, t1 - t0, r


# ---------------------------------------------------------------------------------------------
# The test


class MultiNode:

    def __init__(self, binary, payloads, db_uri, pg_dir, pg_script):
        self.binary = binary
        self.payloads = payloads
        self.base_uri = db_uri
        self.pg_dir = pg_dir
        self.pg_script = pg_script
        self.c = Checks()
        self.seed = int(os.environ.get("CALLHOOK_TEST_SEED") or time.time() * 1000) % 2 ** 32
        self.rnd = random.Random(self.seed)
        self.run_id = _secrets.token_hex(3)
        self.templates = Templates(payloads)
        self.admin_key = "adm" + _secrets.token_hex(20)
        self.nodes = []
        self.rx = None
        self.db_uri = None
        self.db_name = None
        self.cluster = None
        self.killed = None  # index of the node killed with -9
        self.parts = set((os.environ.get("CALLHOOK_MN_PARTS") or "ABCDEFG").upper().replace(
            ",", "").replace(" ", ""))

    # -- set up ----------------------------------------------------------------------------

    def start_nodes(self):
        self.db_uri, self.db_name = make_database(self.base_uri)
        log("database %s" % re.sub(r"//[^@/]*@", "//***@", self.db_uri))
        for i in range(NODES):
            s = Serve(self.binary, admin_key=self.admin_key, extra_args=["--lease-s", str(LEASE_S)],
                      name="node%d" % i)
            s.db_url = self.db_uri  # harness starts serve with --db <db_url>
            self.nodes.append(s)
        for s in self.nodes:
            s.start()  # one after another: the first one makes the schema and the admin key
        log("nodes on ports %s" % ", ".join(str(s.port) for s in self.nodes))

    def make_app(self, tag, **settings):
        app_id = "mn-%s-%s" % (tag, self.run_id)
        body = {
            "BeginCallEventProcessingUrl": self.rx.url("/%s/begin-call" % app_id),
            "EndCallEventProcessingUrl": self.rx.url("/%s/end-call" % app_id),
            "allowInsecureHttp": True,
            "allowPrivateNetwork": True,
            "retryScheduleSeconds": SCHEDULE,
            "timeoutMs": 2000,
            "connectTimeoutMs": 1000,
            "ordering": "per-call",
        }
        body.update(settings)
        r = self.nodes[0].api("PUT", "/v1/voice-apps/" + app_id, body)
        if r.status != 201:
            raise RuntimeError("PUT /v1/voice-apps/%s on node0: %r" % (app_id, r))
        r = self.nodes[0].api("GET", "/v1/voice-apps/%s/secret" % app_id)
        secret = (r.json or {}).get("secret") if r.status == 200 else None
        if not secret:
            raise RuntimeError("GET secret of %s: %r" % (app_id, r))
        for ev in ("begin-call", "end-call"):
            self.rx.set_secrets([secret], path="/%s/%s" % (app_id, ev))
        return app_id

    # -- checks shared by the parts ---------------------------------------------------------

    def deliveries(self, app):
        prefix = "/%s/" % app
        return [r for r in self.rx.requests if r.route.startswith(prefix)]

    def wait_delivered(self, ing, app, timeout, what):
        """Every acknowledged event of app has a 2xx delivery (checked); returns the 2xx ones."""
        want = {m for m, s in ing.acked.items() if s.app == app}

        def missing():
            got = {r.webhook_id for r in self.deliveries(app)
                   if (r.response or "").startswith("2")}
            return want - got

        try:
            wait_until(lambda: not missing(), timeout, 0.25, what="deliveries")
            self.c.check("%s: every one of the %d acknowledged events delivered" % (
                what, len(want)), True)
        except TimeoutError:
            lost = sorted(missing())
            samples = []
            for mid in lost[:4]:
                for s in self.nodes:
                    if s.alive:
                        try:
                            samples.append(s.api("GET", "/v1/messages/" + mid, timeout=5).json)
                        except (OSError, http.client.HTTPException) as e:
                            samples.append(repr(e))
                        break
            self.c.check("%s: every one of the %d acknowledged events delivered" % (
                what, len(want)), False, "%d never delivered within %.0fs, e.g. %s" % (
                    len(lost), timeout, json.dumps(samples)[:3000]))
        return [r for r in self.deliveries(app) if (r.response or "").startswith("2")]

    def check_deliveries(self, ing, app, ok, what):
        """As ingested, signed, acknowledged; begin-call first. Returns the duplicate counter."""
        bad = []
        for r in ok:
            s = ing.acked.get(r.webhook_id)
            if s is None:
                bad.append("delivered but never acknowledged: %s" % r.webhook_id)
            elif r.body != s.body or r.event != s.event or r.route != "/%s/%s" % (app, s.event):
                bad.append("%s not delivered as ingested (%s %s)" % (r.webhook_id, r.route,
                                                                     r.event))
            elif not r.verified:
                bad.append("%s: signature does not verify: %r" % (r.webhook_id, r.verification))
        self.c.check("%s: deliveries are the acknowledged events, as ingested and signed" % what,
                     not bad, "%d bad, e.g. %s" % (len(bad), bad[:5]))
        # Per-call ordering: the first begin-call before the first end-call of the call.
        first = {}
        for r in ok:
            s = ing.acked.get(r.webhook_id)
            if s is not None:
                k = (s.call, s.event)
                if k not in first:
                    first[k] = r
        late = []
        for (call, event), end in first.items():
            if event != "end-call":
                continue
            begin = first.get((call, "begin-call"))
            if begin is not None and end.mono < begin.mono:
                late.append("%s: end-call %.3fs before begin-call" % (call,
                                                                      begin.mono - end.mono))
        calls = sum(1 for (_, e) in first if e == "end-call")
        self.c.check("%s: begin-call arrives before end-call (%d calls)" % (what, calls),
                     not late, "%d calls out of order, e.g. %s" % (len(late), late[:5]))
        return collections.Counter(r.webhook_id for r in ok)

    @staticmethod
    def dup_detail(ing, ok, counts):
        """What the extra copies look like: which events, how far apart (a lease takeover is
        --lease-s after the first copy; a double claim is much sooner)."""
        arrivals = collections.defaultdict(list)
        for r in ok:
            if counts[r.webhook_id] > 1:
                arrivals[r.webhook_id].append(r.mono)
        gaps = sorted(t[1] - t[0] for t in (sorted(v) for v in arrivals.values()))
        if not gaps:
            return "no duplicates"
        events = collections.Counter(ing.acked[m].event for m in arrivals if m in ing.acked)
        return ("%d messages delivered more than once (%s); gap between the first two copies: "
                "min %.2fs, median %.2fs, max %.2fs; e.g. %s" % (
                    len(arrivals), dict(events), gaps[0], gaps[len(gaps) // 2], gaps[-1],
                    ["%s x%d" % (m, counts[m]) for m in list(arrivals)[:5]]))

    def ingest_health(self, ing, what):
        self.c.check("%s: every event acknowledged, no unexpected answer" % what,
                     not ing.problems, "%d problems, e.g.\n      %s" % (
                         len(ing.problems), "\n      ".join(ing.problems[:8])))

    # -- A: load and kill -9 ----------------------------------------------------------------

    def part_a(self):
        calls = int(os.environ.get("CALLHOOK_MN_CALLS") or 1500)
        app = self.make_app("a", maxInFlight=MAX_IN_FLIGHT_A)
        self.app_a = app
        r = [s.api("GET", "/v1/voice-apps/" + app) for s in self.nodes]
        self.c.check("A: an app PUT on node0 is seen by every node",
                     all(x.status == 200 for x in r), r)
        # A slightly slow receiver, so that the kill finds deliveries in flight.
        for ev in ("begin-call", "end-call"):
            self.rx.set_default(Response.ok(delay_s=0.02), path="/%s/%s" % (app, ev))
        ing = Ingester(self.nodes)
        self.ing_a = ing
        counter = itertools.count()
        total = 2 * calls

        def worker(t):
            wr = random.Random(self.seed + t)
            while True:
                i = next(counter)
                if i >= calls:
                    return
                call = "mn-%s-a%05d" % (self.run_id, i)
                for seq, event in enumerate(("begin-call", "end-call")):
                    body = self.templates.body(event, call, seq)
                    if ing.send(app, call, event, body, T(60)) is None:
                        break  # a problem is recorded; do not send the end-call alone
                if wr.random() < 0.1:
                    time.sleep(wr.uniform(0.001, 0.01))

        t0 = time.monotonic()
        threads = [threading.Thread(target=worker, args=(t,), daemon=True,
                                    name="client-%d" % t) for t in range(CLIENT_THREADS)]
        for t in threads:
            t.start()
        # Kill -9 a node midway, and start it again a little later (from the main thread: the
        # harness's parent-death signal follows the thread that forked).
        self.killed = 1
        try:
            wait_until(lambda: len(ing.acked) >= int(total * 0.4) or
                       not any(t.is_alive() for t in threads), T(90), 0.02,
                       what="40% of the events acknowledged")
        except TimeoutError as e:
            self.c.check("A: 40%% of the events acknowledged within %.0fs" % T(90), False, e)
        self.kill_at = time.monotonic()
        acked_at_kill = len(ing.acked)
        self.nodes[self.killed].kill9()
        log("kill -9 node%d after %d of %d events (%.1fs)" % (
            self.killed, acked_at_kill, total, self.kill_at - t0))
        time.sleep(2.0)
        try:
            self.nodes[self.killed].start()
            restarted = True
        except ServeError as e:
            restarted = False
            self.c.check("A: the killed node starts again on the shared database", False, e)
        for t in threads:
            t.join(max(1.0, t0 + T(150) - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        self.c.check("A: the clients finished", not alive, alive)
        elapsed = time.monotonic() - t0
        log("%d events acknowledged in %.1fs (%.0f/s); answers %s" % (
            len(ing.acked), elapsed, len(ing.acked) / max(elapsed, 0.001), dict(ing.statuses)))
        if restarted:
            self.c.check("A: the killed node starts again on the shared database", True)
        self.ingest_health(ing, "A")
        self.c.check("A: %d events acknowledged, %d distinct messageIds" % (total, total),
                     len(ing.acked) == total and len(ing.by_event) == total,
                     "%d acknowledged, %d events" % (len(ing.acked), len(ing.by_event)))
        self.c.check("A: the events were spread over every node",
                     len({s.node for s in ing.acked.values()}) == NODES,
                     collections.Counter(s.node for s in ing.acked.values()))

        ok = self.wait_delivered(ing, app, T(60), "A")
        time.sleep(1.5)  # late copies
        ok = [r for r in self.deliveries(app) if (r.response or "").startswith("2")]
        counts = self.check_deliveries(ing, app, ok, "A")
        dups = {m: n for m, n in counts.items() if n > 1}
        extra = sum(counts.values()) - len(counts)
        log("%d deliveries of %d messages, %d extra" % (sum(counts.values()), len(counts), extra))
        # What the killed node had in flight, plus what it had delivered in its last result
        # flush window (attempt results are written every 10 ms, not one by one): at most twice
        # its maxInFlight. Every such copy is also checked below to predate the kill.
        self.c.check("A: at most %d extra deliveries (twice the killed node's maxInFlight)" %
                     (2 * MAX_IN_FLIGHT_A), extra <= 2 * MAX_IN_FLIGHT_A,
                     "%d extra: %s" % (extra, self.dup_detail(ing, ok, counts)))
        self.c.check("A: no message delivered more than twice",
                     not counts or max(counts.values()) <= 2, counts.most_common(3))
        early = {}
        for r in ok:
            if r.webhook_id in dups and r.webhook_id not in early:
                early[r.webhook_id] = r.mono
        after = sorted(t - self.kill_at for t in early.values() if t > self.kill_at + 1.0)
        self.c.check("A: every message delivered twice was first sent before the kill "
                     "(in flight on the killed node)", not after,
                     "%d were first sent %.2f-%.2fs after the kill" % (
                         len(after), after[0], after[-1]) if after else "")

    # -- B: duplicates across nodes --------------------------------------------------------

    def part_b(self):
        ing = self.ing_a
        app = self.app_a
        sample = self.rnd.sample(sorted(ing.acked), min(30, len(ing.acked)))
        bad = []
        for mid in sample:
            s = ing.acked[mid]
            idx = (s.node + 1 + self.rnd.randrange(NODES - 1)) % NODES
            r = self.nodes[idx].ingest(app, s.event, s.body, timeout=T(10))
            j = r.json if isinstance(r.json, dict) else {}
            if r.status != 200 or j.get("duplicate") is not True or j.get("messageId") != mid:
                bad.append("%s acknowledged by node%d, repeated on node%d: %r" % (
                    mid, s.node, idx, r))
        self.c.check("B: a repeat on another node is 200 duplicate with the same messageId "
                     "(%d events)" % len(sample), not bad, bad[:5])

        # The same event on two nodes at the same moment: one 202, one 200, one messageId.
        pairs = 20
        results = []
        lock = threading.Lock()
        before = len(self.rx.requests)

        def race(i):
            call = "mn-%s-b%03d" % (self.run_id, i)
            body = self.templates.body("begin-call", call, 0)
            barrier = threading.Barrier(2)
            out = [None, None]

            def one(k, idx):
                try:
                    barrier.wait(5)
                    out[k] = self.nodes[idx].ingest(app, "begin-call", body, timeout=T(10))
                except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as e:
                    out[k] = e
            ts = [threading.Thread(target=one, args=(0, 0)),
                  threading.Thread(target=one, args=(1, 2))]
            for t in ts:
                t.start()
            for t in ts:
                t.join(T(15))
            with lock:
                results.append((call, body, out))

        threads = [threading.Thread(target=race, args=(i,)) for i in range(pairs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(30))
        bad = []
        mids = {}
        for call, body, out in results:
            ok = all(isinstance(r, harness.ApiResponse) for r in out)
            if ok:
                statuses = sorted(r.status for r in out)
                ids = {(r.json or {}).get("messageId") for r in out}
                ok = statuses == [200, 202] and len(ids) == 1
                if ok:
                    mids[ids.pop()] = body
            if not ok:
                bad.append("%s: %r" % (call, out))
        self.c.check("B: the same event on two nodes at once: one 202, one 200 duplicate, one "
                     "messageId (%d pairs)" % pairs, not bad and len(results) == pairs,
                     "%d/%d bad: %s" % (len(bad), len(results), bad[:4]))
        try:
            self.rx.wait_until(lambda rs: set(mids) <= {r.webhook_id for r in rs[before:]
                                                        if (r.response or "").startswith("2")},
                               T(20), "the raced events delivered")
            time.sleep(1.0)
            counts = collections.Counter(r.webhook_id for r in self.rx.requests[before:]
                                         if r.webhook_id in mids)
            self.c.check("B: each raced event delivered once", all(
                counts[m] == 1 for m in mids), counts.most_common(3))
        except TimeoutError as e:
            self.c.check("B: each raced event delivered once", False, e)

    # -- C: the database restarted under load ----------------------------------------------

    def part_c(self):
        if not self.pg_dir:
            self.c.check("C: database restart (CALLHOOK_TEST_PG_DIR names the cluster)", False,
                         "CALLHOOK_TEST_PG_DIR is not set: cannot restart the database")
            return
        self.cluster = Cluster(self.pg_script, self.pg_dir)
        pg_port = port_of(self.base_uri)
        app = self.make_app("c", maxInFlight=MAX_IN_FLIGHT_C)
        for ev in ("begin-call", "end-call"):
            self.rx.set_default(Response.ok(delay_s=0.05), path="/%s/%s" % (app, ev))
        ing = Ingester(self.nodes)
        stop = threading.Event()
        counter = itertools.count()

        def loader(t):
            while not stop.is_set():
                i = next(counter)
                call = "mn-%s-c%05d" % (self.run_id, i)
                for seq, event in enumerate(("begin-call", "end-call")):
                    if ing.send(app, call, event, self.templates.body(event, call, seq), T(60),
                                pause=0.1) is None:
                        break
                time.sleep(0.05)

        loaders = [threading.Thread(target=loader, args=(t,), daemon=True, name="loader-%d" % t)
                   for t in range(4)]
        for t in loaders:
            t.start()
        time.sleep(3.0)
        acked_before = len(ing.acked)

        # Down.
        t_stop = time.monotonic()
        ing.ambiguous = (t_stop, None)
        try:
            self.cluster.down()
        except (RuntimeError, subprocess.SubprocessError) as e:
            stop.set()
            self.c.check("C: pg-test.sh down", False, e)
            return
        t_down = time.monotonic()
        ing.ambiguous = (t_stop, t_down)
        self.c.check("C: the database is down (127.0.0.1:%d refuses connections)" % pg_port,
                     port_closed(pg_port))
        log("database down after %d events acknowledged (stop took %.1fs)" % (
            acked_before, t_down - t_stop))

        probes = collections.defaultdict(list)   # node -> [(status, err, seconds, code)]
        health = collections.defaultdict(list)   # node -> [status or error]
        refused = []                             # (call, body) answered 503 while down
        window_end = t_down + DOWN_S

        def prober(idx):
            n = 0
            while time.monotonic() < window_end:
                call = "mn-%s-p%d-%d" % (self.run_id, idx, n)
                n += 1
                body = self.templates.body("begin-call", call, 0)
                status, err, secs, r = ing.probe(idx, app, call, "begin-call", body)
                probes[idx].append((status, err, secs, r.error_code if r else None))
                if status == 503:
                    refused.append((call, body))
                try:
                    h = harness.http_request(self.nodes[idx].port, "GET", "/healthz",
                                             timeout=T(10))
                    health[idx].append(h.status)
                except (OSError, http.client.HTTPException) as e:
                    health[idx].append(type(e).__name__)
                time.sleep(0.3)

        probers = [threading.Thread(target=prober, args=(i,), daemon=True)
                   for i in range(NODES)]
        for t in probers:
            t.start()
        for t in probers:
            t.join(max(0.5, window_end + T(12) - time.monotonic()))

        # Up.
        t_up = time.monotonic()
        try:
            self.cluster.up()
        except (RuntimeError, subprocess.SubprocessError) as e:
            stop.set()
            self.c.check("C: pg-test.sh up", False, e)
            return
        t_ready = time.monotonic()
        log("database down %.1fs, up again (start took %.1fs)" % (t_up - t_down, t_ready - t_up))

        # While down: 503 `unavailable` from every node, fast; /healthz 503.
        for i in range(NODES):
            got = probes.get(i, [])
            self.c.check("C: node%d answers ingest 503 unavailable while the database is down "
                         "(%d tries)" % (i, len(got)),
                         got and all(p[0] == 503 and p[3] == "unavailable" for p in got),
                         got[:6])
            self.c.check("C: node%d /healthz is 503 while the database is down" % i,
                         health.get(i) and all(h == 503 for h in health[i]), health.get(i))
        during = [e for e in ing.log if e[0] >= t_down and e[1] <= t_up]
        slow = [e for e in ing.log if e[0] >= t_down and e[0] < t_up and e[1] - e[0] > T(HANG_S)]
        self.c.check("C: no ingest answer took over %.0fs while the database was down (%d "
                     "requests)" % (T(HANG_S), len([e for e in ing.log if t_down <= e[0] < t_up])),
                     not slow, ["node%d %s after %.1fs" % (e[2], e[3] or e[4], e[1] - e[0])
                                for e in slow[:6]])
        accepted = [e for e in during if e[3] in (200, 202)]
        self.c.check("C: no event acknowledged while the database was down (%d answers)" %
                     len(during), not accepted,
                     ["node%d %s" % (e[2], e[3]) for e in accepted[:6]])

        # Back by itself: a fresh event is accepted on every node, /healthz 200.
        for i in range(NODES):
            n = itertools.count()

            def accepted_now(i=i, n=n):
                call = "mn-%s-r%d-%d" % (self.run_id, i, next(n))
                body = self.templates.body("begin-call", call, 0)
                status, err, secs, r = ing.probe(i, app, call, "begin-call", body)
                if status == 202:
                    mid = r.json["messageId"]
                    with ing._lock:
                        ing.acked[mid] = Sent(mid, app, call, "begin-call", body, i, 202,
                                              time.monotonic())
                    return True
                return False
            try:
                wait_until(accepted_now, T(30), 0.2, what="ingest accepted on node%d" % i)
                self.c.check("C: node%d accepts ingest again without a restart (%.1fs after "
                             "the database)" % (i, time.monotonic() - t_ready), True)
            except TimeoutError as e:
                self.c.check("C: node%d accepts ingest again without a restart" % i, False, e)
            try:
                h = harness.http_request(self.nodes[i].port, "GET", "/healthz", timeout=T(10))
                self.c.check("C: node%d /healthz is 200 again" % i, h.status == 200, h)
            except (OSError, http.client.HTTPException) as e:
                self.c.check("C: node%d /healthz is 200 again" % i, False, e)

        # What got a 503 while the database was down was not stored.
        stored = []
        for call, body in refused:
            s = ing.send(app, call, "begin-call", body, T(30))
            if s is not None and s.status != 202:
                stored.append("%s: %s" % (call, s.status))
        self.c.check("C: events answered 503 while the database was down were not stored "
                     "(%d sent again: 202, not duplicates)" % len(refused),
                     refused and not stored, stored[:5] if refused else "no 503 was answered")

        time.sleep(3.0)
        stop.set()
        for t in loaders:
            t.join(T(70))
        self.c.check("C: the clients finished", not any(t.is_alive() for t in loaders))
        log("%d events acknowledged (%d before the stop); answers %s" % (
            len(ing.acked), acked_before, dict(ing.statuses)))
        self.ingest_health(ing, "C")
        ok = self.wait_delivered(ing, app, T(60), "C")
        time.sleep(1.5)
        ok = [r for r in self.deliveries(app) if (r.response or "").startswith("2")]
        counts = self.check_deliveries(ing, app, ok, "C")
        extra = sum(counts.values()) - len(counts)
        bound = NODES * MAX_IN_FLIGHT_C
        log("%d deliveries of %d messages, %d extra" % (sum(counts.values()), len(counts), extra))
        self.c.check("C: at most %d extra deliveries (what was in flight at the stop)" % bound,
                     extra <= bound, "%d extra: %s" % (extra, self.dup_detail(ing, ok, counts)))
        alive = [s.name for s in self.nodes if not s.alive]
        self.c.check("C: every node survived the database restart", not alive,
                     "%s exited: %s" % (alive, [s.exits for s in self.nodes]))

    # -- D: more claimed work than a lease lasts -------------------------------------------

    def part_d(self):
        """A node holding more fresh events than it can send within --lease-s (a slow endpoint,
        a small maxInFlight) must not let another node take them over while it still holds
        them: nothing may be delivered twice (no node dies here)."""
        app = self.make_app("d", maxInFlight=MAX_IN_FLIGHT_D, ordering="none")
        delay = 0.1
        for ev in ("begin-call", "end-call"):
            self.rx.set_default(Response.ok(delay_s=delay), path="/%s/%s" % (app, ev))
        ing = Ingester(self.nodes)
        # Each node sends at most maxInFlight / delay a second (20): give each 1.6 leases' worth.
        rate = MAX_IN_FLIGHT_D / delay
        per_node = int(rate * LEASE_S * 1.6)
        counter = itertools.count()

        def worker():
            while True:
                i = next(counter)
                if i >= per_node * NODES // 2:
                    return
                call = "mn-%s-d%05d" % (self.run_id, i)
                for seq, event in enumerate(("begin-call", "end-call")):
                    ing.send(app, call, event, self.templates.body(event, call, seq), T(30))

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(60))
        self.ingest_health(ing, "D")
        ok = self.wait_delivered(ing, app, T(60), "D")
        time.sleep(1.5)
        ok = [r for r in self.deliveries(app) if (r.response or "").startswith("2")]
        counts = collections.Counter(r.webhook_id for r in ok)
        extra = sum(counts.values()) - len(counts)
        log("%d deliveries of %d messages, %d extra" % (sum(counts.values()), len(counts), extra))
        self.c.check("D: a backlog longer than the lease (%d events a node, %.0fs of work, "
                     "--lease-s %d) is delivered once" % (per_node, per_node / rate, LEASE_S),
                     extra == 0, "%d extra: %s" % (extra, self.dup_detail(ing, ok, counts)))

    # -- helpers of the parts E, F and G ----------------------------------------------------

    def metrics(self, idx):
        """The node's /metrics as {name: value} (labelled series under their full name)."""
        r = self.nodes[idx].api("GET", "/metrics", timeout=T(10))
        if r.status != 200:
            raise RuntimeError("GET /metrics on node%d: %r" % (idx, r))
        out = {}
        for line in r.body.decode("utf-8", "replace").splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def ingest_on(self, idx, ing, app, tag, event="begin-call"):
        """One event on node idx only (no other node tried); the Sent once acknowledged with
        202, None otherwise (recorded as a problem of ing)."""
        call = "mn-%s-%s" % (self.run_id, tag)
        body = self.templates.body(event, call, 0)
        status, err, _, r = ing.probe(idx, app, call, event, body)
        if status != 202:
            ing.problem("node%d: %s %s answered %s" % (idx, call, event, r if r else err))
            return None
        sent = Sent(r.json["messageId"], app, call, event, body, idx, 202, time.monotonic())
        with ing._lock:
            ing.acked[sent.mid] = sent
            ing.by_event[(app, call, event)] = sent.mid
        return sent

    def app_body(self, app_id, prefix, **settings):
        """A full PUT body (a PUT replaces every setting) with URLs under /<prefix>/."""
        body = {
            "BeginCallEventProcessingUrl": self.rx.url("/%s/begin-call" % prefix),
            "EndCallEventProcessingUrl": self.rx.url("/%s/end-call" % prefix),
            "allowInsecureHttp": True,
            "allowPrivateNetwork": True,
            "retryScheduleSeconds": SCHEDULE,
            "timeoutMs": 2000,
            "connectTimeoutMs": 1000,
            "ordering": "none",
        }
        body.update(settings)
        return body

    def delivered_totals(self):
        return [self.metrics(i).get("callhook_delivered_total", 0.0) for i in range(NODES)]

    @staticmethod
    def most_in_one_second(times):
        """The most of the sorted times within any one second (sliding), and where it ends."""
        worst, end, j = 0, None, 0
        for i, t in enumerate(times):
            while times[j] <= t - 1.0:
                j += 1
            if i - j + 1 > worst:
                worst, end = i - j + 1, t
        return worst, end

    def stored_start_windows(self, recs):
        """For a failed rate check: the most attempts started in one second by the nodes'
        own clocks (atMs - durationMs of each stored attempt), and the receiver's lag."""
        starts, lags = [], []
        for r in recs:
            m = self.nodes[2].api("GET", "/v1/messages/" + r.webhook_id, timeout=T(5)).json
            for a in (m or {}).get("attempts") or []:
                start_ms = a["atMs"] - a["durationMs"]
                starts.append(start_ms / 1000.0)
                lags.append(r.time - start_ms / 1000.0)
        if not lags:
            return "no attempts"
        starts.sort()
        lags.sort()
        worst, end = self.most_in_one_second(starts)
        first = starts[0]
        within = [round((t - first) * 1000) for t in starts if end - 1.0 < t <= end]
        return ("%d starts, at most %d in one second (%s ms after the first start); arrival "
                "minus start: min %.3fs, median %.3fs, max %.3fs" % (
                    len(starts), worst, within, lags[0], lags[len(lags) // 2], lags[-1]))

    # -- E: Voice App changes reach every node ---------------------------------------------

    def part_e(self):
        """On node0 the app's URL is changed, then its secret rotated with a grace of 2 s, then
        it is disabled and enabled again; events ingested on node1 (and so delivered by node1:
        a fresh event is claimed by the node that stores it) follow each change within
        CHANGE_S."""
        app = "mn-e-%s" % self.run_id
        old, new = "%s/v1" % app, "%s/v2" % app
        r = self.nodes[0].api("PUT", "/v1/voice-apps/" + app, self.app_body(app, old))
        if r.status != 201:
            raise RuntimeError("PUT /v1/voice-apps/%s on node0: %r" % (app, r))
        secret0 = self.nodes[0].api("GET", "/v1/voice-apps/%s/secret" % app).json["secret"]
        for prefix in (old, new):
            for ev in ("begin-call", "end-call"):
                self.rx.set_secrets([secret0], path="/%s/%s" % (prefix, ev))
        ing = Ingester(self.nodes)
        feed = []  # (Sent, monotonic time of the ack) of every event fed on node1
        stop = threading.Event()
        n = itertools.count()

        def feeder():
            while not stop.is_set():
                s = self.ingest_on(1, ing, app, "e%05d" % next(n))
                if s is not None:
                    feed.append(s)
                time.sleep(0.05)

        def arrivals(since=None):
            return [x for x in self.rx.requests if x.route.startswith("/%s/" % app)
                    and (since is None or x.mono >= since)]

        th = threading.Thread(target=feeder, daemon=True, name="feeder-e")
        th.start()
        try:
            # Node1 delivers under the first settings before anything changes.
            try:
                self.rx.wait_until(lambda rs: sum(1 for x in rs if x.route.startswith(
                    "/%s/" % old)) >= 5, T(10), "node1's first deliveries")
            except TimeoutError as e:
                self.c.check("E: node1 delivers the app's events", False, e)
                return
            totals_before = self.delivered_totals()

            # 1. The URL. Every delivery CHANGE_S after the PUT goes to the new one.
            body = self.app_body(app, new)
            r = self.nodes[0].api("PUT", "/v1/voice-apps/" + app, body)
            t_put = time.monotonic()
            self.c.check("E: PUT of a new URL on node0", r.status == 200, r)
            time.sleep(CHANGE_S + 1.5)
            late = arrivals(t_put + CHANGE_S)
            stale = [x.route for x in late if not x.route.startswith("/%s/" % new)]
            self.c.check("E: %.0fs after a URL change on node0, node1 delivers to the new URL "
                         "(%d deliveries)" % (CHANGE_S, len(late)),
                         len(late) >= 5 and not stale,
                         "%d of %d to the old URL, e.g. %s" % (len(stale), len(late), stale[:3]))

            # 2. The secret, rotated just after a second starts, so that the grace lasts
            # nearly its 2 s. Before previousExpiresAt a delivery that node1 signs with the new
            # secret is signed with the old one too; from it on, only with the new one.
            wait_until(lambda: 0.02 < time.time() % 1.0 < 0.2, 2.0, 0.01, what="a new second")
            r = self.nodes[0].api("POST", "/v1/voice-apps/%s/secret/rotate" % app,
                                  {"graceSeconds": 2})
            t_rot = time.monotonic()
            j = r.json if isinstance(r.json, dict) else {}
            if not self.c.check("E: rotate with graceSeconds 2 on node0",
                                r.status == 200 and j.get("previous") == secret0
                                and j.get("secret") and j.get("secret") != secret0
                                and isinstance(j.get("previousExpiresAt"), int), r):
                return
            secret1, expires = j["secret"], j["previousExpiresAt"]
            for ev in ("begin-call", "end-call"):
                self.rx.set_secrets([secret0, secret1], path="/%s/%s" % (new, ev))
            wait_until(lambda: time.time() >= expires + 2.0, T(10), 0.05,
                       what="previousExpiresAt + 2 s")
            t_after = time.monotonic()
            signed = [x for x in arrivals(t_put + CHANGE_S) if x.route.startswith("/%s/" % new)
                      and x.mono < t_after]
            before = [x for x in signed if x.mono < t_rot]
            grace = [x for x in signed if x.mono >= t_rot and x.verification and int(
                x.headers.get("webhook-timestamp", "0")) < expires]
            after = [x for x in signed if int(x.headers.get("webhook-timestamp", "0")) >= expires]
            both = [x for x in grace if x.verification.matched == [0, 1]]
            new_only = [x for x in grace if x.verification.matched == [1]]
            self.c.check("E: before the rotation node1 signs with the first secret only",
                         before and all(x.verification.matched == [0] for x in before),
                         [(x.webhook_id, x.verification) for x in before
                          if x.verification.matched != [0]][:3])
            self.c.check("E: during the grace period node1 signs with both secrets once it has "
                         "the new one (%d with both, %d new only, %d old only)" % (
                             len(both), len(new_only), len(grace) - len(both) - len(new_only)),
                         both and not new_only, [(x.webhook_id, x.verification)
                                                 for x in new_only[:3]])
            old_sig = [x for x in after if not x.verification or x.verification.matched != [1]]
            self.c.check("E: from previousExpiresAt on, node1 signs with the new secret only: "
                         "the old one does not verify (%d deliveries)" % len(after),
                         len(after) >= 5 and not old_sig,
                         [(x.webhook_id, x.headers.get("webhook-timestamp"), expires,
                           x.verification) for x in old_sig[:3]])
            totals = self.delivered_totals()
            delta = [a - b for a, b in zip(totals, totals_before)]
            self.c.check("E: node1 made the deliveries (callhook_delivered_total grew on node1 "
                         "only: %s)" % delta, delta[1] > 0 and delta[0] == 0 and delta[2] == 0)

            # 3. Disabled: what node1 takes CHANGE_S after the disable is not sent; it is once
            # the app is enabled again.
            r = self.nodes[0].api("PUT", "/v1/voice-apps/" + app, dict(body, enabled=False))
            t_dis = time.monotonic()
            self.c.check("E: PUT enabled false on node0", r.status == 200, r)
            time.sleep(CHANGE_S + 2.0)
            t_enable = time.monotonic()
            held = [s for s in feed if s.t_ack >= t_dis + CHANGE_S and s.t_ack < t_enable - 0.5]
            held_ids = {s.mid for s in held}
            sent = [x for x in arrivals(t_dis + CHANGE_S) if x.mono < t_enable]
            self.c.check("E: %.0fs after a disable on node0 node1 sends nothing (%d events "
                         "ingested on node1 meanwhile)" % (CHANGE_S, len(held)),
                         len(held) >= 5 and not sent,
                         "%d sent, e.g. %s" % (len(sent), [x.webhook_id for x in sent[:3]]))
            r = self.nodes[0].api("PUT", "/v1/voice-apps/" + app, dict(body, enabled=True))
            self.c.check("E: PUT enabled true on node0", r.status == 200, r)
            try:
                self.rx.wait_until(lambda rs: held_ids <= {x.webhook_id for x in rs if (
                    x.response or "").startswith("2")}, T(10), "the held events delivered")
                self.c.check("E: the events held while disabled are delivered once the app is "
                             "enabled again (%.1fs)" % (time.monotonic() - t_enable), True)
            except TimeoutError:
                got = {x.webhook_id for x in self.rx.requests}
                self.c.check("E: the events held while disabled are delivered once the app is "
                             "enabled again", False, "%d of %d not delivered within %.0fs" % (
                                 len(held_ids - got), len(held_ids), T(10)))
        finally:
            stop.set()
            th.join(T(15))
        self.ingest_health(ing, "E")
        self.wait_delivered(ing, app, T(20), "E")
        time.sleep(0.5)
        counts = collections.Counter(x.webhook_id for x in arrivals())
        self.c.check("E: each event delivered once (%d events)" % len(ing.acked),
                     all(c == 1 for c in counts.values()), counts.most_common(3))

    # -- F: the rate limit across nodes ----------------------------------------------------

    def part_f(self):
        """An app at RATE_F a second with RATE_EVENTS events stored on two nodes at once (each
        claims what it stores): the receiver gets at most RATE_F + 2 in any second, and all."""
        app = self.make_app("f", ordering="none", maxInFlight=16, rateLimitPerSecond=RATE_F)
        before = [self.metrics(i) for i in range(NODES)]
        ing = Ingester(self.nodes)
        per_node = RATE_EVENTS // 2
        counter = itertools.count()

        def worker(idx):
            while True:
                i = next(counter)
                if i >= RATE_EVENTS:
                    return
                self.ingest_on(idx, ing, app, "f%05d" % i)

        t0 = time.monotonic()
        threads = [threading.Thread(target=worker, args=(t % 2,), daemon=True)
                   for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(30))
        t_ingested = time.monotonic()
        self.ingest_health(ing, "F")
        by_node = collections.Counter(s.node for s in ing.acked.values())
        log("%d events stored in %.1fs (%s)" % (len(ing.acked), t_ingested - t0, dict(by_node)))
        self.c.check("F: %d events stored on node0 and node1 (%d each, or near)" % (
            RATE_EVENTS, per_node), len(ing.acked) == RATE_EVENTS and
            min(by_node.get(0, 0), by_node.get(1, 0)) >= RATE_EVENTS // 4, dict(by_node))
        self.wait_delivered(ing, app, T(RATE_EVENTS / RATE_F * 3), "F")
        time.sleep(1.0)
        ok = [r for r in self.deliveries(app) if (r.response or "").startswith("2")]
        times = sorted(r.mono for r in self.deliveries(app))
        worst, at = self.most_in_one_second(times)
        at = (at or t0) - t0
        span = times[-1] - times[0] if times else 0.0
        log("%d deliveries over %.1fs (%.1f a second); at most %d in one second (at %.1fs)" % (
            len(times), span, len(times) / max(span, 0.001), worst, at))
        if not self.c.check("F: at most %d deliveries in any one second (rateLimitPerSecond "
                            "%d, two nodes): %d" % (RATE_F + 2, RATE_F, worst),
                            worst <= RATE_F + 2, "%d within one second ending %.2fs after the "
                            "first event" % (worst, at)):
            log("the same from the attempts' start times as the nodes stored them: %s" %
                self.stored_start_windows(ok))
        counts = collections.Counter(r.webhook_id for r in ok)
        self.c.check("F: each event delivered once", all(c == 1 for c in counts.values()),
                     counts.most_common(3))
        after = [self.metrics(i) for i in range(NODES)]

        def grew(name):
            return [after[i].get(name, 0.0) - before[i].get(name, 0.0) for i in range(NODES)]
        waits, waited = grew("callhook_ratelimit_wait_seconds_count"), grew(
            "callhook_ratelimit_wait_seconds_sum")
        deferred = grew("callhook_ratelimit_deferred_total")
        self.c.check("F: /metrics shows the deliveries that waited on the limit "
                     "(callhook_ratelimit_wait_seconds count %s, sum %s)" % (
                         waits, ["%.1f" % w for w in waited]),
                     sum(waits) >= RATE_EVENTS and any(w > 0 for w in waited))
        self.c.check("F: /metrics shows what the limit gave back to the store "
                     "(callhook_ratelimit_deferred_total %s)" % deferred, any(
                         d > 0 for d in deferred))

    # -- G: the database down while deliveries are in flight ------------------------------

    def part_g(self):
        """PostgreSQL stopped for DOWN_G_S while node0 and node1 hold deliveries in flight (the
        receiver holds its answers HOLD_G_S): the attempts complete, their results are stored
        once the database is back, nothing acknowledged is lost, nothing is delivered twice.
        The two nodes run with a lease longer than the outage for this part: a lease that lapses
        while results cannot be written lets another node deliver the message again (as after
        a crash)."""
        if not self.pg_dir:
            self.c.check("G: database down (CALLHOOK_TEST_PG_DIR names the cluster)", False,
                         "CALLHOOK_TEST_PG_DIR is not set: cannot stop the database")
            return
        if self.cluster is None:
            self.cluster = Cluster(self.pg_script, self.pg_dir)
        lease = int(DOWN_G_S * 3)
        for idx in (0, 1):
            s = self.nodes[idx]
            s.stop()
            s.extra_args = ["--lease-s", str(lease)]
            s.start()
        app = self.make_app("g", ordering="none", maxInFlight=32, timeoutMs=int(
            (HOLD_G_S + DOWN_G_S) * 1000))
        for ev in ("begin-call", "end-call"):
            self.rx.set_default(Response.ok(delay_s=HOLD_G_S), path="/%s/%s" % (app, ev))
        ing = Ingester(self.nodes)
        for i in range(2 * EVENTS_G):
            self.ingest_on(i % 2, ing, app, "g%03d" % i)
        self.ingest_health(ing, "G")
        want = set(ing.acked)
        try:
            self.rx.wait_until(lambda rs: want <= {r.webhook_id for r in rs}, T(10),
                               "every event in flight at the receiver")
        except TimeoutError as e:
            self.c.check("G: %d deliveries in flight" % len(want), False, e)
            return

        t_stop = time.monotonic()
        try:
            self.cluster.down()
        except (RuntimeError, subprocess.SubprocessError) as e:
            self.c.check("G: pg-test.sh down", False, e)
            return
        t_down = time.monotonic()
        log("database down (stop took %.1fs)" % (t_down - t_stop))
        held = [r for r in self.deliveries(app) if r.webhook_id in want]
        self.c.check("G: %d attempts were in flight on node0 and node1 when the database "
                     "stopped" % len(held), len(held) == len(want) and all(
                         r.done_mono is None or r.done_mono > t_down for r in held),
                     "%d answered before the database was down" % sum(
                         1 for r in held if r.done_mono is not None and r.done_mono <= t_down))

        probes, health = [], collections.defaultdict(list)
        k = itertools.count()
        while time.monotonic() < t_down + DOWN_G_S:
            for idx in range(NODES):
                call = "mn-%s-gp%04d" % (self.run_id, next(k))
                body = self.templates.body("begin-call", call, 0)
                status, err, _, r = ing.probe(idx, app, call, "begin-call", body)
                probes.append((idx, status if r else err, r.error_code if r else None))
                try:
                    h = harness.http_request(self.nodes[idx].port, "GET", "/healthz",
                                             timeout=T(5))
                    health[idx].append(h.status)
                except (OSError, http.client.HTTPException) as e:
                    health[idx].append(type(e).__name__)
            time.sleep(0.5)
        t_up = time.monotonic()
        try:
            self.cluster.up()
        except (RuntimeError, subprocess.SubprocessError) as e:
            self.c.check("G: pg-test.sh up", False, e)
            return
        t_ready = time.monotonic()
        log("database down %.1fs, up again (start took %.1fs)" % (t_up - t_down, t_ready - t_up))

        self.c.check("G: ingest answers 503 unavailable on every node while the database is "
                     "down (%d tries)" % len(probes), probes and all(
                         p[1] == 503 and p[2] == "unavailable" for p in probes),
                     [p for p in probes if p[1] != 503][:6])
        self.c.check("G: every node answers /healthz while the database is down (%s)" % {
            i: collections.Counter(h) for i, h in health.items()}, all(
                health[i] and all(isinstance(h, int) for h in health[i]) for i in range(NODES)))
        held = [r for r in self.deliveries(app) if r.webhook_id in want]
        done = [r for r in held if r.done_mono is not None and t_down < r.done_mono < t_up and
                (r.response or "").startswith("2")]
        self.c.check("G: the %d attempts in flight were answered 2xx while the database was "
                     "down" % len(want), len(done) == len(want),
                     ["%s %s" % (r.webhook_id, r.response) for r in held if r not in done][:5])

        def stored():
            bad = {}
            for mid in want:
                m = self.nodes[2].api("GET", "/v1/messages/" + mid, timeout=T(5)).json or {}
                atts = m.get("attempts") or []
                if (m.get("status"), m.get("attemptCount"), len(atts)) != ("delivered", 1, 1) \
                        or atts[0].get("httpStatus") != 200:
                    bad[mid] = (m.get("status"), m.get("attemptCount"),
                                [a.get("httpStatus") for a in atts])
            return bad
        try:
            wait_until(lambda: not stored(), T(15), 0.5, what="results stored")
            self.c.check("G: their results are stored once the database is back: delivered, "
                         "one attempt, 200 (%.1fs after it)" % (time.monotonic() - t_ready), True)
        except TimeoutError as e:
            self.c.check("G: their results are stored once the database is back: delivered, "
                         "one attempt, 200", False, "%s: %s" % (e, list(stored().items())[:4]))
        time.sleep(2.0)
        counts = collections.Counter(r.webhook_id for r in self.deliveries(app))
        self.c.check("G: nothing acknowledged lost, nothing delivered twice (%d events)" %
                     len(want), set(counts) == want and all(c == 1 for c in counts.values()),
                     "%d missing, %s" % (len(want - set(counts)), counts.most_common(3)))
        alive = [s.name for s in self.nodes if not s.alive]
        self.c.check("G: every node survived the database outage", not alive,
                     "%s exited: %s" % (alive, [s.exits for s in self.nodes]))

    # -- the whole run ---------------------------------------------------------------------

    def run(self):
        print("multinode: seed %d (CALLHOOK_TEST_SEED to repeat)" % self.seed, flush=True)
        t0 = time.monotonic()
        try:
            self.rx = Receiver().start()
            try:
                self.start_nodes()
                self.c.check("%d serve nodes start on one PostgreSQL database" % NODES, True)
            except (ServeError, RuntimeError, OSError, subprocess.SubprocessError) as e:
                self.c.check("%d serve nodes start on one PostgreSQL database" % NODES, False,
                             "%s\n(is callhook built with the PostgreSQL store, and is "
                             "CALLHOOK_TEST_DB_URI reachable?)" % e)
                return
            for name, part in (("A", self.part_a), ("B", self.part_b), ("C", self.part_c),
                               ("D", self.part_d), ("E", self.part_e), ("F", self.part_f),
                               ("G", self.part_g)):
                if name not in self.parts:
                    continue
                print("-- part %s (%.0fs)" % (name, time.monotonic() - t0), flush=True)
                try:
                    part()
                except Exception as e:  # noqa: BLE001 - report and go on with the next part
                    import traceback
                    self.c.check("part %s ran to the end" % name, False,
                                 "%s\n%s" % (e, traceback.format_exc()))
                    if name == "A":
                        break  # B needs A's events
        finally:
            self.finish()
            print("(%.0fs)" % (time.monotonic() - t0))

    def finish(self):
        if self.cluster is not None and self.cluster.is_down:
            try:
                self.cluster.up()
            except (RuntimeError, subprocess.SubprocessError) as e:
                log("could not start the database again: %s" % e)
        if self.nodes:
            for s in self.nodes:
                s.close()
            problems = []
            for s in self.nodes:
                problems += ["%s: %s" % (s.name, l) for l in s.sanitizer_reports()]
                bad = [c for i, c in enumerate(s.exits) if c != 0 and not (
                    c == -9 and self.nodes.index(s) == self.killed and i == 0)]
                if bad:
                    problems.append("%s exited with %s (SIGTERM should stop it with 0)" % (
                        s.name, s.exits))
            self.c.check("nodes stop cleanly, no sanitizer report", not problems, problems[:10])
        if self.c.failed:
            for s in self.nodes:
                print("---- log of %s ----" % s.name)
                print(s.logs(tail_lines=60))
            if self.rx is not None:
                reqs = self.rx.requests
                print("---- receiver: %d requests, last ones ----" % len(reqs))
                for r in reqs[-10:]:
                    print(json.dumps(r.summary()))
            if self.cluster is not None:
                print("---- PostgreSQL log ----")
                print(self.cluster.server_log_tail())
            print("----")
        if self.rx is not None:
            self.rx.stop()
        drop_database(self.base_uri, self.db_name)


def main(argv):
    binary = argv[1] if len(argv) > 1 else os.environ.get("CALLHOOK_BIN")
    payloads = argv[2] if len(argv) > 2 else os.environ.get("CALLHOOK_PAYLOADS_DIR")
    if not binary or not payloads:
        print("usage: test_multinode.py CALLHOOK_BINARY PAYLOADS_DIR (with CALLHOOK_TEST_DB_URI "
              "set)", file=sys.stderr)
        return 2
    if not os.access(binary, os.X_OK) or not os.path.isdir(payloads):
        print("test_multinode.py: %s is not executable or %s is not a directory" % (
            binary, payloads), file=sys.stderr)
        return 2
    db_uri = os.environ.get("CALLHOOK_TEST_DB_URI", "").strip()
    if not db_uri:
        print("test_multinode.py: CALLHOOK_TEST_DB_URI is not set: it needs a PostgreSQL "
              "database (ctest -L pg starts one with scripts/pg-test.sh)", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    pg_dir = os.environ.get("CALLHOOK_TEST_PG_DIR", "").strip() or None
    pg_script = os.environ.get("CALLHOOK_TEST_PG_SCRIPT") or os.path.join(
        HERE, "..", "..", "scripts", "pg-test.sh")

    test = MultiNode(binary, payloads, db_uri, pg_dir, os.path.abspath(pg_script))

    def on_term(*_):
        # A timeout: kill the nodes, bring the database back, go.
        harness.cleanup()
        if test.cluster is not None and test.cluster.is_down:
            try:
                test.cluster.up()
            except Exception:  # noqa: BLE001
                pass
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    test.run()
    failed = len(test.c.failed)
    if failed:
        print("failed: %s" % "; ".join(test.c.failed))
    print("%d passed, %d failed" % (test.c.passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
