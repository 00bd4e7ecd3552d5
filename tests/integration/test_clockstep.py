#!/usr/bin/env python3
"""Clock steps on the nodes of a PostgreSQL cluster: leases and timers must not follow them.

usage: test_clockstep.py CALLHOOK_BINARY PAYLOADS_DIR   (CALLHOOK_TEST_DB_URI set; ctest -L pg)

Two `callhook serve` nodes share one database (--lease-s 5). Each runs under libfaketime
(Debian's faketime package) with its own offset file, which the test rewrites to step that
node's wall clock; the monotonic clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC), as a real
step (settimeofday, an NTP jump) leaves it. Attempts are held by the receiver longer than a
lease, so the node that holds them must keep renewing their leases through the step:
  1. node 0 holds the attempts, and its clock steps back an hour: its renewals must go on
     (timers on the monotonic clock) and still extend the leases (taken on the database's
     clock), so node 1 never takes the messages over;
  2. node 0 holds the attempts, and node 1's clock steps forward an hour: node 1 must not see
     node 0's leases as run out.
Every message is delivered exactly once, after one attempt. The last line is `N passed, M
failed`.
"""

import json
import os
import secrets as _secrets
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import Serve, scaled, wait_until  # noqa: E402
from receiver import Receiver, Response  # noqa: E402
from test_multinode import drop_database, make_database  # noqa: E402

FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
                 "/usr/lib/faketime/libfaketimeMT.so.1")
LEASE_S = 5
HOLD_S = 9  # the receiver answers after this: almost two leases
EVENTS = 6


class Checks:
    def __init__(self):
        self.passed, self.failed = 0, []

    def check(self, what, ok, detail=""):
        if ok:
            self.passed += 1
            print("ok   %s" % what)
        else:
            self.failed.append(what)
            print("FAIL %s %s" % (what, str(detail)[:2000]))


class ClockStep:

    def __init__(self, binary, db_uri, faketime):
        self.binary = binary
        self.base_uri = db_uri
        self.faketime = faketime
        self.c = Checks()
        self.tmp = tempfile.mkdtemp(prefix="callhook-clock-")
        harness._workdirs.append(self.tmp)  # removed with the nodes' folders
        self.admin_key = "adm" + _secrets.token_hex(20)
        self.nodes = []
        self.offsets = []
        self.rx = None
        self.db_name = None

    def step(self, node, offset):
        """Sets node's wall clock to real time + offset (seconds), from its next reading."""
        with open(self.offsets[node] + ".tmp", "w") as f:
            f.write("%+ds\n" % offset)
        os.replace(self.offsets[node] + ".tmp", self.offsets[node])

    def start(self):
        self.db_uri, self.db_name = make_database(self.base_uri)
        for i in range(2):
            path = os.path.join(self.tmp, "offset%d" % i)
            self.offsets.append(path)
            self.step(i, 0)
            env = {"LD_PRELOAD": self.faketime, "FAKETIME_TIMESTAMP_FILE": path,
                   "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                   # libfaketime comes before ASan's runtime in the sanitizer build.
                   "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
                   ":verify_asan_link_order=0"}
            s = Serve(self.binary, admin_key=self.admin_key, env=env, name="node%d" % i,
                      extra_args=["--lease-s", str(LEASE_S), "--scan-interval-ms", "200"])
            s.db_url = self.db_uri
            self.nodes.append(s)
            s.start()
        self.rx = Receiver().start()

    def app(self, tag):
        app_id = "clk-%s-%s" % (tag, _secrets.token_hex(3))
        r = self.nodes[0].api("PUT", "/v1/voice-apps/" + app_id, {
            "BeginCallEventProcessingUrl": self.rx.url("/%s/begin-call" % app_id),
            "allowInsecureHttp": True, "allowPrivateNetwork": True,
            "retryScheduleSeconds": [1], "timeoutMs": (HOLD_S + 10) * 1000,
            "maxInFlight": EVENTS})
        if r.status != 201:
            raise RuntimeError("PUT %s: %r" % (app_id, r))
        self.rx.set_default(Response.ok(delay_s=HOLD_S), path="/%s/begin-call" % app_id)
        return app_id

    def held_through_a_step(self, what, node, offset):
        """EVENTS events ingested on node 0 (so node 0 holds them), node's clock stepped by
        offset while their attempts are held past a lease."""
        app_id = self.app(what.split()[0])
        mids = []
        for i in range(EVENTS):
            body = json.dumps({"ActiveCallId": "%s-%d" % (app_id, i), "CallType": 1}).encode()
            r = self.nodes[0].ingest(app_id, "begin-call", body)
            if r.status != 202:
                raise RuntimeError("ingest on node0: %r" % r)
            mids.append(r.json["messageId"])
        wait_until(lambda: len(self.rx.requests_for(path="/%s/begin-call" % app_id)) >= EVENTS,
                   scaled(10), what="the first attempts")
        self.step(node, offset)
        try:
            deadline = time.monotonic() + scaled(HOLD_S + 3 * LEASE_S + 10)

            def settled():
                views = [self.nodes[0].api("GET", "/v1/messages/" + m).json or {} for m in mids]
                return views if all(v.get("status") == "delivered" for v in views) else None

            views = wait_until(settled, deadline - time.monotonic(), 0.5,
                               what="every message delivered")
            # A takeover would show as a second request with the same webhook-id (it may
            # arrive a lease after the first).
            time.sleep(scaled(LEASE_S))
            reqs = self.rx.requests_for(path="/%s/begin-call" % app_id)
            ids = [r.webhook_id for r in reqs]
            dup = sorted({i for i in ids if ids.count(i) > 1})
            self.c.check("%s: each message delivered once (no takeover by the other node)" % what,
                         not dup and sorted(ids) == sorted(mids),
                         "duplicates %s; %d requests for %d messages" % (dup, len(ids), len(mids)))
            attempts = [v.get("attemptCount") for v in views]
            self.c.check("%s: one attempt each" % what, attempts == [1] * EVENTS, attempts)
        finally:
            self.step(node, 0)

    def run(self):
        t0 = time.monotonic()
        try:
            self.start()
            for what, node, offset in (("back node 0 steps back an hour", 0, -3600),
                                       ("fwd node 1 steps forward an hour", 1, 3600)):
                try:
                    self.held_through_a_step(what, node, offset)
                except Exception as e:  # noqa: BLE001 - report and go on
                    self.c.check("%s: ran to the end" % what, False, e)
        finally:
            self.finish()
            print("(%.0fs)" % (time.monotonic() - t0))

    def finish(self):
        problems = []
        for s in self.nodes:
            s.close()
            problems += ["%s: %s" % (s.name, line) for line in s.sanitizer_reports()]
            if any(c != 0 for c in s.exits):
                problems.append("%s exited with %s" % (s.name, s.exits))
        self.c.check("nodes stop cleanly, no sanitizer report", not problems, problems[:10])
        if self.c.failed:
            for s in self.nodes:
                print("---- log of %s ----" % s.name)
                print(s.logs(tail_lines=40))
        if self.rx is not None:
            self.rx.stop()
        if self.db_name:
            drop_database(self.base_uri, self.db_name)


def main(argv):
    if len(argv) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    db_uri = os.environ.get("CALLHOOK_TEST_DB_URI", "").strip()
    faketime = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
    if not db_uri or faketime is None:
        print("test_clockstep.py: needs CALLHOOK_TEST_DB_URI (ctest -L pg) and libfaketime "
              "(the faketime package; make deps installs it)", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    test = ClockStep(argv[1], db_uri, faketime)
    test.run()
    if test.c.failed:
        print("failed: %s" % "; ".join(test.c.failed))
    print("%d passed, %d failed" % (test.c.passed, len(test.c.failed)))
    return 1 if test.c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
