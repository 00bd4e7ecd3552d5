#!/usr/bin/env python3
"""The API of the operators' console (issue 17, /work/wt/CONSOLE_API.md's "stats" part): a real
`callhook serve` on 127.0.0.1 and a real receiver that fails some deliveries.

usage: test_console_api.py CALLHOOK_BINARY PAYLOADS_DIR [NAME_FILTER...]
       (or CALLHOOK_BIN / CALLHOOK_PAYLOADS_DIR in the environment)

- Stats: GET /v1/voice-apps/stats and /v1/voice-apps/{id}/stats against what the messages'
  attempts say: counts per window, success rates, p50/p95 within their histogram bucket,
  the per-minute series, the rates, queue depth and oldest pending, the last error, the apps
  in trouble first; roles and queries.
- Records: GET /v1/messages/{id}/record masked by default (phone numbers, names, e-mail
  addresses), revealed for an admin key only, 409 once retention emptied it.
- Filters: correlationId= and until= on GET /v1/messages.
- Request headers: each attempt's requestHeaders against what the receiver got.
- whoami, and the id "stats" reserved.
- With CALLHOOK_TEST_DB_URI (PostgreSQL): also two serve nodes on one database, whose figures
  are summed whichever node answers.
"""

import json
import math
import os
import secrets as _secrets
import sqlite3
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import KeyCommandUnavailable, Serve, scaled, wait_until  # noqa: E402
from receiver import Receiver, Response  # noqa: E402

BIN = None
FAST_APP = {
    "allowInsecureHttp": True,  # the receiver is http://127.0.0.1
    "allowPrivateNetwork": True,
    "retryScheduleSeconds": [1, 1],
    "timeoutMs": 2000,
    "connectTimeoutMs": 1000,
}
BUCKETS = 16  # the rollup's histogram: 0-1 ms, (2^(b-1), 2^b] ms up to 16384, then the rest


def T(seconds):
    return scaled(seconds)


def record(call_id=None, **fields):
    rec = {"ActiveCallId": call_id or "call-" + _secrets.token_hex(8), "CallType": 4,
           "TenantId": "00000000-1111-2222-3333-444444444444"}
    rec.update(fields)
    return json.dumps(rec).encode()


def bucket_of(ms):
    b = 0
    while b < BUCKETS - 1 and ms > (1 << b):
        b += 1
    return b


def bucket_bounds(b):
    """The (low, high) ms a quantile found in bucket b is reported within."""
    if b == BUCKETS - 1:
        return (1 << (BUCKETS - 2), 1 << (BUCKETS - 2))
    return (0 if b == 0 else 1 << (b - 1), 1 << b)


def true_quantile_bucket(durations, q):
    """The bucket holding the q-quantile (by rank, as the server ranks) of durations."""
    ordered = sorted(durations)
    rank = max(1, math.ceil(q * len(ordered)))
    return bucket_of(ordered[rank - 1])


class ConsoleCase(unittest.TestCase):
    """A fresh serve and receiver for every test."""

    maxDiff = 6000

    def setUp(self):
        self.rx = Receiver().start()
        self.addCleanup(self.rx.stop)
        self.serve = self.new_serve()
        self.serve.start()

    def new_serve(self, **kw):
        serve = Serve(BIN, **kw)
        self.addCleanup(self._close, serve)
        return serve

    def _close(self, serve):
        serve.close()
        problems = serve.sanitizer_reports()
        bad = [c for c in serve.exits if c not in (0, -9)]
        if bad:
            problems.append("serve exited with status %s" % bad)
        if problems:
            self.fail("\n".join(problems[:20]))

    # -- helpers ---------------------------------------------------------------------------

    def make_app(self, app_id, serve=None, expect=201, **settings):
        serve = serve or self.serve
        body = {"BeginCallEventProcessingUrl": self.rx.url("/%s/begin-call" % app_id),
                "EndCallEventProcessingUrl": self.rx.url("/%s/end-call" % app_id)}
        body.update(FAST_APP)
        body.update(settings)
        r = serve.api("PUT", "/v1/voice-apps/" + app_id, body)
        self.assertEqual(r.status, expect, "PUT %s: %r" % (app_id, r))
        return app_id

    def ingest(self, app_id, body, serve=None, event="begin-call"):
        r = (serve or self.serve).ingest(app_id, event, body)
        self.assertEqual(r.status, 202, "ingest into %s: %r" % (app_id, r))
        return r.json["messageId"]

    def get(self, path, key="admin", expect=200, serve=None):
        r = (serve or self.serve).api("GET", path, key=key)
        self.assertEqual(r.status, expect, "GET %s: %r" % (path, r))
        return r.json

    def message(self, mid, key="admin"):
        return self.get("/v1/messages/" + mid, key=key)

    def wait_statuses(self, mids, status, timeout=None, serve=None):
        def done():
            return all(self.get("/v1/messages/" + m, serve=serve)["status"] == status
                       for m in mids)
        wait_until(done, timeout or T(30), 0.2, what="%d messages %s" % (len(mids), status))
        return [self.get("/v1/messages/" + m, serve=serve) for m in mids]

    def keys(self, *roles):
        out = []
        try:
            for role in roles:
                out.append(self.serve.create_key(role))
        except KeyCommandUnavailable as e:
            self.fail("no way to create keys: %s" % e)
        return out

    def raw_sql(self, sql):
        """SQL on serve's database behind its back (a retention run, simulated)."""
        if self.serve.db_url.startswith("sqlite:"):
            db = sqlite3.connect(self.serve.db_path, timeout=10)
            try:
                db.execute(sql)
                db.commit()
            finally:
                db.close()
        else:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                            self.serve.db_url, "-c", sql], check=True, env=env,
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------


class Stats(ConsoleCase):

    def test_counts_rates_percentiles_series_and_order(self):
        """Four apps: one whose receiver answers 2xx after ~100 ms, one whose receiver answers
        500 until its messages are dead, one disabled with events waiting, one idle. Every
        figure is checked against the messages' own attempts."""
        good, bad, off, idle = "c-good", "b-bad", "a-off", "d-idle"
        for a in (good, bad, idle):
            self.make_app(a)
        self.make_app(off, enabled=False)
        self.rx.set_default(Response.ok(delay_s=0.1), path="/%s/begin-call" % good)
        self.rx.set_default(Response.error(500), path="/%s/begin-call" % bad)
        good_ids = [self.ingest(good, record()) for _ in range(10)]
        bad_ids = [self.ingest(bad, record()) for _ in range(3)]
        off_ids = [self.ingest(off, record()) for _ in range(2)]
        good_msgs = self.wait_statuses(good_ids, "delivered")
        bad_msgs = self.wait_statuses(bad_ids, "dead")  # 3 attempts each: schedule [1, 1]
        off_msgs = [self.message(m) for m in off_ids]

        listing = self.get("/v1/voice-apps/stats")
        now = listing["now"]
        self.assertLessEqual(abs(now - time.time()), 5)
        minute = now - now % 60
        by_id = {a["id"]: a for a in listing["data"]}
        self.assertEqual(set(by_id), {good, bad, off, idle})
        # In trouble first: disabled, then dead messages, then by id (good and idle are fine).
        self.assertEqual([a["id"] for a in listing["data"]], [off, bad, good, idle])

        # The rates: the current minute so far and the part of the last one the window covers.
        created = [m["createdAt"] for m in good_msgs + bad_msgs + off_msgs]
        attempts = [a for m in good_msgs + bad_msgs for a in m["attempts"]]
        covered = (60 - (now - minute)) / 60.0

        def expected_rate(times):
            cur = sum(1 for t in times if t - t % 60 >= minute)
            last = sum(1 for t in times if t - t % 60 == minute - 60)
            return (cur + last * covered) / 60.0

        rates = listing["rates"]
        self.assertEqual(rates["windowSeconds"], 60)
        self.assertAlmostEqual(rates["ingestedPerSecond"], expected_rate(created), places=6)
        self.assertAlmostEqual(rates["deliveredPerSecond"], expected_rate(
            [a["at"] for a in attempts if a["errorClass"] is None]), places=6)
        self.assertAlmostEqual(rates["failedPerSecond"], expected_rate(
            [a["at"] for a in attempts if a["errorClass"] is not None]), places=6)
        self.assertGreater(rates["ingestedPerSecond"], 0)

        g = by_id[good]
        for w in ("last5m", "last1h"):
            self.assertEqual(g[w]["ingested"], 10, g)
            self.assertEqual(g[w]["delivered"], 10, g)
            self.assertEqual(g[w]["failed"], 0, g)
            self.assertEqual(g[w]["successRate"], 1.0, g)
        durations = [m["attempts"][0]["durationMs"] for m in good_msgs]
        self.assertTrue(all(d >= 100 for d in durations), durations)
        for q, name in ((0.5, "p50Ms"), (0.95, "p95Ms")):
            lo, hi = bucket_bounds(true_quantile_bucket(durations, q))
            self.assertTrue(lo <= g["last1h"][name] <= hi,
                            "%s %s not within [%d, %d] of durations %s" % (
                                name, g["last1h"][name], lo, hi, durations))
        self.assertEqual(g["queueDepth"], 0)
        self.assertIsNone(g["oldestPendingAt"])
        self.assertIsNone(g["oldestPendingAgeSeconds"])
        self.assertIsNone(g["lastError"])
        self.assertIsNone(g["lastErrorAt"])
        self.assertIsNone(g["lastErrorMessageId"])
        self.assertTrue(g["enabled"])
        self.assertIsNone(g["disabledReason"])

        b = by_id[bad]
        self.assertEqual(b["last1h"]["delivered"], 0)
        self.assertEqual(b["last1h"]["failed"], 9)
        self.assertEqual(b["last1h"]["dead"], 3)
        self.assertEqual(b["last1h"]["successRate"], 0.0)
        self.assertIsNone(b["last1h"]["p50Ms"])
        self.assertIsNone(b["last1h"]["p95Ms"])
        self.assertEqual(b["lastError"], "HTTP 500")
        ended = [(a["atMs"], m["id"]) for m in bad_msgs for a in m["attempts"]]
        latest = max(at for at, _ in ended)
        self.assertEqual(b["lastErrorAtMs"], latest)
        self.assertEqual(b["lastErrorAt"], latest // 1000)
        # The message of the attempt that ended last (of either, should two end in one ms).
        self.assertIn(b["lastErrorMessageId"], [mid for at, mid in ended if at == latest], ended)
        self.assertEqual(b["queueDepth"], 0)

        o = by_id[off]
        self.assertFalse(o["enabled"])
        self.assertEqual(o["queueDepth"], 2)
        self.assertEqual(o["oldestPendingAt"], min(m["createdAt"] for m in off_msgs))
        self.assertEqual(o["oldestPendingAgeSeconds"], now - o["oldestPendingAt"])
        self.assertEqual(o["last1h"]["ingested"], 2)
        self.assertIsNone(o["last1h"]["successRate"])

        i = by_id[idle]
        self.assertEqual(i["last1h"], {"ingested": 0, "delivered": 0, "failed": 0, "dead": 0,
                                        "successRate": None, "p50Ms": None, "p95Ms": None})
        self.assertEqual(i["queueDepth"], 0)

        # One app: the same figures and the last hour by minute, zeros included.
        one = self.get("/v1/voice-apps/%s/stats" % bad)
        series = one.pop("series")
        self.assertEqual(len(series), 60)
        one_minute = one["now"] - one["now"] % 60
        self.assertEqual([s["at"] for s in series],
                         [one_minute - 60 * k for k in range(59, -1, -1)])
        want = {}
        for m in bad_msgs:
            for a in m["attempts"]:
                at = a["at"] - a["at"] % 60
                want[at] = want.get(at, 0) + 1
        got = {s["at"]: s["failed"] for s in series if s["failed"]}
        self.assertEqual(got, want)
        self.assertEqual(sum(s["delivered"] for s in series), 0)
        self.assertEqual(one["last1h"], b["last1h"])
        self.assertEqual(one["id"], bad)
        good_series = self.get("/v1/voice-apps/%s/stats" % good)["series"]
        self.assertEqual(sum(s["delivered"] for s in good_series), 10)
        self.assertEqual(sum(s["ingested"] for s in good_series), 10)

        # Roles and queries.
        read, ingest = self.keys("read", "ingest")
        self.get("/v1/voice-apps/stats", key=read)
        self.get("/v1/voice-apps/%s/stats" % good, key=read)
        self.assertEqual(self.serve.api("GET", "/v1/voice-apps/stats", key=ingest).status, 403)
        r = self.serve.api("GET", "/v1/voice-apps/stats?limit=3")
        self.assertEqual((r.status, r.error_code), (400, "invalid_query"), r)
        r = self.serve.api("GET", "/v1/voice-apps/nope/stats")
        self.assertEqual((r.status, r.error_code), (404, "not_found"), r)

    def test_a_failing_app_comes_before_a_waiting_one(self):
        """Failed attempts in the last five minutes put an app ahead of one that only has a
        backlog; a backlog ahead of an app with none; the last error is the newest attempt's,
        whatever its message."""
        self.make_app("z-flaky", retryScheduleSeconds=[30])
        self.make_app("y-slow", timeoutMs=15000)
        self.make_app("x-calm")
        self.rx.set_default(Response.error(503), path="/z-flaky/begin-call")
        self.rx.set_default(Response.stall(12), path="/y-slow/begin-call")
        first = self.ingest("z-flaky", record())
        wait_until(lambda: self.message(first)["attemptCount"] == 1, T(10), 0.1,
                   what="the first failure")
        self.rx.set_default(Response.error(502), path="/z-flaky/begin-call")
        second = self.ingest("z-flaky", record())
        wait_until(lambda: self.message(second)["attemptCount"] == 1, T(10), 0.1,
                   what="the second failure")
        self.ingest("y-slow", record())
        data = self.get("/v1/voice-apps/stats")["data"]
        self.assertEqual([a["id"] for a in data], ["z-flaky", "y-slow", "x-calm"], data)
        flaky = data[0]
        self.assertEqual(flaky["lastError"], "HTTP 502")
        self.assertEqual(flaky["lastErrorMessageId"], second)
        self.assertEqual(flaky["last5m"]["failed"], 2)
        self.assertEqual(flaky["queueDepth"], 2)  # both wait 30 s for their retry
        self.assertEqual(data[1]["queueDepth"], 1)
        self.assertIsNotNone(data[1]["oldestPendingAt"])


class Records(ConsoleCase):

    PERSONAL = {
        "CallerId": "+15550100123",
        "CalledNumber": "5550199000",
        "CallerDisplayName": "Jane Example",
        "QueueName": "Support (English)",
        "Agent": {"DisplayName": "Sam Agent", "Email": "sam.agent@example.com",
                  "UserId": "a0a1a2a3"},
        "CustomData": {"note": "called about <script>alert(1)</script>", "crm": "CRM-1"},
        "Tags": ["vip", "+15550100999"],
        "Count": 3,
    }

    def test_masked_by_default_revealed_for_admin_only(self):
        self.make_app("rec")
        body = record(call_id="call-rec-1", CorrelationId="corr-rec", **self.PERSONAL)
        mid = self.ingest("rec", body)
        original = json.loads(body)
        read, = self.keys("read")
        for key in ("admin", read):
            got = self.get("/v1/messages/%s/record" % mid, key=key)
            self.assertIs(got["masked"], True)
            rec = got["record"]
            self.assertEqual(rec["ActiveCallId"], "call-rec-1")
            self.assertEqual(rec["CorrelationId"], "corr-rec")
            self.assertEqual(rec["CallerId"], "+*********23")
            self.assertEqual(rec["CalledNumber"], "********00")
            self.assertEqual(rec["CallerDisplayName"], "J*** E******")
            self.assertEqual(rec["QueueName"], "Support (English)")
            self.assertEqual(rec["Agent"]["DisplayName"], "S** A****")
            self.assertEqual(rec["Agent"]["Email"], "s********************")
            self.assertEqual(rec["Agent"]["UserId"], "a0a1a2a3")
            self.assertEqual(rec["CustomData"]["note"], "c***** a**** <" + "*" * 24)
            self.assertEqual(rec["CustomData"]["crm"], "CRM-1")
            self.assertEqual(rec["Tags"], ["vip", "+*********99"])
            self.assertEqual(rec["Count"], 3)
            self.assertEqual(rec["TenantId"], original["TenantId"])
            self.assertEqual(list(rec), list(original), "the record's keys, in order")
            text = json.dumps(got)
            for secret in ("0100123", "Jane", "sam.agent", "example.com", "alert(1)"):
                self.assertNotIn(secret, text)
        got = self.get("/v1/messages/%s/record?reveal=true" % mid)
        self.assertEqual(got, {"record": original, "masked": False})
        self.assertEqual(self.get("/v1/messages/%s/record?reveal=false" % mid, key=read)["masked"],
                         True)
        r = self.serve.api("GET", "/v1/messages/%s/record?reveal=true" % mid, key=read)
        self.assertEqual((r.status, r.error_code), (403, "forbidden"), r)
        self.assertNotIn("Jane", r.body.decode())
        r = self.serve.api("GET", "/v1/messages/%s/record?reveal=maybe" % mid)
        self.assertEqual((r.status, r.error_code), (400, "invalid_query"), r)
        r = self.serve.api("GET", "/v1/messages/%s/record?full=1" % mid)
        self.assertEqual((r.status, r.error_code), (400, "invalid_query"), r)
        r = self.serve.api("GET", "/v1/messages/msg_nothere/record")
        self.assertEqual((r.status, r.error_code), (404, "not_found"), r)
        # The reveal is logged (without the record); the log holds nothing personal.
        logs = self.serve.logs()
        self.assertIn("record of message '%s' was shown unmasked" % mid, logs)
        for secret in ("Jane Example", "sam.agent@example.com", "+15550100123"):
            self.assertNotIn(secret, logs)

    def test_retention_emptied_record_is_409(self):
        self.make_app("ret")
        mid = self.ingest("ret", record())
        self.wait_statuses([mid], "delivered")
        # What retention does to a delivered message's record (store_purge), done now.
        self.raw_sql("UPDATE message_bodies SET body = %s WHERE seq IN "
                     "(SELECT seq FROM messages WHERE id = '%s')" % (
                         "x''" if self.serve.db_url.startswith("sqlite:") else "''::bytea", mid))
        r = self.serve.api("GET", "/v1/messages/%s/record" % mid)
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        r = self.serve.api("GET", "/v1/messages/%s/record?reveal=true" % mid)
        self.assertEqual(r.status, 409, r)


class Filters(ConsoleCase):

    def test_correlation_id_and_until(self):
        self.make_app("flt")
        self.make_app("flt2")
        a = self.ingest("flt", record(CorrelationId="corr-X"))
        time.sleep(1.1)
        b = self.ingest("flt2", record(CorrelationId="corr-X"))
        time.sleep(1.1)
        c = self.ingest("flt", record(CorrelationId="corr-X"))
        self.ingest("flt", record(CorrelationId="corr-Y"))
        self.ingest("flt", record())  # none
        ma, mb, mc = (self.message(m) for m in (a, b, c))
        self.assertEqual(ma["correlationId"], "corr-X")

        def ids(query):
            return [m["id"] for m in self.get("/v1/messages?" + query)["data"]]

        self.assertEqual(ids("correlationId=corr-X"), [c, b, a])
        self.assertEqual(ids("correlationId=corr-X&voiceAppId=flt"), [c, a])
        self.assertEqual(ids("correlationId=corr-X&until=%d" % mc["createdAt"]), [b, a])
        self.assertEqual(ids("correlationId=corr-X&until=%d" % mb["createdAt"]), [a])
        self.assertEqual(ids("correlationId=corr-X&since=%d&until=%d" % (
            mb["createdAt"], mc["createdAt"])), [b])
        self.assertEqual(ids("correlationId=corr-Z"), [])
        self.assertEqual(ids("correlationId=corr-X&limit=2"), [c, b])
        page = self.get("/v1/messages?correlationId=corr-X&limit=2")
        self.assertEqual(ids("correlationId=corr-X&limit=2&cursor=" + page["nextCursor"]), [a])
        for bad in ("correlationId=", "until=yesterday", "until=-1", "correlationId=" + "x" * 256):
            r = self.serve.api("GET", "/v1/messages?" + bad)
            self.assertEqual((r.status, r.error_code), (400, "invalid_query"), (bad, r))
        nocorr = [m for m in self.get("/v1/messages?voiceAppId=flt")["data"]
                  if m["correlationId"] is None]
        self.assertEqual(len(nocorr), 1)


class RequestHeaders(ConsoleCase):

    def test_each_attempt_shows_what_it_sent(self):
        self.make_app("hdr", headers={"X-Api-Token": "tok-123", "X-Tenant": "t1"})
        path = "/hdr/begin-call"
        self.rx.script(Response.error(500), path=path)  # the first attempt fails, then 2xx
        mid = self.ingest("hdr", record())
        self.wait_statuses([mid], "delivered", timeout=T(20))
        sent = self.rx.requests_for(path=path)
        self.assertEqual(len(sent), 2)
        read, = self.keys("read")
        for key, shown in (("admin", ("tok-123", "t1")), (read, ("********", "********"))):
            attempts = sorted(self.message(mid, key=key)["attempts"], key=lambda a: a["atMs"])
            self.assertEqual(len(attempts), 2)
            for a, rec in zip(attempts, sent):
                h = a["requestHeaders"]
                self.assertEqual(h["webhook-id"], rec.headers["webhook-id"])
                self.assertEqual(h["webhook-timestamp"], rec.headers["webhook-timestamp"])
                self.assertEqual(h["X-Call-Event"], rec.headers["x-call-event"])
                self.assertEqual(h["User-Agent"], rec.headers["user-agent"])
                self.assertEqual(h["Content-Type"], rec.headers["content-type"])
                sig = h["webhook-signature"]
                self.assertTrue(sig.endswith("\u2026"), sig)
                self.assertEqual(len(sig), len("v1,") + 6 + 1, sig)
                self.assertTrue(rec.headers["webhook-signature"].startswith(sig[:-1]),
                                (sig, rec.headers["webhook-signature"]))
                self.assertEqual((h["X-Api-Token"], h["X-Tenant"]), shown)
                if key != "admin":
                    self.assertNotIn("tok-123", json.dumps(a))
            self.assertNotEqual(attempts[0]["requestHeaders"]["webhook-signature"],
                                attempts[1]["requestHeaders"]["webhook-signature"])


class Keys(ConsoleCase):

    def test_whoami_and_the_reserved_id(self):
        read, ingest = self.keys("read", "ingest")
        self.assertEqual(self.get("/v1/whoami"), {"role": "admin"})
        self.assertEqual(self.get("/v1/whoami", key=read), {"role": "read"})
        self.assertEqual(self.get("/v1/whoami", key=ingest), {"role": "ingest"})
        r = self.serve.api("GET", "/v1/whoami", key=None)
        self.assertEqual(r.status, 401, r)
        r = self.serve.api("GET", "/v1/whoami", key="chk_" + "0" * 64)
        self.assertEqual(r.status, 401, r)
        r = self.serve.api("GET", "/v1/whoami?x=1")
        self.assertEqual((r.status, r.error_code), (400, "invalid_query"), r)
        # An app cannot be called "stats": GET /v1/voice-apps/stats is the figures.
        r = self.serve.api("PUT", "/v1/voice-apps/stats", dict(FAST_APP,
                           BeginCallEventProcessingUrl=self.rx.url("/s")))
        self.assertEqual((r.status, r.error_code), (400, "invalid_id"), r)
        self.assertEqual(self.get("/v1/voice-apps/stats")["data"], [])


class TwoNodes(ConsoleCase):
    """Two serve nodes on one PostgreSQL database (only with CALLHOOK_TEST_DB_URI)."""

    def test_figures_are_summed_across_nodes(self):
        other = self.new_serve(admin_key=self.serve.admin_key)
        other.db_url = self.serve.db_url  # the first node's database, not one of its own
        other.start()
        self.make_app("both")
        self.rx.set_default(Response.ok(delay_s=0.02), path="/both/begin-call")
        wait_until(lambda: other.api("GET", "/v1/voice-apps/both").status == 200, T(5), 0.1,
                   what="the app seen by the second node")
        ids = [self.ingest("both", record()) for _ in range(20)]
        ids += [self.ingest("both", record(), serve=other) for _ in range(30)]
        msgs = self.wait_statuses(ids, "delivered", timeout=T(60))
        # Each node delivered what it ingested (it claims its own events at ingest).
        self.assertEqual(len(self.rx.requests_for(path="/both/begin-call")), 50)
        for node in (self.serve, other):
            figures = self.get("/v1/voice-apps/both/stats", serve=node)
            self.assertEqual(figures["last1h"]["ingested"], 50, figures)
            self.assertEqual(figures["last1h"]["delivered"], 50, figures)
            self.assertEqual(figures["last1h"]["failed"], 0, figures)
            self.assertEqual(sum(s["delivered"] for s in figures["series"]), 50)
            listing = self.get("/v1/voice-apps/stats", serve=node)
            self.assertEqual(listing["data"][0]["last5m"]["delivered"], 50)
        self.assertEqual(len(msgs), 50)
        # The rows really are the nodes' own: more than one writer wrote the app's minutes.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        out = subprocess.run(["psql", "-X", "-A", "-t", "-d", self.serve.db_url, "-c",
                              "SELECT count(DISTINCT writer) FROM app_minutes"
                              " WHERE app_id = 'both' AND delivered > 0"],
                             check=True, env=env, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL).stdout.strip()
        self.assertGreaterEqual(int(out), 2)


class Result(harness.Result):
    def show_failure(self, test):
        serve = getattr(test, "serve", None)
        if serve is not None:
            self.stream.writeln("--- serve log (tail) ---")
            self.stream.writeln(serve.logs(tail_lines=80))


def main(argv):
    global BIN
    args = harness.suite_args(argv, "test_console_api.py")
    if args is None:
        return 2
    BIN, _payloads, filters = args
    cases = [Stats, Records, Filters, RequestHeaders, Keys]
    if harness.PG_BASE_URI:
        cases.append(TwoNodes)
    return harness.run_suite(cases, filters, Result)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
