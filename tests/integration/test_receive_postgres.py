#!/usr/bin/env python3
"""`callhook receive --postgres DSN` against the throwaway PostgreSQL of the test suite
(tests/pg/CMakeLists.txt: CALLHOOK_TEST_DB_URI): the sample payloads, a few thousand calls
played by `callhook simulate` through a real `callhook serve` into the receiver (duplicates,
end-calls before their begin-calls), kill -9 x10 under load, a lost connection, a stop while a
statement waits on a lock, and the errors at start (unreachable DSN, a newer schema, a user
without rights). Each test has a database of its own, made and dropped with psql.

usage: test_receive_postgres.py CALLHOOK_BINARY PAYLOADS_DIR [NAME_FILTER...]
       (CALLHOOK_TEST_DB_URI must name the cluster: run it through ctest, `-L pg`)

The expected `calls` rows are computed here from the records sent, by the rule
docs/RECEIVER.md states (each column the end-call's value when it has one, else the
begin-call's; started_at the begin-call's, else the end-call's; duration_s = ended - started).
"""

import datetime
import glob
import http.client
import json
import os
import secrets as _secrets
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
import test_receive as tr  # noqa: E402
from harness import free_port, wait_until  # noqa: E402
from test_receive import T, new_id, new_secret, record  # noqa: E402

BASE_URI = harness.PG_BASE_URI
# serve keeps its own store on SQLite here: what is tested is the receiver's database.
harness.PG_BASE_URI = None

# (column of calls, record field, kind) as docs/RECEIVER.md lists them.
FIELDS = [("answered_at", ("AnswerTimeUtc",), "time"), ("ended_at", ("EndTimeUtc",), "time"),
          ("wait_s", ("WaitDurationSeconds",), "num"), ("talk_s", ("TalkDurationSeconds",), "num"),
          ("direction", ("Direction",), "text"), ("caller_id", ("CallerId",), "text"),
          ("caller_name", ("CallerDisplayName",), "text"),
          ("called_number", ("CalledNumber",), "text"), ("tenant_id", ("TenantId",), "text"),
          ("voice_app_id", ("VoiceAppId",), "text"),
          ("voice_app_name", ("VoiceAppName",), "text"), ("queue_id", ("QueueId",), "text"),
          ("queue_name", ("QueueName",), "text"), ("agent_id", ("Agent", "UserId"), "text"),
          ("agent_name", ("Agent", "DisplayName"), "text"),
          ("agent_email", ("Agent", "Email"), "text"), ("end_reason", ("EndReason",), "text")]
NAMES = tr.CALL_TYPE_NAMES


def psql(dsn, sql, timeout=60):
    """Rows of sql on dsn, each a list of text fields (None for NULL)."""
    p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-F", "\x1f", "-P", "null=\x01",
                        "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
                       capture_output=True, text=True, timeout=T(timeout),
                       env={k: v for k, v in os.environ.items() if not k.startswith("PG")})
    if p.returncode != 0:
        raise AssertionError("psql %r: %s" % (sql, p.stderr.strip()))
    return [[None if f == "\x01" else f for f in line.split("\x1f")]
            for line in p.stdout.splitlines() if line]


def member(obj, key):
    """obj's member key in any letter case, the exact spelling first (as the sink reads)."""
    if not isinstance(obj, dict):
        return None
    if key in obj:
        return obj[key]
    for k, v in obj.items():
        if k.lower() == key.lower():
            return v
    return None


def epoch(text):
    """An ISO 8601 time as unix seconds, None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def value(rec, path, kind):
    v = member(rec, path[0])
    if len(path) > 1:
        v = member(v, path[1])
    if kind == "time":
        return epoch(v)
    if kind == "num":
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return str(v)
    return v if isinstance(v, str) else None


def call_type(rec):
    v = member(rec, "CallType")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def expected_call(begin, end):
    """The calls row of a call from its begin and end records (either may be None)."""
    recs = [r for r in (end, begin) if r is not None]  # the end-call's value first

    def first(f):
        for r in recs:
            v = f(r)
            if v is not None:
                return v
        return None
    row = {c: first(lambda r, p=p, k=k: value(r, p, k)) for c, p, k in FIELDS}
    row["call_type"] = first(call_type)
    starts = [r for r in (begin, end) if r is not None]  # the begin-call's first
    row["started_at"] = next((epoch(member(r, "StartTimeUtc")) for r in starts
                              if epoch(member(r, "StartTimeUtc")) is not None), None)
    row["duration_s"] = (row["ended_at"] - row["started_at"]
                         if row["ended_at"] is not None and row["started_at"] is not None
                         else None)
    ct = row["call_type"]
    row["call_type_name"] = None if ct is None else (
        NAMES[ct] if 0 <= ct < len(NAMES) else "unknown (%d)" % ct)
    return row


TIME_COLS = {"started_at", "answered_at", "ended_at"}
NUM_COLS = {"wait_s", "talk_s", "duration_s", "call_type"} | TIME_COLS
CALL_COLS = ["call_type", "call_type_name", "started_at", "duration_s"] + [c for c, _, _ in FIELDS]


def select_calls(dsn, where="true"):
    """{call_key: {column: value}} with times as unix seconds and numbers as floats."""
    cols = ", ".join("extract(epoch FROM %s)" % c if c in TIME_COLS else c for c in CALL_COLS)
    out = {}
    for row in psql(dsn, "SELECT call_key, begin_webhook_id, end_webhook_id, %s FROM calls "
                    "WHERE %s" % (cols, where)):
        d = {"begin_webhook_id": row[1], "end_webhook_id": row[2]}
        for c, v in zip(CALL_COLS, row[3:]):
            d[c] = float(v) if c in NUM_COLS and v is not None else v
        if d["call_type"] is not None:
            d["call_type"] = int(d["call_type"])
        out[row[0]] = d
    return out


class PgCase(tr.ReceiveCase):
    """A receiver test with a database of its own (dropped at the end)."""

    def setUp(self):
        if not BASE_URI:
            self.fail("CALLHOOK_TEST_DB_URI is not set: run this through ctest (-L pg)")
        self.db = "callhook_rx_" + _secrets.token_hex(6)
        psql(BASE_URI, 'CREATE DATABASE "%s"' % self.db)
        self.dsn = harness._with_dbname(BASE_URI, self.db)
        # Registered first, so run last: after the receivers are stopped.
        self.addCleanup(lambda: psql(BASE_URI, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)'
                                     % self.db))
        super().setUp()

    def pg(self, sql):
        return psql(self.dsn, sql)

    def count(self, sql):
        return int(self.pg(sql)[0][0])

    def event_ids(self):
        return {r[0] for r in self.pg("SELECT webhook_id FROM call_events")}

    def assert_calls(self, got, expected, what):
        """Each expected row (call_key -> expected_call()) against the table's."""
        self.assertEqual(set(got), set(expected), "%s: the calls rows" % what)
        bad = []
        for key, exp in expected.items():
            for c, v in exp.items():
                g = got[key].get(c)
                same = (g is None and v is None) or (
                    g is not None and v is not None and
                    (abs(g - v) < 1e-3 if isinstance(v, float) else g == v))
                if not same:
                    bad.append("%s %s: table %r, expected %r" % (key, c, g, v))
        self.assertEqual(bad[:20], [], "%s: %d differences" % (what, len(bad)))


class Tables(PgCase):
    """The sample payloads and a few thousand simulated calls."""

    def test_sample_payloads(self):
        """Every payload of tests/data/payloads (each begin and end), the answered call's
        end-call sent before its begin-call, duplicates (same webhook-id, same call under a
        new id), a record without ids and times that are not ISO 8601: call_events has one row
        per distinct event with the record as jsonb, calls one row per call as the rule
        computes it from the records."""
        rx = self.receiver("--postgres", self.dsn, handler=False)
        files = sorted(glob.glob(os.path.join(tr.PAYLOADS, "*.json")))
        self.assertGreaterEqual(len(files), 8)
        # The answered call's end-call first: the join must not depend on the order.
        files.sort(key=lambda p: 0 if "end-call-answered" in p else 1)
        sent = {}  # webhook id -> (event, record)
        for path in files:
            body = open(path, "rb").read()
            event = "begin-call" if "begin-call" in os.path.basename(path) else "end-call"
            r, wid = rx.post(body, event=event)
            self.assert_status(r, 202, path)
            sent[wid] = (event, json.loads(body))
        # Duplicates: the same webhook-id again, the same event and call under a new id.
        wid0, (event0, rec0) = next(iter(sent.items()))
        body0 = json.dumps(rec0).encode()
        r, _ = rx.post(body0, event=event0, msg_id=wid0)
        self.assert_status(r, 200, "the same webhook-id again")
        r, _ = rx.post(body0, event=event0)
        self.assert_status(r, 200, "the same call and event under a new webhook-id")
        # No ids at all: in call_events only.
        no_ids = json.loads(record(call_id=False, call_type=2))
        r, wid_none = rx.post(json.dumps(no_ids).encode(), event="end-call")
        self.assert_status(r, 202, "no ids")
        sent[wid_none] = ("end-call", no_ids)
        # Times that are not times are NULL, an offset is read as one, nothing fails.
        odd = {"ActiveCallId": "odd-" + _secrets.token_hex(4), "CallType": 1,
               "StartTimeUtc": "2026-02-30T10:00:00Z", "EndTimeUtc": "2026-03-01T12:00:00+02:00",
               "AnswerTimeUtc": "yesterday", "WaitDurationSeconds": "17",
               "CallerId": 15550100123, "Agent": "not an object"}
        r, wid_odd = rx.post(json.dumps(odd).encode(), event="end-call")
        self.assert_status(r, 202, "odd fields")
        sent[wid_odd] = ("end-call", odd)

        wait_until(lambda: self.count("SELECT count(*) FROM call_events") >= len(sent), T(20),
                   what="every event in call_events")
        time.sleep(0.3)  # nothing more comes
        rows = self.pg("SELECT webhook_id, event, call_key, active_call_id, correlation_id, "
                       "call_type, call_type_name, record::text, record_text FROM call_events")
        self.assertEqual(len(rows), len(sent), "one row per distinct event: %r" % rows)
        for wid, event, key, aid, cid, ct, name, rec_text, raw in rows:
            self.assertIn(wid, sent)
            ev, rec = sent[wid]
            self.assertEqual(event, ev)
            self.assertEqual(json.loads(rec_text), rec, "the record as jsonb")
            self.assertIsNone(raw)
            a, c = member(rec, "ActiveCallId"), member(rec, "CorrelationId")
            self.assertEqual((aid, cid), (a, c), wid)
            self.assertEqual(key, a or c, wid)
            t = call_type(rec)
            self.assertEqual(ct, None if t is None else str(t))
            self.assertEqual(name, None if t is None else (
                NAMES[t] if 0 <= t < len(NAMES) else "unknown (%d)" % t))

        # calls: one row per call key, computed from the records.
        by_call = {}
        for wid, (event, rec) in sent.items():
            key = member(rec, "ActiveCallId") or member(rec, "CorrelationId")
            if key:
                by_call.setdefault(key, {})[event] = (wid, rec)
        expected = {}
        for key, evs in by_call.items():
            b, e = evs.get("begin-call"), evs.get("end-call")
            exp = expected_call(b and b[1], e and e[1])
            exp["begin_webhook_id"] = b and b[0]
            exp["end_webhook_id"] = e and e[0]
            expected[key] = exp
        got = select_calls(self.dsn)
        self.assert_calls(got, expected, "sample payloads")
        # What the rule gives for the answered call (begin-call.json + end-call-answered.json),
        # read from the files: both events joined, the end-call's CallType, ended - started.
        answered = got["291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10"]
        self.assertEqual(answered["call_type_name"], "AnsweredCall")
        self.assertIsNotNone(answered["begin_webhook_id"])
        self.assertIsNotNone(answered["end_webhook_id"])
        self.assertAlmostEqual(answered["duration_s"], 343.818, places=3)
        self.assertEqual(got[odd["ActiveCallId"]]["caller_id"], "15550100123")
        self.assertIsNone(got[odd["ActiveCallId"]]["started_at"])
        self.assertEqual(self.count("SELECT count(*) FROM calls WHERE call_key IS NULL"), 0)
        version = self.pg("SELECT version FROM callhook_receive_schema")
        self.assertEqual(version, [["1"]])

    def test_simulated_calls(self):
        """callhook simulate through a real serve into the receiver: 1,500 calls on an app with
        per-call ordering (10% duplicates posted to serve), 400 short calls on an app with
        ordering none, and 200 calls whose end-call reaches the receiver directly before serve
        delivers the begin-call and the end-call again (a duplicate under serve's own id; half
        of those end-calls say another StartTimeUtc: the begin-call's is kept). calls has one row
        per call, both events joined, with the CallType and duration of its records;
        call_events one row per distinct event."""
        serve = harness.Serve(tr.BIN)
        self.addCleanup(serve.close)
        serve.start()
        port = free_port()
        apps, secrets = {}, []
        for name, ordering in (("sim-ordered", "per-call"), ("sim-unordered", "none")):
            body = {"BeginCallEventProcessingUrl": "http://127.0.0.1:%d/%s/begin-call"
                    % (port, name),
                    "EndCallEventProcessingUrl": "http://127.0.0.1:%d/%s/end-call" % (port, name),
                    "allowInsecureHttp": True, "allowPrivateNetwork": True,
                    "retryScheduleSeconds": [1, 1, 2, 2, 4, 4, 8], "timeoutMs": 5000,
                    "connectTimeoutMs": 1000, "ordering": ordering}
            r = serve.api("PUT", "/v1/voice-apps/" + name, body)
            self.assertEqual(r.status, 201, r)
            r = serve.api("GET", "/v1/voice-apps/%s/secret" % name)
            self.assertEqual(r.status, 200, r)
            secrets.append(r.json["secret"])
            apps[name] = body
        rx = self.receiver("--postgres", self.dsn, secrets=[self.secret] + secrets,
                           handler=False, start=False)
        rx.port = port
        rx.start()

        # 200 calls of our own: the end-call straight to the receiver, then both via serve.
        direct = {}
        base = time.time() - 3600
        for i in range(200):
            key = "direct-%d-%s" % (i, _secrets.token_hex(4))
            start = base + i
            iso = lambda t: datetime.datetime.fromtimestamp(  # noqa: E731
                t, datetime.timezone.utc).isoformat(timespec="milliseconds").replace(
                    "+00:00", "Z")
            common = {"ActiveCallId": key, "CorrelationId": "corr-" + key,
                      "VoiceAppId": "sim-unordered", "CallerId": "+1555010%04d" % i,
                      "CalledNumber": "+15550199000", "StartTimeUtc": iso(start)}
            begin = dict(common, CallType=4, AnswerTimeUtc=None, EndTimeUtc=None)
            end = dict(common, CallType=[1, 2, 5, 6, 42][i % 5], EndTimeUtc=iso(start + 30 + i),
                       EndReason="CallerHangUp", WaitDurationSeconds=3, TalkDurationSeconds=27)
            if i % 2:
                end["StartTimeUtc"] = iso(start + 1)  # the begin-call's stays
            r, wid = rx.post(json.dumps(end).encode(), event="end-call", secret=self.secret)
            self.assert_status(r, 202, "a direct end-call")
            direct[key] = (begin, end, wid)
        for key, (begin, end, _) in direct.items():
            for event, rec in (("begin-call", begin), ("end-call", end)):
                r = serve.ingest("sim-unordered", event, json.dumps(rec).encode())
                self.assertEqual(r.status, 202, r)

        env = {"CALLHOOK_KEY": serve.admin_key}
        sims = [("sim-ordered", ["--calls", "1500", "--rate", "300", "--duplicates", "0.1",
                                 "--min-duration-ms", "0", "--max-duration-ms", "3000"]),
                ("sim-unordered", ["--calls", "400", "--rate", "200", "--duplicates", "0.05",
                                   "--min-duration-ms", "0", "--max-duration-ms", "5"])]
        procs = [subprocess.Popen([tr.BIN, "simulate", "--app", app, "--url", serve.base_url,
                                   "--json", "--workers", "8"] + args,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=dict(serve.environment(), **env))
                 for app, args in sims]
        calls_sim = 0
        for p, (app, args) in zip(procs, sims):
            out, err = p.communicate(timeout=T(120))
            self.assertEqual(p.returncode, 0, "simulate %s: %s %s" % (app, out, err))
            calls_sim += int(args[1])
        want = 2 * calls_sim + 2 * len(direct)
        wait_until(lambda: self.count("SELECT count(*) FROM call_events") >= want, T(300),
                   interval=1.0,
                   what=lambda: "%d events in call_events (now %d)" % (
                       want, self.count("SELECT count(*) FROM call_events")))
        time.sleep(1.0)  # serve's retries of duplicates must not add rows
        self.assertEqual(self.count("SELECT count(*) FROM call_events"), want)
        self.assertEqual(self.count("SELECT count(DISTINCT (event, call_key)) FROM call_events"),
                         want, "one row per distinct event")
        self.assertEqual(self.count("SELECT count(*) FROM calls"), calls_sim + len(direct),
                         "one row per call")
        self.assertEqual(self.count("SELECT count(*) FROM calls WHERE begin_webhook_id IS NULL"
                                    " OR end_webhook_id IS NULL"), 0, "both events joined")

        # Every call as the rule computes it from the records as they arrived.
        recs = {}
        for key, event, wid, text in self.pg("SELECT call_key, event, webhook_id, record::text "
                                             "FROM call_events"):
            recs.setdefault(key, {})[event] = (wid, json.loads(text))
        expected = {}
        for key, evs in recs.items():
            exp = expected_call(evs["begin-call"][1], evs["end-call"][1])
            exp["begin_webhook_id"], exp["end_webhook_id"] = (evs["begin-call"][0],
                                                              evs["end-call"][0])
            expected[key] = exp
        self.assert_calls(select_calls(self.dsn), expected, "simulated calls")
        # The direct calls, from what was sent: the end-call's CallType, the begin-call's start.
        got = select_calls(self.dsn, "call_key LIKE 'direct-%'")
        for key, (begin, end, wid) in direct.items():
            self.assertEqual(got[key]["end_webhook_id"], wid, "the direct end-call is the one")
            self.assertEqual(got[key]["call_type"], end["CallType"], key)
            self.assertAlmostEqual(got[key]["duration_s"],
                                   epoch(end["EndTimeUtc"]) - epoch(begin["StartTimeUtc"]),
                                   places=3)
        early = self.count("SELECT count(*) FROM call_events e JOIN call_events b ON "
                           "b.call_key = e.call_key AND b.event = 'begin-call' WHERE "
                           "e.event = 'end-call' AND e.inserted_at < b.inserted_at")
        self.assertGreaterEqual(early, len(direct), "end-calls stored before their begin-call")
        print("  %d calls, %d events; %d end-calls stored before their begin-call" % (
            calls_sim + len(direct), want, early), file=sys.stderr)


class Durability(PgCase):
    """kill -9 under load, a lost connection, a stop while a statement waits."""

    def test_kill9_x10_under_load(self):
        """Four senders post begin-call then end-call of fresh calls without pause; the
        receiver is killed with kill -9 ten times and started again on the same inbox: every
        acknowledged (202) event is in call_events exactly once, and its call's row names it."""
        rx = self.receiver("--postgres", self.dsn, handler=False)
        acked, lock, stop = {}, threading.Lock(), threading.Event()

        def sender():
            while not stop.is_set():
                key = "k9-" + _secrets.token_hex(8)
                for event, ct in (("begin-call", 4), ("end-call", 1)):
                    try:
                        r, wid = rx.post(record(key, ct), event=event, timeout=5.0)
                    except (OSError, http.client.HTTPException):
                        time.sleep(0.01)
                        continue
                    if r.status == 202:
                        with lock:
                            acked[wid] = (event, key)

        tr.kill9_while_sending(rx, sender, stop, acked, step=40, deadline=30)
        wait_until(lambda: set(acked) <= self.event_ids(), T(90), interval=0.5,
                   what=lambda: "every acknowledged event in call_events (missing %d)"
                   % len(set(acked) - self.event_ids()))
        rows = self.pg("SELECT webhook_id, count(*) FROM call_events GROUP BY webhook_id")
        counts = {w: int(n) for w, n in rows}
        self.assertEqual([w for w in acked if counts.get(w) != 1], [], "exactly once")
        self.assertEqual(self.count("SELECT count(*) FROM (SELECT event, call_key FROM "
                                    "call_events GROUP BY 1, 2 HAVING count(*) > 1) d"), 0)
        calls = {r[0]: (r[1], r[2]) for r in
                 self.pg("SELECT call_key, begin_webhook_id, end_webhook_id FROM calls")}
        for wid, (event, key) in acked.items():
            self.assertIn(key, calls)
            self.assertEqual(calls[key][0 if event == "begin-call" else 1], wid, key)
        self.assertEqual(rx.exits.count(-9), 10)
        self.assertEqual(rx.inbox_rows("failed"), {})
        print("  %d acknowledged over 10 kills, %d rows in call_events" % (
            len(acked), len(counts)), file=sys.stderr)

    def test_connection_lost(self):
        """The sink's connection is terminated by the server: the events that were in flight
        are retried from the inbox on a new connection, none lost, none twice."""
        rx = self.receiver("--postgres", self.dsn, "--retry-base-ms", "100", handler=False)
        ids = []
        for i in range(30):
            r, wid = rx.post(record(), event="begin-call")
            self.assert_status(r, 202)
            ids.append(wid)
        wait_until(lambda: set(ids) <= self.event_ids(), T(20), what="the first events")
        killed = self.count("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM "
                            "pg_stat_activity WHERE application_name = 'callhook-receive' AND "
                            "datname = current_database()) t")
        self.assertGreaterEqual(killed, 1, "the sink's connection was there to terminate")
        for i in range(30):
            r, wid = rx.post(record(), event="begin-call")
            self.assert_status(r, 202)
            ids.append(wid)
        wait_until(lambda: set(ids) <= self.event_ids(), T(30), what="every event after the "
                   "connection was lost")
        self.assertEqual(self.count("SELECT count(*) FROM call_events"), len(ids))
        self.assertEqual(self.count("SELECT count(*) FROM calls"), len(ids))

    def test_stop_cancels_a_waiting_statement(self):
        """A statement that waits on a lock another session holds is cancelled at SIGTERM: the
        receiver stops at once with status 0, and the event is inserted after a restart."""
        rx = self.receiver("--postgres", self.dsn, handler=False)
        holder = subprocess.Popen(
            ["psql", "-X", "-q", "-d", self.dsn, "-c",
             "BEGIN; LOCK TABLE call_events IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, PGAPPNAME="ch-lock-holder"))
        self.addCleanup(lambda: holder.poll() is None and (holder.kill(), holder.wait()))
        wait_until(lambda: self.count("SELECT count(*) FROM pg_locks l JOIN pg_class c ON "
                                      "c.oid = l.relation WHERE c.relname = 'call_events' AND "
                                      "l.mode = 'AccessExclusiveLock' AND l.granted") == 1,
                   T(10), what="the lock taken")
        r, wid = rx.post(record(), event="begin-call")
        self.assert_status(r, 202)
        wait_until(lambda: self.count("SELECT count(*) FROM pg_stat_activity WHERE "
                                      "application_name = 'callhook-receive' AND "
                                      "wait_event_type = 'Lock'") >= 1,
                   T(10), what="the sink's statement waiting on the lock")
        t0 = time.monotonic()
        code = rx.stop(timeout=T(20))
        took = time.monotonic() - t0
        self.assertEqual(code, 0, rx.tail())
        self.assertLess(took, 10.0, "the stop did not wait for the lock")
        # The holder's backend sleeps on after psql is gone: end it on the server.
        self.pg("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                "application_name = 'ch-lock-holder'")
        holder.wait(T(10))
        rx.start()
        wait_until(lambda: wid in self.event_ids(), T(20), what="the event after a restart")


class StartErrors(PgCase):
    """Bad configuration is an error at start, never a silent drop later."""

    run_to_exit = tr.Transport.run_to_exit

    def test_unreachable_dsn(self):
        port = free_port()  # nothing listens there
        dsn = "postgresql://callhook:hunter2@127.0.0.1:%d/nothing" % port
        t0 = time.monotonic()
        code, log = self.run_to_exit("--insecure-http", "--postgres", dsn, timeout=T(20))
        self.assertNotEqual(code, 0, log)
        self.assertLess(time.monotonic() - t0, 15, "a bounded connect time")
        self.assertRegex(log, r"postgres:postgresql://callhook:\*\*\*@127\.0\.0\.1:%d/nothing: "
                         r"cannot connect \(check the DSN.*\): .*Connection refused" % port)
        said = "\n".join(l for l in log.splitlines() if not l.startswith("=== "))
        self.assertNotIn("hunter2", said, "the password is not shown")
        code, log = self.run_to_exit("--insecure-http", "--route",
                                     "end-call=postgres:" + dsn, timeout=T(20))
        self.assertNotEqual(code, 0, "the same through --route: " + log)
        self.assertRegex(log, r"cannot connect")
        code, log = self.run_to_exit("--insecure-http", "--postgres", "host=127.0.0.1 port=x=y")
        self.assertNotEqual(code, 0, "a DSN that does not parse: " + log)

    def test_newer_schema_refused(self):
        rx = self.receiver("--postgres", self.dsn, handler=False)
        rx.stop()
        self.pg("INSERT INTO callhook_receive_schema (version) VALUES (99)")
        code, log = self.run_to_exit("--insecure-http", "--postgres", self.dsn)
        self.assertNotEqual(code, 0, log)
        self.assertRegex(log, r"schema version 99, newer than this callhook's \(1\)")

    def test_user_without_rights(self):
        """A user who may not create tables (PostgreSQL 15: not in schema public) is refused
        at start with the reason; once an owner made the tables and granted the rights it
        works; without the rights on existing tables it is refused too."""
        role = "rx_" + _secrets.token_hex(4)
        psql(BASE_URI, "CREATE ROLE %s LOGIN" % role)

        def drop_role():
            for rx in self.receivers:
                rx.stop()
            psql(self.dsn, "DROP OWNED BY %s" % role)
            psql(BASE_URI, "DROP ROLE IF EXISTS %s" % role)
        self.addCleanup(drop_role)
        self.pg("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        uri = self.dsn.replace("//callhook@", "//%s@" % role)
        self.assertNotEqual(uri, self.dsn)
        code, log = self.run_to_exit("--insecure-http", "--postgres", uri)
        self.assertNotEqual(code, 0, log)
        self.assertRegex(log, r"cannot create or read callhook's tables: .*permission denied")
        # Tables made by the owner, no rights granted: refused, saying which.
        rx = self.receiver("--postgres", self.dsn, handler=False)
        rx.stop()
        self.pg("GRANT SELECT ON callhook_receive_schema TO %s" % role)
        code, log = self.run_to_exit("--insecure-http", "--postgres", uri)
        self.assertNotEqual(code, 0, log)
        self.assertRegex(log, r"may not write callhook's tables: GRANT")
        self.pg("GRANT INSERT ON call_events TO %s; GRANT INSERT, UPDATE, SELECT ON calls TO %s"
                % (role, role))
        rx = self.receiver("--postgres", uri, handler=False)
        r, wid = rx.post(record(), event="begin-call")
        self.assert_status(r, 202)
        wait_until(lambda: wid in self.event_ids(), T(20), what="the event inserted by the user")


class Result(tr.Result):
    pass


def main(argv):
    args = harness.suite_args(argv, "test_receive_postgres.py")
    if args is None:
        return 2
    tr.BIN, tr.PAYLOADS, filters = args

    def on_term(*_):
        tr.kill_all()
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    return harness.run_suite((Tables, Durability, StartErrors), filters, Result)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
