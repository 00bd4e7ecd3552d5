#!/usr/bin/env python3
"""A backlog leaves in the order it was ingested: one `callhook serve`, on the store that
CALLHOOK_TEST_DB_URI names (PostgreSQL; SQLite without it), and one receiver on 127.0.0.1.

usage: test_backlog_order.py CALLHOOK_BINARY PAYLOADS_DIR [NAME_FILTER...]

Voice Apps with maxInFlight 1 are disabled while BACKLOG events are ingested, each app's one
after another (so its ingest order is the store's order); then they are enabled, and the whole
backlog is released at once. The first attempts of every app's events must reach the receiver
in ingest order: claims come back
from the store in the order the events were stored, on every store (a PostgreSQL
`UPDATE ... RETURNING` returns rows in whatever order it met them, so the store must sort).
CALLHOOK_BACKLOG sets the number of events (default 5000). The last line is `N passed, M
failed`.
"""

import json
import os
import secrets as _secrets
import signal
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import Serve, scaled, wait_until  # noqa: E402
from receiver import Receiver  # noqa: E402

BIN = None
BACKLOG = int(os.environ.get("CALLHOOK_BACKLOG") or 5000)
INGEST_THREADS = 4
APPS = 8  # two per ingest thread


class BacklogOrder(unittest.TestCase):

    def setUp(self):
        self.rx = Receiver().start()
        self.addCleanup(self.rx.stop)
        self.serve = Serve(BIN)
        self.addCleanup(self._close_serve)
        self.serve.start()

    def _close_serve(self):
        self.serve.close()
        problems = self.serve.sanitizer_reports()
        if [c for c in self.serve.exits if c != 0]:
            problems.append("serve exited with status %s" % self.serve.exits)
        if problems:
            self.fail("\n".join(problems[:20]))

    def put_app(self, app_id, enabled):
        body = {
            "BeginCallEventProcessingUrl": self.rx.url("/%s/begin-call" % app_id),
            "EndCallEventProcessingUrl": self.rx.url("/%s/end-call" % app_id),
            "allowInsecureHttp": True,  # the receiver is http://127.0.0.1
            "allowPrivateNetwork": True,
            "maxInFlight": 1,
            "ordering": "none",
            "timeoutMs": 5000,
            "enabled": enabled,
        }
        r = self.serve.api("PUT", "/v1/voice-apps/" + app_id, body)
        self.assertIn(r.status, (200, 201), "PUT /v1/voice-apps/%s: %r" % (app_id, r))

    def test_backlog_first_attempts_in_ingest_order(self):
        apps = ["backlog-%d-%s" % (k, _secrets.token_hex(3)) for k in range(APPS)]
        for app in apps:
            self.put_app(app, enabled=False)
        # Each app is fed by one thread, one event after another, so the order of the answers
        # is the order of its rows. (Several apps with maxInFlight 1 drain the backlog faster
        # than one; each app's queue is ordered on its own.)
        order = {app: [] for app in apps}
        errors = []

        def ingest(t):
            mine = apps[t::INGEST_THREADS]
            for i in range(t, BACKLOG, INGEST_THREADS):
                app = mine[(i // INGEST_THREADS) % len(mine)]
                body = json.dumps({"ActiveCallId": "bl-%05d" % i, "CallType": 4}).encode()
                r = self.serve.ingest(app, "begin-call", body)
                if r.status != 202:
                    errors.append("event %d: %r" % (i, r))
                    return
                order[app].append(r.json["messageId"])

        t0 = time.monotonic()
        threads = [threading.Thread(target=ingest, args=(t,)) for t in range(INGEST_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(scaled(600))
        self.assertEqual(errors, [])
        self.assertEqual(sum(len(ids) for ids in order.values()), BACKLOG)
        self.assertEqual(self.rx.requests, [], "nothing is sent while the apps are disabled")
        print("\n  %d events ingested in %.0fs" % (BACKLOG, time.monotonic() - t0),
              file=sys.stderr)

        t0 = time.monotonic()
        for app in apps:
            self.put_app(app, enabled=True)  # the whole backlog is due at once
        wait_until(lambda: len({r.webhook_id for r in self.rx.requests}) >= BACKLOG,
                   scaled(600), 0.5, what=lambda: "%d of %d events attempted" % (
                       len({r.webhook_id for r in self.rx.requests}), BACKLOG))
        print("  and attempted in %.0fs" % (time.monotonic() - t0), file=sys.stderr)

        first = {}
        for r in self.rx.requests:
            first.setdefault(r.webhook_id, r.seq)
        for app, ids in order.items():
            arrivals = [first[m] for m in ids]
            late = [(ids[k], ids[k + 1]) for k in range(len(ids) - 1)
                    if arrivals[k + 1] < arrivals[k]]
            self.assertFalse(late, "%s: %d events attempted before one ingested earlier, "
                             "e.g. %s" % (app, len(late), late[:5]))


class Result(harness.Result):
    """After a failed test: serve's log."""

    def show_failure(self, test):
        serve = getattr(test, "serve", None)
        if serve is not None:
            self.stream.writeln("---- serve log of %s ----" % test.id())
            self.stream.writeln(serve.logs(tail_lines=100))


def main(argv):
    global BIN
    args = harness.suite_args(argv, "test_backlog_order.py")
    if args is None:
        return 2
    BIN, _, filters = args

    def on_term(*_):
        harness.cleanup()
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    return harness.run_suite((BacklogOrder,), filters, Result)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
