#!/usr/bin/env python3
"""`callhook serve` as a user meets it: a real process on 127.0.0.1, a real receiver, the HTTP
contract of docs/API.md and the delivery contract of docs/SIGNATURES.md.

usage: test_serve.py CALLHOOK_BINARY PAYLOADS_DIR [NAME_FILTER...]
       (or CALLHOOK_BIN / CALLHOOK_PAYLOADS_DIR in the environment)

Each test starts its own serve (temp dir, SQLite database, free port) and its own receiver,
and makes its own Voice Apps. Every wait has a deadline (CALLHOOK_TEST_TIME_SCALE stretches
them all). The last line is `N passed, M failed`; the exit status is 1 if anything failed.
CALLHOOK_TEST_SEED fixes the crash test's random kill moments; CALLHOOK_KEEP_TMP keeps the
temp dirs.

Where docs/API.md is silent, the assumption a test makes is written next to it, marked
"Assumption:".
"""

import base64
import collections
import http.client
import json
import os
import random
import re
import secrets as _secrets
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import KeyCommandUnavailable, Serve, free_port, scaled, wait_until  # noqa: E402
from receiver import Receiver, Response  # noqa: E402

BIN = None
PAYLOADS = None

MAX_BODY = 256 * 1024
# Retry timing. Assumption: jitter only lengthens a delay (a schedule entry is a floor a
# receiver can rely on, as src/deliver/retry.h says), and a retry comes no later than
# 1.5 x its entry + LATE_S. Retry-After is a floor too.
JITTER_FLOOR = 1.0
EARLY_SLACK_S = 0.25  # clock reading and thread wake-up in this process
LATE_S = 2.5
FAST_APP = {
    "allowInsecureHttp": True,  # the receiver is http://127.0.0.1
    "allowPrivateNetwork": True,
    "retryScheduleSeconds": [1, 1, 2],
    "timeoutMs": 1000,
    "connectTimeoutMs": 1000,
    "ordering": "per-call",
}
ERROR_CLASSES = {"http", "timeout", "connect", "tls", "refused", "other"}


def T(seconds):
    """A deadline, stretched by CALLHOOK_TEST_TIME_SCALE."""
    return scaled(seconds)


def at_fraction_of_second(fraction):
    """Sleep until the wall clock is at `fraction` of a second, so that a retry computed from
    whole seconds (which can come up to a second early) shows up every run, not half of them."""
    time.sleep((fraction - time.time() % 1.0) % 1.0)


def record(call_id=None, call_type=4, **fields):
    """A small call record (bytes) with a fresh ActiveCallId unless one is given."""
    rec = {"ActiveCallId": call_id or "call-" + _secrets.token_hex(8), "CallType": call_type,
           "TenantId": "00000000-1111-2222-3333-444444444444"}
    rec.update(fields)
    return json.dumps(rec).encode()


def _id_value(v):
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str) and v:
        return v
    return None


def dedupe_key(obj):
    """docs/SIGNATURES.md: ActiveCallId (documented spelling, then camelCase, then any case),
    else CorrelationId the same way."""
    for name in ("ActiveCallId", "CorrelationId"):
        camel = name[0].lower() + name[1:]
        for k in (name, camel):
            if k in obj and _id_value(obj[k]) is not None:
                return _id_value(obj[k])
        for k, v in obj.items():
            if k.lower() == name.lower() and _id_value(v) is not None:
                return _id_value(v)
    return None


class App:
    def __init__(self, app_id, settings, secret, begin_path, end_path):
        self.id = app_id
        self.settings = settings
        self.secret = secret
        self.begin = begin_path
        self.end = end_path

    def path(self, event):
        return self.begin if event == "begin-call" else self.end


class ServeCase(unittest.TestCase):
    """A fresh serve and receiver for every test."""

    maxDiff = 4000

    def setUp(self):
        self.rx = Receiver().start()
        self.addCleanup(self.rx.stop)
        self.serve = Serve(BIN)
        self.addCleanup(self._close_serve)
        self.serve.start()

    def _close_serve(self):
        """Stop serve; a crash, an unclean stop or a sanitizer report fails the test."""
        self.serve.close()
        problems = self.serve.sanitizer_reports()
        bad = [c for c in self.serve.exits if c not in (0, -9)]  # -9: the crash test's kills
        if bad:
            problems.append("serve exited with status %s (SIGTERM should stop it cleanly, "
                            "with status 0)" % bad)
        if problems:
            self.fail("\n".join(problems[:20]))

    # -- helpers -----------------------------------------------------------------------------

    def make_app(self, app_id=None, begin=True, end=True, expect_status=201, **settings):
        """PUT a Voice App whose URLs point at the receiver (/<id>/begin-call, /<id>/end-call),
        fetch its secret and give it to the receiver for those paths."""
        app_id = app_id or "app-" + _secrets.token_hex(6)
        begin_path, end_path = "/%s/begin-call" % app_id, "/%s/end-call" % app_id
        body = {
            "BeginCallEventProcessingUrl": (begin if isinstance(begin, str) else
                                            self.rx.url(begin_path) if begin else None),
            "EndCallEventProcessingUrl": (end if isinstance(end, str) else
                                          self.rx.url(end_path) if end else None),
        }
        body.update(FAST_APP)
        body.update(settings)
        r = self.serve.api("PUT", "/v1/voice-apps/" + app_id, body)
        self.assertEqual(r.status, expect_status, "PUT /v1/voice-apps/%s: %r" % (app_id, r))
        secret = self.get_secret(app_id)["secret"]
        self.rx.set_secrets([secret], path=begin_path)
        self.rx.set_secrets([secret], path=end_path)
        return App(app_id, body, secret, begin_path, end_path)

    def get_secret(self, app_id):
        r = self.serve.api("GET", "/v1/voice-apps/%s/secret" % app_id)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(str(r.json.get("secret", "")).startswith("whsec_"), r)
        return r.json

    def get_app(self, app_id):
        r = self.serve.api("GET", "/v1/voice-apps/" + app_id)
        self.assertEqual(r.status, 200, r)
        return r.json

    def ingest_ok(self, app, event, body, expect=202, **kw):
        """Ingest and check the answer: 202 {"messageId": "msg_…", "duplicate": false} (or
        200 duplicate true). Returns the messageId."""
        r = self.serve.ingest(app.id if isinstance(app, App) else app, event, body, **kw)
        self.assertEqual(r.status, expect, "ingest %s: %r" % (event, r))
        self.assertIsInstance(r.json, dict, r)
        mid = r.json.get("messageId")
        self.assertRegex(mid or "", r"^msg_[0-9A-Za-z]{27}$", r)
        self.assertIs(r.json.get("duplicate"), expect == 200, r)
        return mid

    def get_message(self, mid):
        r = self.serve.api("GET", "/v1/messages/" + mid)
        self.assertEqual(r.status, 200, "GET /v1/messages/%s: %r" % (mid, r))
        return r.json

    def wait_message(self, mid, predicate, timeout, what):
        last = {}

        def check():
            m = self.get_message(mid)
            last["m"] = m
            return m if predicate(m) else None

        return wait_until(check, timeout, 0.1, what=lambda: "%s for %s (last seen: %s)" % (
            what, mid, json.dumps(last.get("m"))[:1500]))

    def wait_status(self, mid, status, timeout=None):
        return self.wait_message(mid, lambda m: m.get("status") == status,
                                 timeout or T(15), "status %r" % status)

    def attempts_of(self, message):
        """The attempt list of GET /v1/messages/{id}, oldest first (by atMs), checked against
        attemptCount."""
        a = message.get("attempts")
        self.assertIsInstance(a, list, "GET /v1/messages/{id} must list attempts: %s" % message)
        for at in a:
            for k in ("at", "atMs", "durationMs", "httpStatus", "errorClass", "error",
                      "response"):
                self.assertIn(k, at, at)
            self.assertIn(at["errorClass"], ERROR_CLASSES | {None}, at)
            self.assertEqual(at["at"], at["atMs"] // 1000, at)
        self.assertEqual(message.get("attemptCount"), len(a), message)
        return sorted(a, key=lambda at: at["atMs"])

    def assert_delivery(self, rec, app, event, body, mid):
        """One delivery as docs/API.md "What a Voice App's URL receives" says."""
        self.assertEqual(rec.method, "POST")
        self.assertEqual(rec.route, app.path(event))
        self.assertEqual(rec.body, body, "body must be the ingested bytes")
        h = rec.headers
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "x-call-event",
                     "user-agent", "content-type"):
            self.assertIn(name, h, "delivery lacks %s: %s" % (name, h))
        self.assertEqual(h["webhook-id"], mid, "webhook-id is the messageId")
        self.assertEqual(h["x-call-event"], event)
        self.assertEqual(h["content-type"].split(";")[0].strip().lower(), "application/json")
        self.assertRegex(h["user-agent"], r"^callhook/\d")
        self.assertTrue(rec.verified, "signature must verify: %r %s" % (rec.verification, h))
        self.assertLessEqual(abs(int(h["webhook-timestamp"]) - rec.time), 5,
                             "webhook-timestamp is the attempt's time")

    def keys(self, *roles):
        """Keys of the given roles from `callhook key create --role R --db sqlite:PATH`, then a
        clean restart of serve so a serve that caches keys at start sees them too. Skips the
        (sub)test when the command does not exist."""
        out = []
        try:
            for role in roles:
                out.append(self.serve.create_key(role))
        except KeyCommandUnavailable as e:
            self.skipTest("no way to create an %s key: %s" % (roles, e))
        self.serve.restart(kill=False)
        return out

    def ok_deliveries(self, path=None, webhook_id=None):
        return [r for r in self.rx.requests_for(path=path, webhook_id=webhook_id)
                if (r.response or "").startswith("2")]


# ---------------------------------------------------------------------------------------------


class Delivery(ServeCase):

    def test_every_payload_delivered_byte_identical_and_signed(self):
        app = self.make_app(headers={"X-Api-Key": "k-123", "X-Tenant": "tenant-a"})
        files = sorted(f for f in os.listdir(PAYLOADS) if f.endswith(".json"))
        self.assertGreaterEqual(len(files), 2, "no payloads in %s" % PAYLOADS)
        sent = {}
        # Assumption: an end-call whose begin-call never came is sent at once (most payload
        # files are such end-calls); begin-call.json and end-call-answered.json are one call.
        for name in files:
            event = ("begin-call" if name.startswith("begin-call") else
                     "end-call" if name.startswith("end-call") else None)
            self.assertIsNotNone(event, "payload %s names no event" % name)
            with open(os.path.join(PAYLOADS, name), "rb") as f:
                body = f.read()
            mid = self.ingest_ok(app, event, body)
            self.assertNotIn(mid, sent, "%s got the messageId of %s" % (name, sent.get(mid)))
            sent[mid] = (event, body, name)
            # The messageId is the documented stable id (docs/SIGNATURES.md), the one
            # `callhook msgid` computes from (Voice App, event, dedupe key).
            key = dedupe_key(json.loads(body))
            p = self.serve.run_cli("msgid", "--app", app.id, "--event", event, "--key", key)
            self.assertEqual(p.stdout.strip(), mid, "%s: callhook msgid says %s %s" % (
                name, p.stdout.strip(), p.stderr.strip()))

        self.rx.wait_until(lambda rs: set(sent) <= {r.webhook_id for r in rs
                                                    if (r.response or "").startswith("2")},
                           T(20), "a 2xx delivery of every payload")
        for mid, (event, body, name) in sent.items():
            with self.subTest(payload=name):
                recs = self.rx.requests_for(webhook_id=mid)
                self.assertEqual(len(recs), 1, "delivered once: %s" % recs)
                self.assert_delivery(recs[0], app, event, body, mid)
                self.assertEqual(recs[0].headers.get("x-api-key"), "k-123")
                self.assertEqual(recs[0].headers.get("x-tenant"), "tenant-a")
                m = self.wait_status(mid, "delivered")
                self.assertEqual(m.get("id"), mid)
                self.assertEqual(m.get("voiceAppId"), app.id)
                self.assertEqual(m.get("event"), event)
                self.assertEqual(m.get("dedupeKey"), dedupe_key(json.loads(body)))
                self.assertEqual(m.get("bodyBytes"), len(body))
                self.assertIsNotNone(m.get("deliveredAt"))

    def test_body_at_the_size_limit_is_accepted_and_delivered(self):
        # Assumption: "over 256 KiB" is refused, so exactly 256 KiB is accepted.
        app = self.make_app()
        head = b'{"ActiveCallId": "big-%s", "pad": "' % _secrets.token_hex(4).encode()
        body = head + b"x" * (MAX_BODY - len(head) - 2) + b'"}'
        self.assertEqual(len(body), MAX_BODY)
        mid = self.ingest_ok(app, "begin-call", body)
        rec = self.rx.wait_for(1, path=app.begin, timeout=T(15), status_ok=True)[0]
        self.assert_delivery(rec, app, "begin-call", body, mid)

    def test_content_type_with_charset_is_accepted(self):
        # Assumption: media type parameters do not make it "not application/json".
        app = self.make_app()
        body = record()
        mid = self.ingest_ok(app, "begin-call", body,
                             content_type="application/json; charset=utf-8")
        rec = self.rx.wait_for(1, path=app.begin, timeout=T(10), status_ok=True)[0]
        self.assert_delivery(rec, app, "begin-call", body, mid)

    def test_event_without_url_is_skipped(self):
        app = self.make_app(end=False)  # EndCallEventProcessingUrl: null
        mid_end = self.ingest_ok(app, "end-call", record())
        mid_begin = self.ingest_ok(app, "begin-call", record())
        self.wait_status(mid_end, "skipped")
        self.rx.wait_for(1, path=app.begin, timeout=T(10), status_ok=True)
        self.wait_status(mid_begin, "delivered")
        time.sleep(1.0)
        self.assertEqual(self.rx.requests_for(webhook_id=mid_end), [],
                         "a skipped event is not sent")

    def test_secret_rotation_signs_with_both(self):
        app = self.make_app()
        old = app.secret
        before = time.time()
        r = self.serve.api("POST", "/v1/voice-apps/%s/secret/rotate" % app.id,
                           {"graceSeconds": 3600})
        self.assertTrue(200 <= r.status < 300, r)
        new = r.json.get("secret")
        self.assertTrue(new and new.startswith("whsec_") and new != old, r)
        self.assertEqual(r.json.get("previous"), old, r)
        self.assertAlmostEqual(r.json.get("previousExpiresAt") or 0, before + 3600, delta=60)
        self.assertEqual(self.get_secret(app.id), r.json)
        self.rx.set_secrets([new, old], path=app.begin)
        mid = self.ingest_ok(app, "begin-call", record())
        rec = self.rx.wait_for(1, path=app.begin, timeout=T(10), status_ok=True)[0]
        self.assertEqual(rec.webhook_id, mid)
        self.assertTrue(rec.verified, rec.verification)
        self.assertEqual(rec.verification.matched, [0, 1],
                         "during the grace period both secrets sign: %s" %
                         rec.headers.get("webhook-signature"))


class Identity(ServeCase):

    def test_webhook_id_stable_across_retries(self):
        app = self.make_app()
        self.rx.fail_first(2, 500, path=app.begin)
        body = record()
        mid = self.ingest_ok(app, "begin-call", body)
        self.rx.wait_for(3, path=app.begin, timeout=T(15))
        # The receiver records a request before it answers: wait for the third answer too.
        wait_until(lambda: all(r.response is not None
                               for r in self.rx.requests_for(path=app.begin)[:3]),
                   T(5), 0.05, what="the third answer recorded")
        recs = self.rx.requests_for(path=app.begin)[:3]
        for rec in recs:
            self.assertEqual(rec.webhook_id, mid)
            self.assertEqual(rec.body, body)
            self.assertTrue(rec.verified, rec.verification)
        self.assertEqual([r.response for r in recs], ["500", "500", "200"])
        stamps = [int(r.headers["webhook-timestamp"]) for r in recs]
        self.assertEqual(stamps, sorted(stamps), "webhook-timestamp is each attempt's time")
        m = self.wait_status(mid, "delivered")
        attempts = self.attempts_of(m)
        self.assertEqual([a["httpStatus"] for a in attempts], [500, 500, 200], attempts)
        for a in attempts:
            if a["httpStatus"] == 500:
                self.assertEqual(a["errorClass"], "http", a)
                self.assertEqual(a["response"], "error", "first 512 bytes of the answer")
            else:
                # Assumption: a successful attempt has errorClass null.
                self.assertIsNone(a["errorClass"], a)
        time.sleep(1.5)
        self.assertEqual(len(self.rx.requests_for(path=app.begin)), 3, "nothing after a 2xx")

    def test_upstream_duplicates_delivered_once(self):
        app = self.make_app()
        other = self.make_app()
        call = "dup-" + _secrets.token_hex(6)
        body = record(call, 4, Note="first")
        mid = self.ingest_ok(app, "begin-call", body)
        self.assertEqual(self.ingest_ok(app, "begin-call", body, expect=200), mid)
        # The same key in camelCase, other content: still a repeat of (app, event, key).
        # Assumption: the first bytes ingested are the ones delivered.
        again = json.dumps({"activeCallId": call, "CallType": 4, "Note": "second"}).encode()
        self.assertEqual(self.ingest_ok(app, "begin-call", again, expect=200), mid)
        # Another event or another app is another message.
        mid_end = self.ingest_ok(app, "end-call", body)
        mid_other = self.ingest_ok(other, "begin-call", body)
        self.assertEqual(len({mid, mid_end, mid_other}), 3)

        self.rx.wait_for(1, webhook_id=mid, timeout=T(10), status_ok=True)
        self.assertEqual(self.ingest_ok(app, "begin-call", body, expect=200), mid,
                         "still a duplicate after delivery")
        self.rx.wait_for(1, webhook_id=mid_end, timeout=T(10), status_ok=True)
        self.rx.wait_for(1, webhook_id=mid_other, timeout=T(10), status_ok=True)
        time.sleep(1.5)
        recs = self.rx.requests_for(webhook_id=mid)
        self.assertEqual(len(recs), 1, "one delivery per distinct event: %s" % recs)
        self.assert_delivery(recs[0], app, "begin-call", body, mid)
        self.assertEqual(len(self.rx.requests_for(webhook_id=mid_end)), 1)

    def test_dedupe_key_sources(self):
        app = self.make_app()
        # CorrelationId when there is no ActiveCallId.
        corr = "corr-" + _secrets.token_hex(6)
        b1 = json.dumps({"CorrelationId": corr, "CallType": 2}).encode()
        m1 = self.ingest_ok(app, "end-call", b1)
        self.assertEqual(self.ingest_ok(app, "end-call", b1, expect=200), m1)
        # Idempotency-Key when the record has neither id.
        idem = "idem-" + _secrets.token_hex(6)
        b2 = json.dumps({"CallType": 1, "Note": "no ids"}).encode()
        m2 = self.ingest_ok(app, "end-call", b2, headers={"Idempotency-Key": idem})
        self.assertEqual(self.ingest_ok(app, "end-call", b2, expect=200,
                                        headers={"Idempotency-Key": idem}), m2)
        # ActiveCallId wins over CorrelationId and Idempotency-Key.
        call = "call-" + _secrets.token_hex(6)
        b3 = json.dumps({"ActiveCallId": call, "CorrelationId": corr}).encode()
        m3 = self.ingest_ok(app, "begin-call", b3, headers={"Idempotency-Key": idem})
        for mid, key, event in ((m1, corr, "end-call"), (m2, idem, "end-call"),
                                (m3, call, "begin-call")):
            p = self.serve.run_cli("msgid", "--app", app.id, "--event", event, "--key", key)
            self.assertEqual(p.stdout.strip(), mid, "dedupe key %s: %s" % (key, p.stderr))
            self.assertEqual(self.get_message(mid).get("dedupeKey"), key)
        self.rx.wait_until(lambda rs: {m1, m2, m3} <= {r.webhook_id for r in rs},
                           T(10), "three deliveries")


class Ordering(ServeCase):

    def test_begin_call_before_end_call_when_begin_first_fails(self):
        app = self.make_app(ordering="per-call")
        self.rx.script(500, path=app.begin)
        call = "ord-" + _secrets.token_hex(6)
        mb = self.ingest_ok(app, "begin-call", record(call, 4))
        me = self.ingest_ok(app, "end-call", record(call, 1))
        self.rx.wait_for(1, path=app.end, timeout=T(15), status_ok=True)
        begins = self.rx.requests_for(path=app.begin)
        ends = self.rx.requests_for(path=app.end)
        ok_begin = [r for r in begins if (r.response or "").startswith("2")]
        self.assertTrue(ok_begin, "begin-call delivered: %s" % begins)
        self.assertEqual(begins[0].response, "500")
        self.assertEqual(ok_begin[0].webhook_id, mb)
        self.assertEqual(ends[0].webhook_id, me)
        self.assertGreaterEqual(ends[0].mono, ok_begin[0].mono,
                                "end-call attempted %.3fs before begin-call was delivered" %
                                (ok_begin[0].mono - ends[0].mono))

    def test_end_call_goes_once_begin_call_is_dead(self):
        app = self.make_app(ordering="per-call", retryScheduleSeconds=[1])
        self.rx.set_default(500, path=app.begin)
        call = "ord-" + _secrets.token_hex(6)
        mb = self.ingest_ok(app, "begin-call", record(call, 4))
        me = self.ingest_ok(app, "end-call", record(call, 1))
        end = self.rx.wait_for(1, path=app.end, timeout=T(15), status_ok=True)[0]
        self.assertEqual(end.webhook_id, me)
        begins = self.rx.requests_for(path=app.begin)
        self.assertEqual(len(begins), 2, "schedule [1]: two attempts")
        self.assertGreaterEqual(end.mono, begins[-1].mono,
                                "end-call waits until begin-call is given up")
        self.assertEqual(self.wait_status(mb, "dead")["status"], "dead")

    def test_per_call_order_with_a_flaky_receiver(self):
        # Failures, stalls past the timeout and resets, in a random order on both paths: for
        # every call, the end-call's first attempt comes after the begin-call's last one (the
        # one that was delivered, or the last before it was given up). Runs on every store.
        rnd = random.Random(int(os.environ.get("CALLHOOK_TEST_SEED") or 0) or None)
        app = self.make_app(ordering="per-call", retryScheduleSeconds=[1] * 6, timeoutMs=800,
                            connectTimeoutMs=800, maxInFlight=16)

        def flaky(n):
            out = []
            for _ in range(n):
                x = rnd.random()
                out.append(Response.error(500) if x < 0.2 else Response.stall(1.2) if x < 0.27
                           else Response.reset() if x < 0.35 else Response.ok(204))
            return out

        self.rx.script(*flaky(120), path=app.begin)
        self.rx.script(*flaky(120), path=app.end)
        calls = ["flaky-%d-%s" % (i, _secrets.token_hex(4)) for i in range(60)]
        for c in calls:
            self.ingest_ok(app, "begin-call", record(c, 4))
            self.ingest_ok(app, "end-call", record(c, 1))
        mids = {}
        for c in calls:
            for ev in ("begin-call", "end-call"):
                r = self.serve.api("GET", "/v1/messages?voiceAppId=%s&activeCallId=%s&event=%s" % (
                    app.id, c, ev))
                self.assertEqual(r.status, 200, r)
                mids[(c, ev)] = r.json["data"][0]["id"]

        def settled():
            for mid in mids.values():
                st = self.serve.api("GET", "/v1/messages/" + mid).json.get("status")
                if st not in ("delivered", "dead"):
                    return None
            return True

        wait_until(settled, T(60), 0.5, what="every message delivered or dead")
        for c in calls:
            begins = self.rx.requests_for(webhook_id=mids[(c, "begin-call")])
            ends = self.rx.requests_for(webhook_id=mids[(c, "end-call")])
            self.assertTrue(begins and ends, c)
            self.assertGreaterEqual(ends[0].mono, begins[-1].mono,
                                    "%s: end-call attempted %.3fs before its begin-call's last "
                                    "attempt" % (c, begins[-1].mono - ends[0].mono))

    def test_other_calls_are_not_held_back(self):
        app = self.make_app(ordering="per-call", retryScheduleSeconds=[30])
        blocked = "blk-" + _secrets.token_hex(6)
        self.rx.script(500, path=app.begin)  # the blocked call's begin-call waits 30 s
        self.ingest_ok(app, "begin-call", record(blocked, 4))
        self.rx.wait_for(1, path=app.begin, timeout=T(10))
        free = self.ingest_ok(app, "begin-call", record("free-" + _secrets.token_hex(6), 4))
        self.rx.wait_for(1, webhook_id=free, timeout=T(10), status_ok=True)
        self.assertEqual(len(self.rx.requests_for(path=app.begin)), 2)


class Retries(ServeCase):

    def assert_gap(self, gap, entry, what):
        self.assertGreaterEqual(gap, entry * JITTER_FLOOR - EARLY_SLACK_S,
                                "%s: %.2fs is too early for a %ss retry" % (what, gap, entry))
        self.assertLessEqual(gap, entry * 1.5 + T(LATE_S),
                             "%s: %.2fs is too late for a %ss retry" % (what, gap, entry))

    def ingest_spread(self, app, n):
        """n begin-calls of n calls, ingested at n evenly spread fractions of a second: a retry
        time rounded to whole seconds anywhere in serve shows up in at least one of them,
        whatever the phase of serve's own timers."""
        mids = []
        for i in range(n):
            at_fraction_of_second((i + 0.5) / n)
            mids.append(self.ingest_ok(app, "begin-call", record()))
        return mids

    def test_schedule_then_dead(self):
        schedule = [1, 1, 2]
        app = self.make_app(retryScheduleSeconds=schedule)
        self.rx.set_default(500, path=app.begin)
        mids = self.ingest_spread(app, 3)
        for mid in mids:
            recs = self.rx.wait_for(len(schedule) + 1, webhook_id=mid, timeout=T(20))
            with self.subTest(message=mid, arrivals=["%.3f" % r.time for r in recs]):
                for i, entry in enumerate(schedule):
                    self.assert_gap(recs[i + 1].mono - recs[i].mono, entry, "retry %d" % (i + 1))
                for rec in recs:
                    self.assertTrue(rec.verified, rec.verification)
        for mid in mids:
            m = self.wait_status(mid, "dead")
            attempts = self.attempts_of(m)
            self.assertEqual(len(attempts), len(schedule) + 1, attempts)
            for a in attempts:
                self.assertEqual(a["httpStatus"], 500, a)
                self.assertEqual(a["errorClass"], "http", a)
                self.assertEqual(a["response"], "error", a)
            # Assumption: "not delivered" may be written null or 0 (the doc does not say).
            self.assertFalse(m.get("deliveredAt"), m)
            self.assertTrue(m.get("lastError"), "a dead message says why: %s" % m)
        time.sleep(2.5)
        self.assertEqual(len(self.rx.requests_for(path=app.begin)), 3 * (len(schedule) + 1),
                         "nothing is sent once the schedule is spent")
        listed = self.serve.api("GET", "/v1/messages?voiceAppId=%s&status=dead" % app.id)
        self.assertEqual(listed.status, 200, listed)
        self.assertEqual(sorted(d["id"] for d in listed.json["data"]), sorted(mids))
        for d in listed.json["data"]:
            self.assertEqual(d.get("attemptCount"), len(schedule) + 1, d)

    def test_retry_after_is_honoured(self):
        app = self.make_app(retryScheduleSeconds=[1, 1, 1])
        self.rx.fail_first(1, Response.retry_after(3), path=app.begin, per_message=True)
        mids = self.ingest_spread(app, 3)
        for mid in mids:
            recs = self.rx.wait_for(2, webhook_id=mid, timeout=T(15))
            gap = recs[1].mono - recs[0].mono
            with self.subTest(message=mid, arrivals=["%.3f" % r.time for r in recs]):
                self.assertGreaterEqual(gap, 3 - EARLY_SLACK_S,
                                        "Retry-After: 3 but retried after %.2fs" % gap)
                self.assertLessEqual(gap, 3 * 1.5 + T(LATE_S))
                self.assertEqual(recs[1].response, "200")
                attempts = self.attempts_of(self.wait_status(mid, "delivered"))
                self.assertEqual([a["httpStatus"] for a in attempts], [503, 200], attempts)

    def test_timeout_is_a_failed_attempt(self):
        app = self.make_app(retryScheduleSeconds=[1], timeoutMs=1000)
        self.rx.script(Response.stall(4), path=app.begin)
        mid = self.ingest_ok(app, "begin-call", record())
        recs = self.rx.wait_for(2, path=app.begin, timeout=T(15))
        self.assertEqual([r.webhook_id for r in recs], [mid, mid])
        self.assertLess(recs[1].mono - recs[0].mono, 4.0, "the stalled attempt was abandoned")
        attempts = self.attempts_of(self.wait_status(mid, "delivered"))
        failed = [a for a in attempts if a["httpStatus"] != 200]
        self.assertEqual(len(failed), 1, attempts)
        self.assertEqual(failed[0]["httpStatus"], 0, failed)
        self.assertEqual(failed[0]["errorClass"], "timeout", failed)
        self.assertTrue(failed[0]["error"], failed)
        self.assertGreaterEqual(failed[0]["durationMs"], 800, failed)
        self.assertLess(failed[0]["durationMs"], 3900, failed)

    def test_connection_reset_is_a_failed_attempt(self):
        app = self.make_app(retryScheduleSeconds=[1])
        self.rx.script(Response.reset(), path=app.begin)
        mid = self.ingest_ok(app, "begin-call", record())
        self.rx.wait_for(2, path=app.begin, timeout=T(15))
        attempts = self.attempts_of(self.wait_status(mid, "delivered"))
        failed = [a for a in attempts if a["httpStatus"] != 200]
        self.assertEqual(len(failed), 1, attempts)
        self.assertEqual(failed[0]["httpStatus"], 0, failed)
        # A reset after the request was sent: not an HTTP status, not a timeout.
        self.assertIn(failed[0]["errorClass"], {"other", "connect", "refused"}, failed)
        self.assertTrue(failed[0]["error"], failed)

    def test_connection_refused_is_a_failed_attempt(self):
        dead_port = free_port()  # nothing listens there
        url = "http://127.0.0.1:%d/nobody" % dead_port
        app = self.make_app(begin=url, retryScheduleSeconds=[1])
        mid = self.ingest_ok(app, "begin-call", record())
        attempts = self.attempts_of(self.wait_status(mid, "dead"))
        self.assertEqual(len(attempts), 2, attempts)
        for a in attempts:
            self.assertEqual(a["httpStatus"], 0, a)
            self.assertIn(a["errorClass"], {"refused", "connect"}, a)


class Endpoint(ServeCase):

    def test_410_disables_and_put_reenables(self):
        app = self.make_app(retryScheduleSeconds=[1, 1, 2])
        self.rx.script(Response.gone(), path=app.begin)
        m1 = self.ingest_ok(app, "begin-call", record())
        self.rx.wait_for(1, path=app.begin, timeout=T(10))
        got = wait_until(lambda: (lambda a: a if a.get("enabled") is False else None)(
            self.get_app(app.id)), T(10), 0.1, "app disabled after a 410")
        self.assertTrue(got.get("disabledReason"), "disabledReason says why: %s" % got)
        # Assumption: a disabled app still accepts events (202) and holds them.
        m2 = self.ingest_ok(app, "begin-call", record())
        time.sleep(2.5)
        self.assertEqual(len(self.rx.requests_for(path=app.begin)), 1,
                         "nothing is sent to a disabled endpoint")

        r = self.serve.api("PUT", "/v1/voice-apps/" + app.id, dict(app.settings, enabled=True))
        self.assertEqual(r.status, 200, r)
        got = self.get_app(app.id)
        self.assertIs(got.get("enabled"), True, got)
        self.assertIsNone(got.get("disabledReason"), got)
        # Assumption: replacing an app's settings keeps its signing secret.
        self.assertEqual(self.get_secret(app.id)["secret"], app.secret)
        m3 = self.ingest_ok(app, "begin-call", record())
        self.rx.wait_for(1, webhook_id=m3, timeout=T(10), status_ok=True)
        # Nothing is lost: what the 410 left failed or dead comes back with recover (what was
        # held while disabled may already be on its way).
        r = self.serve.api("POST", "/v1/voice-apps/%s/recover?since=0" % app.id)
        self.assertTrue(200 <= r.status < 300, r)
        for mid in (m1, m2):
            rec = self.rx.wait_for(1, webhook_id=mid, timeout=T(10), status_ok=True)[0]
            self.assertTrue(rec.verified, rec.verification)

    def test_replay_sends_again_with_the_same_webhook_id(self):
        app = self.make_app()
        body = record()
        mid = self.ingest_ok(app, "begin-call", body)
        self.rx.wait_for(1, webhook_id=mid, timeout=T(10), status_ok=True)
        self.wait_status(mid, "delivered")
        r = self.serve.api("POST", "/v1/messages/%s/replay" % mid)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json.get("messageId"), mid, r)
        recs = self.rx.wait_for(2, webhook_id=mid, timeout=T(10), status_ok=True)
        self.assert_delivery(recs[1], app, "begin-call", body, mid)
        m = self.wait_message(mid, lambda m: m.get("status") == "delivered"
                              and len(m.get("attempts") or []) >= 2, T(10), "two attempts")
        self.assertEqual(len(self.attempts_of(m)), 2)
        r = self.serve.api("POST", "/v1/messages/msg_%s/replay" % ("0" * 27))
        self.assertEqual(r.status, 404, "replay of an unknown message: %r" % r)

    def test_recover_requeues_dead_messages_of_one_app(self):
        app = self.make_app(retryScheduleSeconds=[1])
        other = self.make_app(retryScheduleSeconds=[1])
        self.rx.set_default(500, path=app.begin)
        self.rx.set_default(500, path=other.begin)
        body = record()
        mid = self.ingest_ok(app, "begin-call", body)
        mid_other = self.ingest_ok(other, "begin-call", record())
        self.wait_status(mid, "dead")
        self.wait_status(mid_other, "dead")
        self.rx.set_default(200, path=app.begin)
        self.rx.set_default(200, path=other.begin)

        r = self.serve.api("POST", "/v1/voice-apps/%s/recover?since=%d" % (
            app.id, int(time.time()) + 3600))
        self.assertTrue(200 <= r.status < 300, r)
        self.assertEqual(r.json, {"requeued": 0}, "nothing was created since then")
        r = self.serve.api("POST", "/v1/voice-apps/%s/recover?since=0" % app.id)
        self.assertTrue(200 <= r.status < 300, r)
        self.assertEqual(r.json, {"requeued": 1}, r)
        rec = self.rx.wait_for(1, webhook_id=mid, timeout=T(10), status_ok=True)[0]
        self.assert_delivery(rec, app, "begin-call", body, mid)
        self.wait_status(mid, "delivered")
        time.sleep(1.0)
        self.assertEqual(self.get_message(mid_other)["status"], "dead", "other app untouched")
        self.assertEqual(len(self.rx.requests_for(path=other.begin)), 2)

    def test_deleted_app_messages_are_not_delivered_to_a_namesake(self):
        app = self.make_app(enabled=False)
        mids = [self.ingest_ok(app, "begin-call", record()) for _ in range(2)]
        # Held while the app is disabled (given back to the store, due again).
        for mid in mids:
            self.wait_status(mid, "pending")
        r = self.serve.api("DELETE", "/v1/voice-apps/" + app.id)
        self.assertEqual(r.status, 204, r)
        for mid in mids:
            m = self.get_message(mid)
            self.assertEqual((m.get("status"), m.get("lastError"), m.get("appDeleted")),
                             ("dead", "app deleted", True), m)
        # The same id made again, enabled: it starts empty.
        again = self.make_app(app_id=app.id)
        fresh = self.ingest_ok(again, "begin-call", record())
        self.rx.wait_for(1, webhook_id=fresh, timeout=T(10), status_ok=True)
        self.assertIs(self.get_message(fresh).get("appDeleted"), False)
        r = self.serve.api("POST", "/v1/voice-apps/%s/recover?since=0" % app.id)
        self.assertEqual((r.status, r.json), (200, {"requeued": 0}), r)
        for mid in mids:
            r = self.serve.api("POST", "/v1/messages/%s/replay" % mid)
            self.assertEqual(r.status, 409, r)
            self.assertEqual(((r.json or {}).get("error") or {}).get("code"), "app_deleted", r)
        time.sleep(T(2))  # a retry schedule's worth: the old messages would have gone by now
        sent = {x.webhook_id for x in self.rx.requests_for(path=app.begin)}
        self.assertEqual(sent, {fresh}, "only the new app's event is delivered")
        for mid in mids:
            self.assertEqual(self.get_message(mid).get("status"), "dead")


class Api(ServeCase):

    def test_bad_input_is_refused_and_nothing_is_stored(self):
        app = self.make_app()
        good = record()
        path = "/v1/voice-apps/%s/begin-call" % app.id
        big_head = b'{"ActiveCallId": "too-big", "pad": "'
        too_big = big_head + b"x" * (MAX_BODY + 1 - len(big_head) - 2) + b'"}'
        self.assertEqual(len(too_big), MAX_BODY + 1)
        ct = "application/json"
        cases = [
            # name, body, key, content type, extra headers, path, status, code
            ("invalid JSON", b'{"ActiveCallId": "x",', "admin", ct, {}, path, 400,
             "invalid_json"),
            ("empty body", b"", "admin", ct, {}, path, 400, "invalid_json"),
            ("array body", b'[{"ActiveCallId": "x"}]', "admin", ct, {}, path, 400,
             "not_an_object"),
            ("string body", b'"ActiveCallId"', "admin", ct, {}, path, 400, "not_an_object"),
            ("no dedupe key", b'{"CallType": 1}', "admin", ct, {}, path, 400, "no_dedupe_key"),
            # docs/SIGNATURES.md: null or "" means absent.
            ("null and empty ids", b'{"ActiveCallId": null, "CorrelationId": ""}', "admin", ct,
             {}, path, 400, "no_dedupe_key"),
            ("no key", good, None, ct, {}, path, 401, "unauthorized"),
            ("bad key", good, "not-a-key", ct, {}, path, 401, "unauthorized"),
            ("admin key with one more character", good, self.serve.admin_key + "x", ct, {},
             path, 401, "unauthorized"),
            ("basic auth", good, None, ct,
             {"Authorization": "Basic " + base64.b64encode(b"admin:" +
                                                           self.serve.admin_key.encode()).decode()},
             path, 401, "unauthorized"),
            ("unknown voice app", good, "admin", ct, {},
             "/v1/voice-apps/no-such-app/begin-call", 404, "unknown_voice_app"),
            ("over 256 KiB", too_big, "admin", ct, {}, path, 413, "too_large"),
            ("text/plain", good, "admin", "text/plain", {}, path, 415, "unsupported_media_type"),
            ("form", good, "admin", "application/x-www-form-urlencoded", {}, path, 415,
             "unsupported_media_type"),
            # Assumption: no Content-Type at all is "not application/json".
            ("no content type", good, "admin", None, {}, path, 415, "unsupported_media_type"),
        ]
        for name, body, key, ctype, headers, p, status, code in cases:
            with self.subTest(case=name):
                r = self.serve.request("POST", p, body, key=key, headers=headers,
                                       content_type=ctype)
                self.assertEqual(r.status, status, r)
                self.assertEqual(r.error_code, code, r)
                self.assertIsInstance(r.error_message, str, r)
                self.assertTrue(r.error_message, r)
        with self.subTest(case="wrong role (read key ingests)"):
            read_key, = self.keys("read")
            r = self.serve.ingest(app.id, "begin-call", good, key=read_key)
            self.assertEqual((r.status, r.error_code), (403, "forbidden"), r)
        listed = self.serve.api("GET", "/v1/messages")
        self.assertEqual(listed.status, 200, listed)
        self.assertEqual(listed.json.get("data"), [], "a refused request stores nothing")
        self.assertIsNone(listed.json.get("nextCursor"))
        time.sleep(0.5)
        self.assertEqual(self.rx.requests, [], "a refused request sends nothing")

    def test_roles(self):
        app = self.make_app()
        ingest_key, read_key = self.keys("ingest", "read")
        s = self.serve
        mid = self.ingest_ok(app, "begin-call", record(), key=ingest_key)
        self.rx.wait_for(1, webhook_id=mid, timeout=T(10), status_ok=True)
        forbidden = [
            ("ingest key puts an app", "PUT", "/v1/voice-apps/x1", {}, ingest_key),
            ("ingest key reads an app", "GET", "/v1/voice-apps/" + app.id, None, ingest_key),
            ("ingest key lists messages", "GET", "/v1/messages", None, ingest_key),
            ("ingest key reads metrics", "GET", "/metrics", None, ingest_key),
            ("read key ingests", "POST", "/v1/voice-apps/%s/end-call" % app.id,
             {"ActiveCallId": "r1"}, read_key),
            ("read key puts an app", "PUT", "/v1/voice-apps/x2", {}, read_key),
            ("read key deletes an app", "DELETE", "/v1/voice-apps/" + app.id, None, read_key),
            ("read key replays", "POST", "/v1/messages/%s/replay" % mid, None, read_key),
            ("read key recovers", "POST", "/v1/voice-apps/%s/recover?since=0" % app.id, None,
             read_key),
            ("read key rotates the secret", "POST", "/v1/voice-apps/%s/secret/rotate" % app.id,
             None, read_key),
            ("read key patches an app", "PATCH", "/v1/voice-apps/" + app.id, {}, read_key),
            ("read key test-sends", "POST", "/v1/voice-apps/%s/test" % app.id, None, read_key),
            ("ingest key test-sends", "POST", "/v1/voice-apps/%s/test" % app.id, None,
             ingest_key),
        ]
        for name, method, path, obj, key in forbidden:
            with self.subTest(case=name):
                r = s.api(method, path, obj, key=key)
                self.assertEqual((r.status, r.error_code), (403, "forbidden"), r)
        allowed = [
            ("read key lists messages", "/v1/messages"),
            ("read key reads a message", "/v1/messages/" + mid),
            ("read key reads an app", "/v1/voice-apps/" + app.id),
            ("read key lists apps", "/v1/voice-apps"),
            ("read key reads metrics", "/metrics"),
        ]
        for name, path in allowed:
            with self.subTest(case=name):
                r = s.api("GET", path, key=read_key)
                self.assertEqual(r.status, 200, r)
        self.assertIs(self.get_app(app.id).get("enabled"), True, "no forbidden call changed it")
        self.assertEqual(len(self.rx.requests), 1, "no forbidden call sent anything")

    def test_header_values_are_shown_to_admin_keys_only(self):
        # A Voice App's headers hold receivers' tokens: read keys see their names only.
        headers = {"Authorization": "Bearer tok-" + _secrets.token_hex(8),
                   "X-Api-Key": "k-" + _secrets.token_hex(8)}
        app = self.make_app(headers=headers)
        read_key, = self.keys("read")
        r = self.serve.api("GET", "/v1/voice-apps/" + app.id, key=read_key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json.get("headers"), {k: "********" for k in headers}, r)
        listed = self.serve.api("GET", "/v1/voice-apps", key=read_key)
        self.assertEqual(listed.status, 200, listed)
        for v in headers.values():
            self.assertNotIn(v.encode(), r.body)
            self.assertNotIn(v.encode(), listed.body)
        mine = [a for a in listed.json["data"] if a.get("id") == app.id]
        self.assertEqual(mine[0].get("headers"), {k: "********" for k in headers}, mine)
        self.assertEqual(self.get_app(app.id).get("headers"), headers, "admin sees the values")
        # And the values still go out with deliveries.
        mid = self.ingest_ok(app, "begin-call", record())
        got = self.rx.wait_for(1, webhook_id=mid, timeout=T(10), status_ok=True)
        self.assertEqual(got[0].headers.get("x-api-key"), headers["X-Api-Key"])

    def test_voice_app_crud_and_validation(self):
        s = self.serve
        app_id = "crud.app_" + _secrets.token_hex(4)
        body = {"BeginCallEventProcessingUrl": self.rx.url("/crud/begin"),
                "headers": {"X-Api-Key": "v"}, "timeoutMs": 6000, "connectTimeoutMs": 2000,
                "retryScheduleSeconds": [2, 4], "allowInsecureHttp": True,
                "allowPrivateNetwork": True}
        before = time.time()
        r = s.api("PUT", "/v1/voice-apps/" + app_id, body)
        self.assertEqual(r.status, 201, r)
        r = s.api("PUT", "/v1/voice-apps/" + app_id, body)
        self.assertEqual(r.status, 200, "a second PUT replaces: %r" % r)
        got = self.get_app(app_id)
        self.assertEqual(got.get("id"), app_id)
        for k, v in body.items():
            if k == "headers":
                # Assumption: header values may be masked in a GET (they are often secrets);
                # their names are shown.
                self.assertEqual(set(got.get(k) or {}), set(v), got)
            else:
                self.assertEqual(got.get(k), v, "GET echoes %s: %s" % (k, got))
        self.assertIs(got.get("enabled"), True)
        self.assertIsNone(got.get("disabledReason"))
        self.assertIsNone(got.get("EndCallEventProcessingUrl"))
        self.assertAlmostEqual(got.get("createdAt") or 0, before, delta=60)

        minimal_id = "min-" + _secrets.token_hex(4)
        r = s.api("PUT", "/v1/voice-apps/" + minimal_id,
                  {"BeginCallEventProcessingUrl": "https://127.0.0.1:9/hooks/begin"})
        self.assertEqual(r.status, 201, r)
        got = self.get_app(minimal_id)
        defaults = {"connectTimeoutMs": 5000, "timeoutMs": 15000,
                    "retryScheduleSeconds": [5, 300, 1800, 7200, 18000, 36000, 36000],
                    "maxInFlight": 64, "enabled": True, "allowInsecureHttp": False,
                    "allowPrivateNetwork": False}
        for k, v in defaults.items():
            self.assertEqual(got.get(k), v, "default %s: %s" % (k, got))
        listed = s.api("GET", "/v1/voice-apps")
        self.assertEqual(listed.status, 200, listed)
        self.assertLessEqual({app_id, minimal_id}, {a.get("id") for a in listed.json["data"]})

        sec = self.get_secret(app_id)
        raw = base64.b64decode(sec["secret"][6:] + "=" * (-len(sec["secret"][6:]) % 4))
        self.assertTrue(24 <= len(raw) <= 64, sec)
        self.assertIsNone(sec.get("previous"))
        self.assertIsNone(sec.get("previousExpiresAt"))

        bad = [
            ("unknown key", {"bogus": 1}, "bogus"),
            ("wrong type", {"timeoutMs": "fast"}, "timeoutMs"),
            ("non-positive retry", {"retryScheduleSeconds": [5, 0]}, "retryScheduleSeconds"),
            ("non-string header", {"headers": {"X-A": 1}}, "headers"),
            ("url not a string", {"BeginCallEventProcessingUrl": 5},
             "BeginCallEventProcessingUrl"),
            ("bad ordering", {"ordering": "sometimes"}, "ordering"),
        ]
        for name, obj, field in bad:
            with self.subTest(case=name):
                r = s.api("PUT", "/v1/voice-apps/v-" + _secrets.token_hex(4), obj)
                self.assertEqual(r.status, 400, r)
                self.assertIn(field, r.error_message or "", "the 400 names the field: %r" % r)
        with self.subTest(case="not JSON"):
            r = s.request("PUT", "/v1/voice-apps/v-x", b"{", content_type="application/json")
            self.assertEqual(r.status, 400, r)
        # The status for a bad id is not written down: a 4xx with the error shape.
        for name, bad_id in (("space", "bad%20id"), ("129 characters", "a" * 129),
                             ("slash-free punctuation", "bad!id")):
            with self.subTest(case="app id " + name):
                r = s.api("PUT", "/v1/voice-apps/" + bad_id, {})
                self.assertIn(r.status, (400, 404), r)
                self.assertTrue(r.error_code, r)
        with self.subTest(case="128 characters is fine"):
            r = s.api("PUT", "/v1/voice-apps/" + "b" * 128, {})
            self.assertEqual(r.status, 201, r)

        r = s.api("DELETE", "/v1/voice-apps/" + minimal_id)
        self.assertEqual(r.status, 204, r)
        r = s.api("GET", "/v1/voice-apps/" + minimal_id)
        self.assertEqual(r.status, 404, r)
        r = s.ingest(minimal_id, "begin-call", record())
        self.assertEqual((r.status, r.error_code), (404, "unknown_voice_app"), r)

    def test_message_listing(self):
        app = self.make_app()
        other = self.make_app()
        mids, calls = [], []
        for i in range(5):
            call = "list-%d-%s" % (i, _secrets.token_hex(4))
            calls.append(call)
            event = "begin-call" if i % 2 == 0 else "end-call"
            mids.append(self.ingest_ok(app, event, record(call)))
        self.ingest_ok(other, "begin-call", record())
        self.rx.wait_until(lambda rs: set(mids) <= {r.webhook_id for r in rs}, T(10),
                           "five deliveries")
        seen, cursor, pages = [], None, 0
        while True:
            q = "/v1/messages?voiceAppId=%s&limit=2" % app.id + (
                "&cursor=" + cursor if cursor else "")
            r = self.serve.api("GET", q)
            self.assertEqual(r.status, 200, r)
            self.assertLessEqual(len(r.json["data"]), 2)
            seen += r.json["data"]
            cursor = r.json.get("nextCursor")
            pages += 1
            if not cursor or pages > 5:
                break
        self.assertEqual(sorted(m["id"] for m in seen), sorted(mids), "every message once")
        created = [m["createdAt"] for m in seen]
        self.assertEqual(created, sorted(created, reverse=True), "newest first")
        for m in seen:
            for k in ("id", "voiceAppId", "event", "dedupeKey", "callType", "status",
                      "attemptCount", "createdAt", "nextAttemptAt", "deliveredAt", "lastError",
                      "bodyBytes"):
                self.assertIn(k, m, m)
        r = self.serve.api("GET", "/v1/messages?voiceAppId=%s&event=end-call" % app.id)
        self.assertEqual(sorted(m["id"] for m in r.json["data"]), sorted(mids[1::2]))
        r = self.serve.api("GET", "/v1/messages?activeCallId=%s" % calls[2])
        self.assertEqual([m["id"] for m in r.json["data"]], [mids[2]])
        r = self.serve.api("GET", "/v1/messages?limit=501")
        self.assertEqual(r.status, 400, "limit <= 500: %r" % r)

    def test_query_arguments_and_filter_values_are_checked(self):
        app = self.make_app()
        mids = {ev: self.ingest_ok(app, ev, record()) for ev in ("begin-call", "end-call")}
        s = self.serve
        # The short forms of the CLI are the same filter as the full names.
        for short, full in (("begin", "begin-call"), ("end", "end-call")):
            r = s.api("GET", "/v1/messages?voiceAppId=%s&event=%s" % (app.id, short))
            self.assertEqual(r.status, 200, r)
            self.assertEqual([m["id"] for m in r.json["data"]], [mids[full]], r)
            self.assertEqual({m["event"] for m in r.json["data"]}, {full})
        bad = [
            ("/v1/messages?app=%s" % app.id, "app"),  # an unknown argument is not ignored
            ("/v1/messages?event=middle", "event"),
            ("/v1/messages?status=retrying", "status"),
            ("/v1/messages?voiceAppId=bad%20id", "voiceAppId"),
            ("/v1/messages?activeCallId=", "activeCallId"),
            ("/v1/messages?since=", "since"),
            ("/v1/messages?since=yesterday", "since"),
            ("/v1/messages?cursor=x", "cursor"),
            ("/v1/messages?status=dead&status=pending", "status"),
            ("/v1/voice-apps?limit=1", "limit"),
            ("/v1/voice-apps/%s?x=1" % app.id, "x"),
            ("/v1/messages/%s?verbose=1" % mids["begin-call"], "verbose"),
        ]
        for path, name in bad:
            with self.subTest(path=path):
                r = s.api("GET", path)
                self.assertEqual((r.status, r.error_code), (400, "invalid_query"), r)
                self.assertTrue(r.error_message.startswith(name + ":"), r)
        for method, path, name in (
                ("POST", "/v1/voice-apps/%s/recover?since=0&app=x" % app.id, "app"),
                ("POST", "/v1/voice-apps/%s/recover?since=" % app.id, "since"),
                ("POST", "/v1/messages/%s/replay?newId=maybe" % mids["end-call"], "newId"),
                ("POST", "/v1/messages/%s/replay?new_id=true" % mids["end-call"], "new_id"),
                ("POST", "/v1/voice-apps/%s/test?event=middle" % app.id, "event"),
                ("DELETE", "/v1/voice-apps/%s?force=1" % app.id, "force")):
            with self.subTest(path=path):
                r = s.api(method, path)
                self.assertEqual((r.status, r.error_code), (400, "invalid_query"), r)
                self.assertTrue(r.error_message.startswith(name + ":"), r)
        # Ingest too: refused before the body is read, nothing stored.
        r = s.request("POST", "/v1/voice-apps/%s/begin-call?tenant=1" % app.id, record(),
                      content_type="application/json")
        self.assertEqual((r.status, r.error_code), (400, "invalid_query"), r)
        r = s.api("GET", "/v1/messages?voiceAppId=%s" % app.id)
        self.assertEqual(len(r.json["data"]), 2, "the refused event was not stored")
        self.assertEqual(s.api("GET", "/v1/voice-apps/" + app.id).status, 200, "not deleted")
        # Monitoring endpoints ignore a query.
        self.assertEqual(s.request("GET", "/metrics?x=1").status, 200)
        self.assertEqual(s.request("GET", "/healthz?x=1", key=None).status, 200)

    def test_patch_changes_only_what_it_names(self):
        app = self.make_app(headers={"X-A": "1", "X-B": "2"}, maxInFlight=7)
        path = "/v1/voice-apps/" + app.id
        before = self.get_app(app.id)
        r = self.serve.api("PATCH", path, {"headers": {"X-A": None, "X-C": "3"},
                                           "EndCallEventProcessingUrl": None,
                                           "timeoutMs": 800})
        self.assertEqual(r.status, 200, r)
        after = self.get_app(app.id)
        self.assertEqual(after["headers"], {"X-B": "2", "X-C": "3"})
        self.assertIsNone(after["EndCallEventProcessingUrl"])
        self.assertEqual(after["timeoutMs"], 800)
        self.assertEqual(after["connectTimeoutMs"], 800, "brought down with timeoutMs, as PUT")
        for k in ("BeginCallEventProcessingUrl", "maxInFlight", "retryScheduleSeconds",
                  "allowPrivateNetwork", "createdAt"):
            self.assertEqual(after[k], before[k], k)
        self.assertEqual(self.get_secret(app.id)["secret"], app.secret, "same signing secret")
        # A patch that does not check changes nothing, and names the key.
        for patch, name in (({"timeoutMs": 5}, "timeoutMs"), ({"bogus": 1}, "bogus"),
                            ({"headers": {"X-D": 4}}, "headers"),
                            ({"tls": {"caFile": "relative.pem"}}, "tls.caFile"),
                            ({"tls": {"clientCertFile": "/nonexistent/c.pem"}}, "tls"),
                            ({"maxInFlight": 3, "ordering": "sometimes"}, "ordering")):
            with self.subTest(patch=patch):
                r = self.serve.api("PATCH", path, patch)
                self.assertEqual((r.status, r.error_code), (400, "invalid_settings"), r)
                self.assertIn(name, r.error_message, r)
                self.assertEqual(self.get_app(app.id), after, "nothing changed")
        r = self.serve.api("PATCH", path, [1])
        self.assertEqual(r.status, 400, r)
        r = self.serve.api("PATCH", "/v1/voice-apps/nosuch", {"timeoutMs": 900})
        self.assertEqual((r.status, r.error_code), (404, "not_found"), r)
        # enabled and the disabled reason follow, as with PUT.
        r = self.serve.api("PATCH", path, {"enabled": False})
        self.assertIs(r.json["enabled"], False, r)
        r = self.serve.api("PATCH", path, {"enabled": None})
        self.assertIs(r.json["enabled"], True, "null puts the default back: %r" % r)
        # The change is what deliveries use.
        mid = self.ingest_ok(app, "begin-call", record())
        rec = self.rx.wait_for(1, webhook_id=mid, timeout=T(10), status_ok=True)[0]
        self.assertEqual(rec.headers.get("x-c"), "3")
        self.assertNotIn("x-a", rec.headers)

    def test_replay_with_a_new_id(self):
        app = self.make_app()
        body = record()
        mid = self.ingest_ok(app, "end-call", body)
        self.rx.wait_for(1, webhook_id=mid, timeout=T(10), status_ok=True)
        self.wait_status(mid, "delivered")
        r = self.serve.api("POST", "/v1/messages/%s/replay?newId=true" % mid)
        self.assertEqual(r.status, 202, r)
        new = r.json.get("messageId")
        self.assertRegex(new or "", r"^msg_[0-9A-Za-z]{27}$", r)
        self.assertNotEqual(new, mid)
        self.assertEqual(r.json.get("replayOf"), mid, r)
        rec = self.rx.wait_for(1, webhook_id=new, timeout=T(10), status_ok=True)[0]
        self.assert_delivery(rec, app, "end-call", body, new)  # same record, signed, new id
        m = self.wait_status(new, "delivered")
        self.assertEqual((m["voiceAppId"], m["event"], m["dedupeKey"]),
                         (app.id, "end-call", dedupe_key(json.loads(body))))
        self.assertEqual(len(self.attempts_of(self.get_message(mid))), 1, "original untouched")
        # The body form, and a plain replay keeps the webhook-id.
        r = self.serve.api("POST", "/v1/messages/%s/replay" % mid, {"newId": True})
        self.assertEqual(r.status, 202, r)
        self.assertNotIn(r.json["messageId"], (mid, new), r)
        r = self.serve.api("POST", "/v1/messages/%s/replay" % mid, {"newId": False})
        self.assertEqual(r.json, {"messageId": mid}, r)
        self.rx.wait_for(2, webhook_id=mid, timeout=T(10), status_ok=True)
        r = self.serve.api("POST", "/v1/messages/%s/replay" % mid, {"newid": True})
        self.assertEqual(r.status, 400, r)
        # An upstream repeat is still a duplicate of the original.
        self.ingest_ok(app, "end-call", body, expect=200)
        skipped_app = self.make_app(end=False)
        sk = self.ingest_ok(skipped_app, "end-call", record())
        self.wait_status(sk, "skipped")
        r = self.serve.api("POST", "/v1/messages/%s/replay?newId=true" % sk)
        self.assertEqual(r.status, 409, r)

    def test_test_send(self):
        app = self.make_app(headers={"X-Tenant": "t1"})
        self.rx.set_default(Response(201, b"thanks", headers={"X-Receiver": "yes"}),
                            path=app.end)
        r = self.serve.api("POST", "/v1/voice-apps/%s/test?event=end" % app.id)
        self.assertEqual(r.status, 200, r)
        t = r.json
        self.assertEqual((t["httpStatus"], t["event"], t["stored"], t["test"], t["errorClass"]),
                         (201, "end-call", False, True, None), t)
        self.assertEqual(t["response"], "thanks")
        self.assertIn("X-Receiver: yes", t["headers"])
        self.assertEqual(t["url"], self.rx.url(app.end))
        rec = self.rx.wait_for(1, path=app.end, timeout=T(5))[0]
        self.assertEqual(rec.webhook_id, t["webhookId"])
        self.assertEqual(rec.headers.get("x-callhook-test"), "1")
        self.assertEqual(rec.headers.get("x-tenant"), "t1", "the app's headers too")
        self.assertEqual(rec.headers.get("x-call-event"), "end-call")
        self.assertTrue(rec.verified, "signed as a delivery: %r" % rec.verification)
        sample = json.loads(rec.body)
        self.assertIs(sample.get("CallhookTest"), True, sample)
        self.assertTrue(sample["ActiveCallId"].startswith("callhook-test-"), sample)
        # Not stored: no message, nothing retried.
        r = self.serve.api("GET", "/v1/messages?voiceAppId=" + app.id)
        self.assertEqual(r.json["data"], [], "a test send is not a message")
        # Default event, a receiver's refusal, an address the app may not reach, no URL.
        self.rx.set_default(Response.error(503, b"down"), path=app.begin)
        t = self.serve.api("POST", "/v1/voice-apps/%s/test" % app.id).json
        self.assertEqual((t["event"], t["httpStatus"], t["errorClass"], t["response"]),
                         ("begin-call", 503, "http", "down"), t)
        r = self.serve.api("PATCH", "/v1/voice-apps/" + app.id,
                           {"allowPrivateNetwork": False, "EndCallEventProcessingUrl": None})
        self.assertEqual(r.status, 200, r)
        n = len(self.rx.requests)
        t = self.serve.api("POST", "/v1/voice-apps/%s/test" % app.id).json
        self.assertEqual((t["httpStatus"], t["errorClass"]), (0, "refused"), t)
        self.assertEqual(len(self.rx.requests), n, "the guard let nothing through")
        r = self.serve.api("POST", "/v1/voice-apps/%s/test?event=end-call" % app.id)
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        r = self.serve.api("POST", "/v1/voice-apps/nosuch/test")
        self.assertEqual(r.status, 404, r)
        time.sleep(0.5)
        r = self.serve.api("GET", "/v1/messages?voiceAppId=" + app.id)
        self.assertEqual(r.json["data"], [], "still no message")

    def test_metrics_count_failed_and_leave_disabled_apps_out_of_the_age(self):
        failing = self.make_app(retryScheduleSeconds=[3600])
        self.rx.set_default(500, path=failing.begin)
        mid = self.ingest_ok(failing, "begin-call", record())
        self.wait_status(mid, "failed")
        off = self.make_app(enabled=False)
        self.ingest_ok(off, "begin-call", record())
        time.sleep(2.2)

        def metric(text, name):
            m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
            self.assertIsNotNone(m, "%s missing:\n%s" % (name, text))
            return float(m.group(1))

        text = self.serve.request("GET", "/metrics").body.decode()
        self.assertEqual(metric(text, 'callhook_messages{status="failed"}'), 1, text)
        self.assertEqual(metric(text, 'callhook_messages{status="pending"}'), 1, text)
        self.assertEqual(metric(text, "callhook_parked_messages"), 1, text)
        self.assertEqual(metric(text, "callhook_queue_depth"), 2, text)
        # The failed message is the oldest one that counts; the disabled app's does not.
        age = metric(text, "callhook_oldest_pending_age_seconds")
        self.assertGreaterEqual(age, 2, text)
        self.serve.api("DELETE", "/v1/voice-apps/" + failing.id)
        text = self.serve.request("GET", "/metrics").body.decode()
        self.assertEqual(metric(text, "callhook_oldest_pending_age_seconds"), 0,
                         "only a disabled app's backlog is left: %s" % text)
        self.assertEqual(metric(text, "callhook_parked_messages"), 1, text)

    def test_healthz_and_metrics(self):
        r = self.serve.request("GET", "/healthz", key=None)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"status": "ok"})
        app = self.make_app()
        mid = self.ingest_ok(app, "begin-call", record())
        self.rx.wait_for(1, webhook_id=mid, timeout=T(10), status_ok=True)
        r = self.serve.request("GET", "/metrics", key=None)
        self.assertEqual((r.status, r.error_code), (401, "unauthorized"), r)
        r = self.serve.request("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r.headers)
        text = r.body.decode()
        names = set()
        sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+-?\d+)?$')
        for line in text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            m = sample.match(line)
            self.assertIsNotNone(m, "not a Prometheus sample line: %r" % line)
            float(m.group(3).replace("Inf", "inf"))  # a number (NaN, +Inf allowed)
            names.add(m.group(1))
        self.assertTrue(any(n.startswith("callhook_") for n in names), text[:2000])


class Safety(ServeCase):

    def test_private_and_plain_http_targets_need_permission(self):
        # Nothing may reach 127.0.0.1 unless the app allows private networks, nor plain http
        # unless it allows insecure http. The refusal may come at PUT (400) or at delivery.
        for name, settings in (("private network", {"allowPrivateNetwork": False}),
                               ("plain http", {"allowInsecureHttp": False})):
            with self.subTest(case=name):
                app_id = "ssrf-" + _secrets.token_hex(4)
                body = dict(FAST_APP, retryScheduleSeconds=[1],
                            BeginCallEventProcessingUrl=self.rx.url("/%s/begin" % app_id))
                body.update(settings)
                r = self.serve.api("PUT", "/v1/voice-apps/" + app_id, body)
                if r.status == 400:
                    continue
                self.assertEqual(r.status, 201, r)
                mid = self.ingest_ok(app_id, "begin-call", record())
                time.sleep(2.5)
                self.assertEqual(self.rx.requests_for(path="/%s/begin" % app_id), [],
                                 "%s was contacted" % name)
                m = self.get_message(mid)
                self.assertNotEqual(m["status"], "delivered", m)

    def test_memory_bound_keeps_fresh_events_in_the_store(self):
        """--max-queued-mb bounds what the engine holds; fresh events beyond it wait in the
        store (pending) and are all delivered, once each, as the queue drains."""
        self.serve.stop()
        self.serve.extra_args += ["--max-queued-mb", "1"]
        self.serve.start()
        # A long timeout: a slow answer under load must not turn into a (legitimate) retry.
        app = self.make_app(maxInFlight=2, ordering="none", timeoutMs=10000)
        self.rx.set_default(Response.ok(delay_s=0.05))  # ~40 deliveries/s
        pad = "x" * 8000  # ~8 KB records: 1 MiB holds about 125 of them
        bodies = {}
        lock = threading.Lock()
        seen = {"queued": 0, "queued_bytes": 0, "pending": 0}
        done = threading.Event()

        def metric(text, name):
            for line in text.splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
            return 0.0

        def watch():
            while not done.is_set():
                r = self.serve.request("GET", "/metrics")
                if r.status == 200:
                    text = r.body.decode()
                    seen["queued"] = max(seen["queued"], metric(text, "callhook_engine_queued"))
                    seen["queued_bytes"] = max(seen["queued_bytes"],
                                               metric(text, "callhook_engine_queued_bytes"))
                    seen["pending"] = max(seen["pending"], metric(
                        text, 'callhook_messages{status="pending"}'))
                time.sleep(0.05)

        def worker(t):
            for i in range(75):
                body = record("bound-%d-%d" % (t, i), 4, Pad=pad)
                mid = self.ingest_ok(app, "end-call", body)
                with lock:
                    bodies[mid] = body

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        workers = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(T(60))
        self.assertEqual(len(bodies), 300)
        try:
            wait_until(lambda: len({r.webhook_id for r in self.ok_deliveries()}) >= 300, T(60),
                       0.2, what="300 deliveries")
        finally:
            done.set()
            watcher.join(5)
        ok = self.ok_deliveries()
        counts = collections.Counter(r.webhook_id for r in ok)
        self.assertEqual(set(counts), set(bodies))
        twice = [m for m, c in counts.items() if c > 1]
        self.assertEqual(twice, [], "delivered twice; their attempt logs: %s" % json.dumps(
            [self.get_message(m).get("attempts") for m in twice[:3]]))
        for r in ok:
            self.assertEqual(r.body, bodies[r.webhook_id])
        self.assertGreater(seen["pending"], 0, "some fresh events waited in the store")
        # The bound, plus what one claim may bring before the next check.
        self.assertLessEqual(seen["queued_bytes"], (1 << 20) + 2 * 8300, seen)
        self.assertLessEqual(seen["queued"], 130, seen)

    def test_crash_safety(self):
        seed = int(os.environ.get("CALLHOOK_TEST_SEED") or time.time() * 1000) % 2 ** 32
        rnd = random.Random(seed)
        print("\n  crash test seed %d (CALLHOOK_TEST_SEED to repeat)" % seed, file=sys.stderr)
        max_in_flight = 16
        # A delivery claimed when serve died is due again when its lease ends (--lease-s,
        # default 300 s): a short lease, longer than an attempt can take (timeoutMs).
        self.serve.stop()
        self.serve.extra_args += ["--lease-s", "5"]
        self.serve.start()
        app = self.make_app(maxInFlight=max_in_flight, timeoutMs=2000,
                            retryScheduleSeconds=[1, 1, 2, 4, 8])
        # A slow-ish receiver, so that each kill finds deliveries in flight.
        self.rx.set_default(Response.ok(delay_s=0.05))
        threads_n, per_thread, kills = 4, 80, 3
        acked = {}  # messageId -> body
        problems = []
        lock = threading.Lock()
        s = self.serve

        def worker(t):
            wr = random.Random(seed + t)
            for i in range(per_thread):
                event = "begin-call" if i % 2 == 0 else "end-call"
                body = record("crash-%d-%d-%s" % (t, i, _secrets.token_hex(4)), 4, Seq=i)
                deadline = time.monotonic() + T(60)
                while True:
                    try:
                        r = s.ingest(app.id, event, body, timeout=5)
                    except (OSError, http.client.HTTPException, AttributeError):
                        # serve is down or died mid-request: send it again. AttributeError:
                        # http.client itself, when the socket vanishes under a read.
                        r = None
                    if r is not None and r.status in (200, 202):
                        with lock:
                            acked[r.json["messageId"]] = body
                        break
                    if r is not None and r.status != 503:
                        with lock:
                            problems.append("unexpected answer %r" % r)
                        break
                    if time.monotonic() > deadline:
                        with lock:
                            problems.append("event %d/%d never acknowledged" % (t, i))
                        break
                    time.sleep(0.05)
                time.sleep(wr.uniform(0.005, 0.03))

        def guarded(t):
            try:
                worker(t)
            except Exception as e:  # a dead client thread is the test's problem, said plainly
                with lock:
                    problems.append("ingest worker %d died: %r" % (t, e))

        workers = [threading.Thread(target=guarded, args=(t,), daemon=True)
                   for t in range(threads_n)]
        for w in workers:
            w.start()
        for k in range(kills):
            time.sleep(rnd.uniform(0.3, 1.2))
            s.kill9()
            s.start()  # same database, same port (the workers keep going)
        for w in workers:
            w.join(T(90))
        self.assertFalse(any(w.is_alive() for w in workers), "ingest workers did not finish")
        self.assertEqual(problems, [])
        self.assertEqual(len(acked), threads_n * per_thread)
        self.assertEqual(s.exits[-kills:], [-9] * kills, "serve only died when killed")

        def missing():
            got = {r.webhook_id for r in self.ok_deliveries()}
            return [m for m in acked if m not in got]

        try:
            wait_until(lambda: not missing(), T(60), 0.2, what="every acknowledged event "
                       "delivered")
        except TimeoutError:
            lost = missing()
            sample = [self.get_message(m) for m in lost[:5]]
            self.fail("%d of %d acknowledged events never delivered; e.g. %s" % (
                len(lost), len(acked), json.dumps(sample)[:3000]))
        ok = self.ok_deliveries()
        counts = collections.Counter(r.webhook_id for r in ok)
        self.assertLessEqual(set(counts), set(acked), "only acknowledged events are delivered")
        for r in ok:
            self.assertEqual(r.body, acked[r.webhook_id], "delivered as ingested")
            self.assertTrue(r.verified, r.verification)
        extra = sum(counts.values()) - len(counts)
        self.assertLessEqual(max(counts.values()), 1 + kills, counts.most_common(3))
        # Each crash can repeat what was in flight plus what was delivered in the last result
        # flush window (results are written every 10 ms, docs/OPERATIONS.md): twice maxInFlight.
        self.assertLessEqual(extra, 2 * kills * max_in_flight,
                             "at most the in-flight and just-delivered messages of each crash "
                             "go twice")
        print("  %d events, %d deliveries, %d duplicates after %d kills" % (
            len(acked), sum(counts.values()), extra, kills), file=sys.stderr)


class Status(ServeCase):
    """GET /v1/status (callhook status): the node, its store, and per Voice App its state,
    counts by the API's statuses, oldest waiting message and last error; trouble first."""

    def status(self, key="admin"):
        r = self.serve.api("GET", "/v1/status", key=key)
        self.assertEqual(r.status, 200, r)
        return r.json

    def test_counts_order_and_last_errors(self):
        # Ids in the reverse of the expected order, so that only the trouble ranks them.
        ok = self.make_app("a-ok")
        self.make_app("b-empty")
        failing = self.make_app("c-failing", retryScheduleSeconds=[3600])
        dead = self.make_app("d-dead", retryScheduleSeconds=[1])
        off = self.make_app("e-off", enabled=False)
        gone = self.make_app("f-gone", retryScheduleSeconds=[3600])
        self.rx.set_default(500, path=failing.begin)
        self.rx.set_default(500, path=dead.begin)
        self.rx.set_default(Response.gone(), path=gone.begin)
        delivered = [self.ingest_ok(ok, "begin-call", record()) for _ in range(2)]
        m_failing = self.ingest_ok(failing, "begin-call", record())
        m_dead = self.ingest_ok(dead, "begin-call", record())
        self.ingest_ok(off, "begin-call", record())
        m_gone = self.ingest_ok(gone, "begin-call", record())
        for mid in delivered:
            self.wait_status(mid, "delivered")
        failed_msg = self.wait_status(m_failing, "failed")
        self.wait_status(m_dead, "dead")
        self.wait_status(m_gone, "failed")
        wait_until(lambda: self.get_app(gone.id).get("enabled") is False, T(10), 0.1,
                   "f-gone disabled by its 410")

        before = int(time.time())
        st = self.status()
        self.assertEqual([a["id"] for a in st["apps"]],
                         ["f-gone", "e-off", "d-dead", "c-failing", "a-ok", "b-empty"], st)
        apps = {a["id"]: a for a in st["apps"]}
        zero = dict.fromkeys(("pending", "failed", "delivering", "delivered", "dead",
                              "skipped", "parked"), 0)
        self.assertEqual(apps["a-ok"]["counts"], dict(zero, delivered=2))
        self.assertEqual(apps["b-empty"]["counts"], zero)
        self.assertEqual(apps["c-failing"]["counts"], dict(zero, failed=1))
        self.assertEqual(apps["d-dead"]["counts"], dict(zero, dead=1))
        self.assertEqual(apps["e-off"]["counts"], dict(zero, pending=1, parked=1))
        self.assertEqual(apps["f-gone"]["counts"], dict(zero, failed=1, parked=1))
        for a in st["apps"]:
            self.assertEqual(set(a), {"id", "enabled", "disabledReason", "counts",
                                      "oldestPendingAt", "oldestPendingAgeSeconds", "lastError",
                                      "lastErrorAt", "lastErrorMessageId"}, a)
        self.assertIs(apps["e-off"]["enabled"], False)
        self.assertIsNone(apps["e-off"]["disabledReason"], "disabled by a PUT: no reason")
        self.assertIs(apps["f-gone"]["enabled"], False)
        self.assertIn("410", apps["f-gone"]["disabledReason"] or "", apps["f-gone"])
        self.assertIsNone(apps["a-ok"]["disabledReason"])
        # The oldest waiting message counts for enabled apps only (a parked one waits for
        # the app, not for a delivery).
        c = apps["c-failing"]
        self.assertEqual(c["oldestPendingAt"], failed_msg["createdAt"], c)
        self.assertGreaterEqual(c["oldestPendingAgeSeconds"], 0)
        self.assertLessEqual(c["oldestPendingAgeSeconds"], before + 2 - c["oldestPendingAt"])
        for app_id in ("a-ok", "b-empty", "d-dead", "e-off", "f-gone"):
            self.assertIsNone(apps[app_id]["oldestPendingAt"], apps[app_id])
            self.assertIsNone(apps[app_id]["oldestPendingAgeSeconds"], apps[app_id])
        # The last error: its text, the id of its message and that message's arrival time.
        self.assertTrue(c["lastError"].startswith("HTTP 500"), c)
        self.assertEqual(c["lastErrorMessageId"], m_failing)
        self.assertEqual(c["lastErrorAt"], failed_msg["createdAt"])
        self.assertEqual(c["lastError"], failed_msg["lastError"])
        self.assertTrue(apps["d-dead"]["lastError"].startswith("HTTP 500"))
        self.assertIn("410", apps["f-gone"]["lastError"])
        for app_id in ("a-ok", "b-empty", "e-off"):
            a = apps[app_id]
            self.assertEqual((a["lastError"], a["lastErrorAt"], a["lastErrorMessageId"]),
                             (None, None, None), a)
        totals = st["totals"]
        for k in zero:
            self.assertEqual(totals[k], sum(a["counts"][k] for a in st["apps"]), (k, totals))
        self.assertEqual((totals["apps"], totals["disabledApps"]), (6, 2), totals)
        self.assertEqual(totals["oldestPendingAt"], c["oldestPendingAt"], totals)

        node = st["node"]
        self.assertRegex(node["version"], r"^\d+\.\d+")
        self.assertEqual(node["listen"], "127.0.0.1:%d" % self.serve.port)
        self.assertLessEqual(node["startedAt"], time.time())
        self.assertGreaterEqual(node["uptimeSeconds"], 0)
        store = st["store"]
        self.assertIs(store["sealed"], False)
        self.assertIsInstance(store["schemaVersion"], int)
        self.assertGreaterEqual(store["schemaVersion"], 1)
        if self.serve.pg_db:
            self.assertEqual(store["kind"], "postgresql")
            self.assertIn(self.serve.pg_db, store["location"])
            password = re.search(r"://[^:/@]+:([^@]+)@", self.serve.db_url)
            if password:
                self.assertNotIn(password.group(1), store["location"])
                self.assertIn(":***@", store["location"])
        else:
            self.assertEqual(store["kind"], "sqlite")
            self.assertEqual(store["location"], self.serve.db_path)

        # A deleted app is gone from the list, and its messages from every count.
        self.assertEqual(self.serve.api("DELETE", "/v1/voice-apps/" + dead.id).status, 204)
        st = self.status()
        self.assertNotIn("d-dead", [a["id"] for a in st["apps"]])
        self.assertEqual(st["totals"]["dead"], 0, st["totals"])

    def test_roles_and_query(self):
        self.make_app("x")
        read_key, ingest_key = self.keys("read", "ingest")
        self.assertEqual([a["id"] for a in self.status(key=read_key)["apps"]], ["x"])
        r = self.serve.api("GET", "/v1/status", key=ingest_key)
        self.assertEqual((r.status, r.error_code), (403, "forbidden"), r)
        r = self.serve.api("GET", "/v1/status", key=None)
        self.assertEqual((r.status, r.error_code), (401, "unauthorized"), r)
        for path, name in (("/v1/status?app=x", "app"), ("/v1/status?verbose=1", "verbose")):
            with self.subTest(path=path):
                r = self.serve.api("GET", path)
                self.assertEqual((r.status, r.error_code), (400, "invalid_query"), r)
                self.assertTrue(r.error_message.startswith(name + ":"), r)

    def test_sealed_store_says_so(self):
        key = base64.b64encode(_secrets.token_bytes(32)).decode()
        sealed = Serve(BIN, env={"CALLHOOK_DATA_KEY": key}, name="sealed")
        self.addCleanup(sealed.close)
        sealed.start()
        plain = self.status()["store"]
        r = sealed.api("GET", "/v1/status")
        self.assertEqual(r.status, 200, r)
        store = r.json["store"]
        self.assertIs(store["sealed"], True, store)
        self.assertEqual((store["kind"], store["schemaVersion"]),
                         (plain["kind"], plain["schemaVersion"]), "the inner store's")


class FirstStart(unittest.TestCase):
    """The first admin key's place follows the store, and only the node that made a key says
    where it is (issue 15, points 1 and 6). Runs on SQLite and, in serve_postgres, on
    PostgreSQL; serve's working folder has no var/ in either."""

    def serve(self, extra_args=(), key_env=""):
        s = Serve(BIN, extra_args=list(extra_args), env={"CALLHOOK_ADMIN_KEY": key_env})
        self.addCleanup(s.close)
        return s

    def test_admin_key_file_is_made_with_its_folders_and_named_once(self):
        probe = Serve(BIN)
        self.addCleanup(probe.close)
        key_file = os.path.join(probe.workdir, "keys", "nested", "admin.key")
        s = self.serve(["--admin-key-file", key_file])
        s.start()
        self.assertEqual(os.stat(key_file).st_mode & 0o777, 0o600)
        with open(key_file) as f:
            key = f.read().strip()
        self.assertEqual(s.request("GET", "/v1/voice-apps", key=key).status, 200)
        log = s.logs()
        self.assertIn("the first admin key is in %s" % key_file, log)
        # Not the CLI's default port: the hint says which serve to ask.
        self.assertIn("'callhook app list --url http://127.0.0.1:%d'" % s.port, log)
        self.assertFalse(os.path.exists(os.path.join(s.workdir, "var")), "no var/ made")
        # A second start on the same store makes no key and says nothing of one.
        s.stop()
        s.start()
        self.assertEqual(s.logs().count("the first admin key is in"), 1, s.logs())
        # The schema check at each start prints no server notice ("already exists, skipping").
        self.assertNotIn("NOTICE", s.logs())
        # libmicrohttpd says nothing at a clean start (its messages come as "http: ...").
        self.assertNotIn(" http: ", s.logs())

    def test_no_terminal_and_no_file_is_a_clear_error(self):
        # '-' asks for the key on the terminal; with none, serve refuses and says how to start
        # (on PostgreSQL the same holds without the flag).
        args = ["--admin-key-file", "-"] if not harness.PG_BASE_URI else []
        s = self.serve(args)
        with self.assertRaises(harness.ServeError) as cm:
            s.start()
        text = str(cm.exception)
        self.assertIn("CALLHOOK_ADMIN_KEY", text)
        self.assertIn("--admin-key-file", text)
        self.assertFalse(os.path.exists(os.path.join(s.workdir, "var")), text)

    def test_the_key_from_the_environment_makes_no_file(self):
        key = "adm" + _secrets.token_hex(20)
        s = self.serve(key_env=key)
        s.start()
        self.assertEqual(s.request("GET", "/v1/voice-apps", key=key).status, 200)
        self.assertNotIn("the first admin key is in", s.logs())
        self.assertFalse(os.path.exists(os.path.join(s.workdir, "admin.key")))

    def test_commands_that_read_a_database_never_make_one(self):
        # Point 5: 'key list' outside the project made var/callhook.db and listed nothing.
        s = self.serve()
        for args in (["key", "list"], ["key", "revoke", "key_0123456789ab"], ["purge"],
                     ["key", "list", "--db", "sqlite:" + os.path.join(s.workdir, "x.db")]):
            out = subprocess.run([BIN] + args, capture_output=True, text=True, cwd=s.workdir,
                                 env={"PATH": os.environ.get("PATH", "")}, timeout=30,
                                 stdin=subprocess.DEVNULL)
            self.assertEqual(out.returncode, 1, (args, out))
            self.assertIn("no database at '", out.stderr, args)
            self.assertEqual(os.listdir(s.workdir), [], args)

    def test_client_errors_name_the_serve_they_asked(self):
        s = self.serve(key_env="adm" + _secrets.token_hex(20))
        s.start()
        out = s.run_cli("app", "list", "--url", s.base_url, env={"CALLHOOK_KEY": "x" * 40})
        self.assertEqual(out.returncode, 1, out)
        self.assertIn("from %s" % s.base_url, out.stderr)
        self.assertIn("--url", out.stderr)


# ---------------------------------------------------------------------------------------------
# Runner


class Result(harness.Result):
    """After a failed test: serve's log and the receiver's last requests."""

    def show_failure(self, test):
        serve = getattr(test, "serve", None)
        rx = getattr(test, "rx", None)
        if serve is not None:
            self.stream.writeln("---- serve log of %s ----" % test.id())
            self.stream.writeln(serve.logs(tail_lines=150))
        if rx is not None:
            reqs = rx.requests
            self.stream.writeln("---- receiver: %d requests, last ones ----" % len(reqs))
            for r in reqs[-25:]:
                self.stream.writeln(json.dumps(r.summary()))


def main(argv):
    global BIN, PAYLOADS
    args = harness.suite_args(argv, "test_serve.py")
    if args is None:
        return 2
    BIN, PAYLOADS, filters = args
    # On SIGTERM (a timeout), kill serve and remove the temp dirs before going.
    # (sys.exit here would only fail the current test: unittest catches SystemExit.)
    def on_term(*_):
        harness.cleanup()
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)

    return harness.run_suite((Delivery, Identity, Ordering, Retries, Endpoint, Api, Safety,
                              Status, FirstStart),
                             filters, Result)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
