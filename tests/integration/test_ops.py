#!/usr/bin/env python3
"""Operational webhooks end to end (serve --ops-webhook, issue 17 item 6): callhook's own
signed events when a Voice App is disabled (a 410) and enabled again, when a message goes dead,
when an app's oldest waiting event is older than --ops-alert-age-s and when that recovers; each
once per state change, also with two serve nodes on one PostgreSQL database; GET
/v1/ops-events; the ops webhook's URL judged by the SSRF guard at start.

usage: test_ops.py CALLHOOK_BINARY PAYLOADS_DIR [NAME_FILTER...]
       (or CALLHOOK_BIN / CALLHOOK_PAYLOADS_DIR in the environment)

Every serve runs on SQLite, or on a fresh PostgreSQL database when CALLHOOK_TEST_DB_URI is set,
where the two-node tests (OpsTwoNodes) run too: ctest ops_postgres runs those
(ctest -R 'pg_start|ops_postgres|pg_stop'). Only
127.0.0.1 is contacted: one receiver (tests/integration/receiver.py) takes both the apps'
deliveries and the ops events (on /ops), and --allow-cidr 127.0.0.1/32 lets the ops webhook
reach it. The URLs the guard must refuse (10.0.0.1, 127.0.0.1 without --allow-cidr, localhost)
are refused at start, before any socket exists. Checks run every second (--ops-check-interval-s
1); every wait has a deadline (CALLHOOK_TEST_TIME_SCALE stretches them all), and "no second
event" is asserted after several checks have run. The last line is `N passed, M failed`.
"""

import json
import os
import re
import secrets as _secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import Serve, free_port, scaled, wait_until  # noqa: E402
from receiver import Receiver, Response, verify  # noqa: E402

BIN = None
HOST = "127.0.0.1"
OPS_APP = "callhook-ops"
OPS_PATH = "/ops"
CHECK_S = 1  # --ops-check-interval-s of every serve here
ISO8601 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TYPES = {"voice_app.disabled", "voice_app.enabled", "message.dead", "voice_app.backlog_old",
         "voice_app.recovered"}

# Settings the caller's environment must not change under a test.
NEUTRAL_ENV = {k: "" for k in (
    "CALLHOOK_DATA_KEY", "CALLHOOK_DATA_KEY_FILE", "CALLHOOK_ALLOW_CIDR", "CALLHOOK_LISTEN",
    "CALLHOOK_DB", "CALLHOOK_CONFIG", "CALLHOOK_OPS_WEBHOOK", "CALLHOOK_OPS_WEBHOOK_SECRET_FILE",
    "CALLHOOK_OPS_ALERT_AGE_S", "CALLHOOK_OPS_CHECK_INTERVAL_S")}

LOCAL_APP = {
    "allowInsecureHttp": True,
    "allowPrivateNetwork": True,
    "retryScheduleSeconds": [1],
    "timeoutMs": 3000,
    "connectTimeoutMs": 2000,
}


def T(seconds):
    """A deadline, stretched by CALLHOOK_TEST_TIME_SCALE."""
    return scaled(seconds)


def record(prefix="ops"):
    return json.dumps({"ActiveCallId": "%s-%s" % (prefix, _secrets.token_hex(8)),
                       "CallType": 4}).encode()


sanitizer_lines = harness.sanitizer_lines


class OpsCase(unittest.TestCase):
    """A temp dir, a receiver and the serves of one test; a crash, an unclean stop or a
    sanitizer report in any serve's log fails it."""

    maxDiff = 4000
    alert_age_s = 600

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="callhook-ops-")
        harness._workdirs.append(self.tmp)
        self.serves = []
        self.rx = Receiver().start()
        self.addCleanup(self._cleanup)
        self.ops_secret = self.run_cli("secret", "new").stdout.strip()
        self.assertTrue(self.ops_secret.startswith("whsec_"), self.ops_secret)
        self.secret_file = self.write_private("ops.secret", self.ops_secret + "\n")
        self.rx.set_secrets([self.ops_secret], path=OPS_PATH)

    def _cleanup(self):
        problems = []
        self.rx.stop()
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
        self.final_logs = {s.name: s.logs(tail_lines=150) for s in self.serves}
        for s in self.serves:
            s.close()
        if not os.environ.get("CALLHOOK_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        if problems:
            self.fail("\n".join(problems[:20]))

    # -- helpers -----------------------------------------------------------------------------

    def write_private(self, name, text, mode=0o600):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def run_cli(self, *args, env=None):
        e = {k: v for k, v in os.environ.items() if k not in harness.PROXY_VARS}
        e.update(NEUTRAL_ENV)
        e.update(env or {})
        return subprocess.run([BIN] + list(args), capture_output=True, text=True,
                              timeout=T(30), env=e, stdin=subprocess.DEVNULL)

    def ops_args(self, secret_file=True, alert_age_s=None):
        args = ["--allow-cidr", "127.0.0.1/32", "--ops-webhook", self.rx.url(OPS_PATH),
                "--ops-check-interval-s", str(CHECK_S),
                "--ops-alert-age-s", str(alert_age_s or self.alert_age_s)]
        if secret_file:
            args += ["--ops-webhook-secret-file", self.secret_file]
        return args

    def serve(self, *extra_args, name="serve", start=True, db_of=None, admin_key=None):
        """A serve with its own folder; db_of: another serve whose database it shares."""
        folder = os.path.join(self.tmp, name)
        os.makedirs(folder)
        s = Serve(BIN, extra_args=list(extra_args), env=NEUTRAL_ENV, workdir=folder, name=name,
                  admin_key=admin_key or (db_of.admin_key if db_of else None))
        if db_of is not None:
            s.db_url = db_of.db_url  # harness starts serve with --db <db_url>
        self.serves.append(s)
        if start:
            s.start()
        return s

    def serve_fails(self, *extra):
        """serve on a fresh SQLite file, expected to refuse to start: its output."""
        folder = tempfile.mkdtemp(dir=self.tmp)
        e = {k: v for k, v in os.environ.items() if k not in harness.PROXY_VARS}
        e.update(NEUTRAL_ENV)
        e["CALLHOOK_ADMIN_KEY"] = "adm" + _secrets.token_hex(20)
        code, out = harness.serve_refusing(BIN, folder, e, extra)
        self.assertNotEqual(code, 0, out)
        self.assertEqual(sanitizer_lines(out), [], out)
        # Refused before anything was made or written.
        self.assertFalse(os.path.exists(os.path.join(folder, "callhook.db")), out)
        return out

    def app(self, serve, app_id, **settings):
        body = {"BeginCallEventProcessingUrl": self.rx.url("/%s/begin-call" % app_id),
                "EndCallEventProcessingUrl": self.rx.url("/%s/end-call" % app_id)}
        body.update(LOCAL_APP)
        body.update(settings)
        r = serve.api("PUT", "/v1/voice-apps/" + app_id, body)
        self.assertIn(r.status, (200, 201), r)

    def ingest(self, serve, app_id, event="begin-call"):
        r = serve.ingest(app_id, event, record(app_id))
        self.assertEqual(r.status, 202, r)
        return r.json["messageId"]

    def message(self, serve, mid):
        r = serve.api("GET", "/v1/messages/" + mid)
        self.assertEqual(r.status, 200, r)
        return r.json

    def wait_status(self, serve, mid, status, timeout=None):
        return wait_until(lambda: self.message(serve, mid).get("status") == status,
                          timeout or T(30), 0.1,
                          what=lambda: "message %s %s (is %s)" % (
                              mid, status, self.message(serve, mid).get("status")))

    def ops_events(self, type_=None, app_id=None):
        """[(recorded request, parsed body)] of the ops webhook's requests, each checked: a
        POST to /ops, signed with the ops secret (checked here and by the receiver), a body of
        {"type", "timestamp", "data"}."""
        out = []
        for rec in self.rx.requests_for(path=OPS_PATH):
            body = json.loads(rec.body)
            self.assertEqual(rec.method, "POST")
            self.assertTrue(verify([self.ops_secret], rec.headers, rec.body), rec)
            self.assertTrue(rec.verified, rec)
            self.assertEqual(set(body), {"type", "timestamp", "data"}, body)
            self.assertIn(body["type"], TYPES, body)
            self.assertRegex(body["timestamp"], ISO8601)
            self.assertIsInstance(body["data"], dict)
            if type_ is not None and body["type"] != type_:
                continue
            if app_id is not None and body["data"].get("voiceAppId") != app_id:
                continue
            out.append((rec, body))
        return out

    def wait_ops(self, n, type_, app_id, timeout=None):
        """Waits until the ops webhook got n events of type_ about app_id; returns them."""
        return wait_until(lambda: len(self.ops_events(type_, app_id)) >= n and
                          self.ops_events(type_, app_id), timeout or T(30), 0.1,
                          what=lambda: "%d %s events of %s (got %s)" % (
                              n, type_, app_id, [b for _, b in self.ops_events()]))

    def settle_checks(self, n=4):
        """Lets n more checks run on every node (at least n check intervals)."""
        time.sleep(T(n * CHECK_S + 0.5))

    def assert_exactly(self, n, type_, app_id):
        got = self.ops_events(type_, app_id)
        self.assertEqual(len(got), n, "%s events of %s: %s" % (
            type_, app_id, [b for _, b in got]))
        self.assertEqual(len({rec.webhook_id for rec, _ in got}), n, got)
        return got

    def listed(self, serve, **query):
        path = "/v1/ops-events"
        if query:
            path += "?" + "&".join("%s=%s" % kv for kv in query.items())
        r = serve.api("GET", path)
        self.assertEqual(r.status, 200, r)
        return r.json


# ---------------------------------------------------------------------------------------------


class OpsEvents(OpsCase):
    """One serve: each state change sends one signed event, and no more while it lasts."""

    alert_age_s = 3

    def test_410_disables_the_app_and_sends_one_signed_event(self):
        # The ops settings as config-file keys this time: they take effect as the flags do.
        conf = self.write_private("serve.conf", "\n".join([
            "allow-cidr = 127.0.0.1/32",
            "ops-webhook = " + self.rx.url(OPS_PATH),
            "ops-webhook-secret-file = " + self.secret_file,
            "ops-check-interval-s = %d" % CHECK_S,
            "ops-alert-age-s = 600", ""]))
        s = self.serve("--config", conf)
        self.app(s, "gone")
        self.rx.set_default(Response.gone(), path="/gone/begin-call")
        mid = self.ingest(s, "gone")
        wait_until(lambda: s.api("GET", "/v1/voice-apps/gone").json.get("enabled") is False,
                   T(30), 0.1, what="voice app 'gone' disabled by the 410")
        [(rec, body)] = self.wait_ops(1, "voice_app.disabled", "gone")
        self.assertIn("410", body["data"]["reason"] or "", body)
        self.assertEqual(rec.headers.get("content-type"), "application/json")
        # More events for the disabled app are parked; the condition lasts: no second event.
        self.ingest(s, "gone")
        self.settle_checks()
        [(rec, _)] = self.assert_exactly(1, "voice_app.disabled", "gone")
        self.assertEqual(self.assert_exactly(0, "voice_app.enabled", "gone"), [])

        # The API lists it, newest first, with its delivery state and payload.
        listed = self.listed(s)
        ev = [e for e in listed["data"] if e["type"] == "voice_app.disabled"]
        self.assertEqual(len(ev), 1, listed)
        self.assertEqual(ev[0]["id"], rec.webhook_id)
        self.assertEqual(ev[0]["voiceAppId"], "gone")
        self.assertEqual(ev[0]["payload"]["type"], "voice_app.disabled")
        self.assertEqual(ev[0]["payload"]["data"]["voiceAppId"], "gone")
        self.assertEqual(ev[0]["status"], "delivered")
        self.assertEqual(ev[0]["attemptCount"], 1)
        self.assertIsNone(ev[0]["lastError"])
        self.assertIsNone(listed["nextCursor"])
        self.assertEqual(self.message(s, mid)["status"], "failed")  # keeps its schedule

        # Enabled again (the receiver is back): one voice_app.enabled; disabled again by an
        # admin: a second voice_app.disabled, a state change of its own.
        self.rx.set_default(Response.ok(), path="/gone/begin-call")
        r = s.api("PATCH", "/v1/voice-apps/gone", {"enabled": True})
        self.assertEqual(r.status, 200, r)
        self.wait_ops(1, "voice_app.enabled", "gone")
        self.wait_status(s, mid, "delivered")
        r = s.api("PATCH", "/v1/voice-apps/gone", {"enabled": False})
        self.assertEqual(r.status, 200, r)
        [_, (_, second)] = self.wait_ops(2, "voice_app.disabled", "gone")
        self.assertIsNone(second["data"]["reason"], second)  # an admin's: no reason stored
        self.settle_checks()
        self.assert_exactly(2, "voice_app.disabled", "gone")
        self.assert_exactly(1, "voice_app.enabled", "gone")

        # Pages through the cursor.
        first = self.listed(s, limit=1)
        self.assertEqual(len(first["data"]), 1)
        self.assertIsNotNone(first["nextCursor"])
        rest = self.listed(s, limit=200, cursor=first["nextCursor"])
        ids = [e["id"] for e in first["data"] + rest["data"]]
        self.assertEqual(len(ids), 3, (first, rest))
        self.assertEqual(len(set(ids)), 3)
        self.assertEqual(first["data"][0]["type"], "voice_app.disabled")  # the newest

    def test_a_dead_message_sends_one(self):
        s = self.serve(*self.ops_args(alert_age_s=600))
        self.app(s, "dies", retryScheduleSeconds=[1])
        self.rx.set_default(Response.error(500), path="/dies/begin-call")
        mid = self.ingest(s, "dies")
        self.wait_status(s, mid, "dead")
        [(rec, body)] = self.wait_ops(1, "message.dead", "dies")
        d = body["data"]
        self.assertEqual((d["messageId"], d["event"], d["attempts"], d["httpStatus"],
                          d["errorClass"], d["lastError"]),
                         (mid, "begin-call", 2, 500, "http", "HTTP 500"), body)
        self.settle_checks()
        self.assert_exactly(1, "message.dead", "dies")
        # Recovered, it dies again: a second state change, a second event (attempt 3).
        r = s.api("POST", "/v1/voice-apps/dies/recover")
        self.assertEqual(r.status, 200, r)
        self.wait_ops(2, "message.dead", "dies")
        self.settle_checks(2)
        got = self.assert_exactly(2, "message.dead", "dies")
        self.assertEqual(sorted(b["data"]["attempts"] for _, b in got), [2, 3])
        # No backlog report: nothing waited longer than the alert age.
        self.assert_exactly(0, "voice_app.backlog_old", "dies")

    def test_an_old_backlog_sends_one_and_its_recovery_one(self):
        s = self.serve(*self.ops_args())  # alert age 3 s
        self.app(s, "slow", retryScheduleSeconds=[600])
        self.rx.set_default(Response.error(503), path="/slow/begin-call")
        mid = self.ingest(s, "slow")
        wait_until(lambda: self.message(s, mid).get("status") == "failed", T(30), 0.1,
                   what="first attempt of %s failed" % mid)
        [(_, body)] = self.wait_ops(1, "voice_app.backlog_old", "slow")
        d = body["data"]
        self.assertEqual((d["oldestMessageId"], d["waiting"], d["alertAgeSeconds"]),
                         (mid, 1, 3), body)
        self.assertGreaterEqual(d["oldestAgeSeconds"], 3, body)
        # A second old message while it lasts: still one event.
        mid2 = self.ingest(s, "slow")
        self.settle_checks(5)
        self.assert_exactly(1, "voice_app.backlog_old", "slow")
        self.assert_exactly(0, "voice_app.recovered", "slow")

        self.rx.set_default(Response.ok(), path="/slow/begin-call")
        for m in (mid, mid2):
            r = s.api("POST", "/v1/messages/%s/replay" % m)
            self.assertEqual(r.status, 202, r)
            self.wait_status(s, m, "delivered")
        [(_, rec_body)] = self.wait_ops(1, "voice_app.recovered", "slow")
        self.assertEqual(rec_body["data"]["waiting"], 0, rec_body)
        self.assertIsNone(rec_body["data"]["oldestMessageId"], rec_body)
        self.settle_checks()
        self.assert_exactly(1, "voice_app.backlog_old", "slow")
        self.assert_exactly(1, "voice_app.recovered", "slow")

    def test_the_ops_webhooks_own_failures_report_nothing(self):
        """The ops receiver answers 410: the internal app is disabled, and that (its own state)
        is no ops event; what it could not send waits, listed with its error."""
        s = self.serve(*self.ops_args(alert_age_s=600))
        self.rx.set_default(Response.gone(), path=OPS_PATH)
        self.app(s, "dies", retryScheduleSeconds=[1])
        self.rx.set_default(Response.error(500), path="/dies/begin-call")
        mid = self.ingest(s, "dies")
        self.wait_status(s, mid, "dead")
        wait_until(lambda: s.api("GET", "/v1/voice-apps/" + OPS_APP).json.get("enabled") is False,
                   T(30), 0.1, what="the ops app disabled by the ops receiver's 410")
        self.settle_checks()
        events = self.listed(s)["data"]
        self.assertEqual([e["type"] for e in events], ["message.dead"], events)
        self.assertEqual(events[0]["status"], "failed")
        self.assertIn("410", events[0]["lastError"] or "", events)
        self.assertEqual(len(self.rx.requests_for(path=OPS_PATH)), 1)
        self.assertNotIn(OPS_APP, [e["voiceAppId"] for e in events])

    def test_a_made_secret_is_kept_and_a_file_replaces_it(self):
        s = self.serve(*self.ops_args(secret_file=False, alert_age_s=600))
        r = s.api("GET", "/v1/voice-apps/%s/secret" % OPS_APP)
        self.assertEqual(r.status, 200, r)
        made = r.json["secret"]
        self.assertTrue(made.startswith("whsec_"), made)
        self.assertNotEqual(made, self.ops_secret)
        self.assertIn("callhook app secret callhook-ops", s.logs())
        self.assertNotIn(made, s.logs())  # not in the log: read through the API
        # Events are signed with it.
        self.rx.set_secrets([made], path=OPS_PATH)
        self.app(s, "gone")
        self.rx.set_default(Response.gone(), path="/gone/begin-call")
        self.ingest(s, "gone")
        wait_until(lambda: [r for r in self.rx.requests_for(path=OPS_PATH) if r.verified],
                   T(30), 0.1, what="an ops event signed with the made secret")
        self.assertTrue(all(r.verified for r in self.rx.requests_for(path=OPS_PATH)))
        # A restart keeps it; one with a secret file puts the file's in its place.
        s.restart(kill=False)
        self.assertEqual(s.api("GET", "/v1/voice-apps/%s/secret" % OPS_APP).json["secret"], made)
        s.stop()
        s.extra_args = self.ops_args(alert_age_s=600)
        s.start()
        self.assertEqual(s.api("GET", "/v1/voice-apps/%s/secret" % OPS_APP).json["secret"],
                         self.ops_secret)


class OpsApi(OpsCase):
    """The internal app is callhook's: marked in listings, nothing ingested into it, only
    its enabled flag changed through the API; the ops settings are refused when they would do
    nothing or send somewhere the SSRF guard refuses."""

    def test_the_internal_app(self):
        s = self.serve(*self.ops_args())
        self.app(s, "plain")
        apps = {a["id"]: a for a in s.api("GET", "/v1/voice-apps").json["data"]}
        self.assertIs(apps[OPS_APP].get("opsWebhook"), True, apps[OPS_APP])
        self.assertNotIn("opsWebhook", apps["plain"])
        self.assertEqual(apps[OPS_APP]["BeginCallEventProcessingUrl"], self.rx.url(OPS_PATH))
        self.assertIs(apps[OPS_APP]["allowPrivateNetwork"], False)  # the guard applies
        # The console's figures list it too, marked the same way.
        stats = {a["id"]: a for a in s.api("GET", "/v1/voice-apps/stats").json["data"]}
        self.assertIs(stats[OPS_APP].get("opsWebhook"), True, stats[OPS_APP])
        self.assertNotIn("opsWebhook", stats["plain"])
        one = s.api("GET", "/v1/voice-apps/%s/stats" % OPS_APP).json
        self.assertIs(one.get("opsWebhook"), True, one)
        self.assertNotIn("opsWebhook", s.api("GET", "/v1/voice-apps/plain/stats").json)

        r = s.ingest(OPS_APP, "begin-call", record())
        self.assertEqual((r.status, r.error_code), (403, "forbidden"), r)
        r = s.ingest(OPS_APP, "end-call", record())
        self.assertEqual(r.status, 403, r)
        r = s.api("PUT", "/v1/voice-apps/" + OPS_APP, {"BeginCallEventProcessingUrl":
                                                        "https://example.com/x"})
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        self.assertIn("--ops-webhook", r.error_message)
        r = s.api("PATCH", "/v1/voice-apps/" + OPS_APP, {"timeoutMs": 1000})
        self.assertEqual(r.status, 409, r)
        for enabled in (False, True):
            r = s.api("PATCH", "/v1/voice-apps/" + OPS_APP, {"enabled": enabled})
            self.assertEqual(r.status, 200, r)
            self.assertIs(r.json["enabled"], enabled)
        # The app's own settings, read back whole, may be PUT to another app.
        got = s.api("GET", "/v1/voice-apps/" + OPS_APP).json
        r = s.api("PUT", "/v1/voice-apps/copy", got)
        self.assertEqual(r.status, 201, r)
        self.assertNotIn("opsWebhook", r.json)

        r = s.api("GET", "/v1/ops-events?limit=0")
        self.assertEqual(r.status, 400, r)
        r = s.api("GET", "/v1/ops-events?voiceAppId=x")
        self.assertEqual(r.status, 400, r)
        r = s.api("GET", "/v1/ops-events", key=None)
        self.assertEqual(r.status, 401, r)
        read_key = s.create_key("read")
        r = s.api("GET", "/v1/ops-events", key=read_key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"data": [], "nextCursor": None})

    def test_refused_at_start(self):
        port = free_port()
        cases = [
            # An internal address literal: judged without a connection.
            (["--ops-webhook", "http://10.0.0.1/ops"], "internal address (10.0.0.1)"),
            (["--ops-webhook", "https://[::1]:%d/ops" % port], "internal address (::1)"),
            (["--ops-webhook", "http://127.0.0.1:%d/ops" % port], "--allow-cidr 127.0.0.1/32"),
            # A name is judged on the addresses it resolves to now (localhost: /etc/hosts).
            (["--ops-webhook", "http://localhost:%d/ops" % port], "resolves to"),
            # Allowed ranges are matched, not merely given.
            (["--allow-cidr", "10.20.0.0/16", "--ops-webhook", "http://127.0.0.1:%d/" % port],
             "internal address (127.0.0.1)"),
            (["--ops-webhook", "ftp://127.0.0.1/ops"], "must start with https://"),
            (["--ops-webhook", "https:///ops"], "ops-webhook"),
            (["--ops-alert-age-s", "60"], "ops-alert-age-s is set but ops-webhook is not"),
            (["--ops-check-interval-s", "5"], "ops-check-interval-s is set but ops-webhook"),
            (["--ops-webhook-secret-file", self.secret_file],
             "ops-webhook-secret-file is set but ops-webhook is not"),
            (["--allow-cidr", "127.0.0.1/32", "--ops-webhook", self.rx.url(OPS_PATH),
              "--ops-webhook-secret-file", self.write_private("open.secret", self.ops_secret,
                                                              0o644)],
             "chmod 600"),
            (["--allow-cidr", "127.0.0.1/32", "--ops-webhook", self.rx.url(OPS_PATH),
              "--ops-webhook-secret-file", self.write_private("bad.secret", "not a secret\n")],
             "holds no signing secret"),
            (["--ops-alert-age-s", "0"], "ops-alert-age-s"),
        ]
        for args, needle in cases:
            with self.subTest(args=args):
                out = self.serve_fails(*args)
                self.assertIn(needle, out)
                self.assertIn("callhook serve:", out)
        # Refused before anything was made: no database, no key file.
        self.assertEqual(self.rx.requests, [])


class OpsTwoNodes(OpsCase):
    """Two serve nodes on one PostgreSQL database, both checking every second: each state
    change is one event, whichever node saw it first."""

    alert_age_s = 3

    def nodes(self):
        a = self.serve(*self.ops_args(), "--lease-s", "30", name="node0")
        b = self.serve(*self.ops_args(), "--lease-s", "30", name="node1", db_of=a)
        return a, b

    def test_one_event_per_state_change(self):
        a, b = self.nodes()
        self.app(a, "gone")
        self.app(a, "dies", retryScheduleSeconds=[1])
        self.app(a, "slow", retryScheduleSeconds=[600])
        self.rx.set_default(Response.gone(), path="/gone/begin-call")
        self.rx.set_default(Response.error(500), path="/dies/begin-call")
        self.rx.set_default(Response.error(503), path="/slow/begin-call")
        # Events ingested through both nodes.
        gone = [self.ingest(a, "gone"), self.ingest(b, "gone")]
        dead = [self.ingest(a, "dies"), self.ingest(b, "dies")]
        slow = [self.ingest(a, "slow"), self.ingest(b, "slow")]
        for m in dead:
            self.wait_status(a, m, "dead")
        self.wait_ops(1, "voice_app.disabled", "gone")
        self.wait_ops(2, "message.dead", "dies")
        self.wait_ops(1, "voice_app.backlog_old", "slow")
        self.settle_checks(5)
        self.assert_exactly(1, "voice_app.disabled", "gone")
        got = self.assert_exactly(2, "message.dead", "dies")
        self.assertEqual(sorted(b_["data"]["messageId"] for _, b_ in got), sorted(dead))
        self.assert_exactly(1, "voice_app.backlog_old", "slow")

        # The backlog recovers, and the disabled app is enabled again: one event each.
        self.rx.set_default(Response.ok(), path="/slow/begin-call")
        self.rx.set_default(Response.ok(), path="/gone/begin-call")
        for m in slow:
            r = b.api("POST", "/v1/messages/%s/replay" % m)
            self.assertEqual(r.status, 202, r)
        r = b.api("PATCH", "/v1/voice-apps/gone", {"enabled": True})
        self.assertEqual(r.status, 200, r)
        for m in slow + gone:
            self.wait_status(a, m, "delivered")
        self.wait_ops(1, "voice_app.recovered", "slow")
        self.wait_ops(1, "voice_app.enabled", "gone")
        self.settle_checks(5)
        self.assert_exactly(1, "voice_app.recovered", "slow")
        self.assert_exactly(1, "voice_app.enabled", "gone")
        self.assert_exactly(1, "voice_app.backlog_old", "slow")
        self.assert_exactly(1, "voice_app.disabled", "gone")
        # Both nodes list the same events, each one the receiver got.
        ids = [e["id"] for e in self.listed(a)["data"]]
        self.assertEqual(ids, [e["id"] for e in self.listed(b)["data"]])
        self.assertEqual(set(ids), {rec.webhook_id for rec, _ in self.ops_events()})

    def test_a_node_started_later_sends_no_second_event(self):
        """A node that starts while an app is disabled and a backlog is old finds the events
        already stored and stores none of its own; after a restart, the same."""
        a = self.serve(*self.ops_args(), name="node0")
        self.app(a, "gone")
        self.app(a, "slow", retryScheduleSeconds=[600])
        self.rx.set_default(Response.gone(), path="/gone/begin-call")
        self.rx.set_default(Response.error(503), path="/slow/begin-call")
        self.ingest(a, "gone")
        self.ingest(a, "slow")
        self.wait_ops(1, "voice_app.disabled", "gone")
        self.wait_ops(1, "voice_app.backlog_old", "slow")
        b = self.serve(*self.ops_args(), name="node1", db_of=a)
        self.settle_checks(4)
        a.restart(kill=False)
        self.settle_checks(4)
        self.assert_exactly(1, "voice_app.disabled", "gone")
        self.assert_exactly(1, "voice_app.backlog_old", "slow")
        self.assertEqual(sorted(e["type"] for e in self.listed(b)["data"]),
                         ["voice_app.backlog_old", "voice_app.disabled"])


class Result(harness.Result):
    """After a failed test: the logs of its serves and the receiver's last requests."""

    def show_failure(self, test):
        for name, text in sorted(getattr(test, "final_logs", {}).items()):
            self.stream.writeln("---- %s log of %s ----" % (name, test.id()))
            self.stream.writeln(text)
        rx = getattr(test, "rx", None)
        if rx is not None:
            reqs = rx.requests
            self.stream.writeln("---- receiver: %d requests, last ones ----" % len(reqs))
            for r in reqs[-20:]:
                self.stream.writeln(json.dumps(r.summary()))


def main(argv):
    global BIN
    args = harness.suite_args(argv, "test_ops.py")
    if args is None:
        return 2
    BIN, _, filters = args

    def on_term(*_):  # a timeout: kill what runs, remove the temp dirs, go
        harness.cleanup()
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    # Two nodes need a database they share: the two-node tests run on PostgreSQL only (ctest
    # ops_postgres), the rest on either store.
    cases = (OpsEvents, OpsApi) + ((OpsTwoNodes,) if harness.PG_BASE_URI else ())
    return harness.run_suite(cases, filters, Result)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
