#!/usr/bin/env python3
"""A long-lived handler for `callhook receive --pipe 'python3 pipe_handler.py'`.

The receiver starts this program once and writes each call event to its stdin as one line of
JSON:

    {"id": "msg_...", "event": "begin-call" | "end-call", "activeCallId": "..." | null,
     "correlationId": "..." | null, "callType": 2 | null, "callTypeName": "MissedCall" | null,
     "receivedAt": 1795770843, "attempt": 1, "body": {...the call record as received...}}

For every line it answers one line on stdout, in any order, as soon as the event is handled:

    {"id": "msg_...", "ok": true}
    {"id": "msg_...", "ok": false, "retryAfterS": 30, "error": "why"}   # retried later

Many events are in flight at once (the receiver's --pipe-window): this example handles them on a
few threads and answers each as it finishes, out of order. An event is handled at least once:
after a crash of this program or of the receiver, the events it had not answered are sent
again, so make handle() idempotent (key on event["id"]). For each call's end-call to come
only after its begin-call was answered ok, run the receiver with --ordered (other calls' events
still come concurrently). stdout carries answers only: log to stderr (the receiver logs it). When
stdin ends, the receiver is stopping: finish and exit.

Copy it, and put your code in handle(). Standard library only.
"""
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

WORKERS = 8

_answer_lock = threading.Lock()


class RetryLater(Exception):
    """Raise from handle() to have the event sent again in `seconds`, not before."""

    def __init__(self, seconds, why=""):
        super().__init__(why or f"retry in {seconds} s")
        self.seconds = seconds


def handle(event):
    """Your code. Return to acknowledge the event; raise to have it retried."""
    record = event["body"]
    if event["event"] == "end-call" and event["callTypeName"] == "MissedCall":
        # Personal data (numbers, names) stays out of logs: ids only.
        print(f"missed call {event['activeCallId']} on {record.get('VoiceAppName')}",
              file=sys.stderr, flush=True)


def answer(reply):
    line = json.dumps(reply, separators=(",", ":")) + "\n"
    with _answer_lock:  # one whole line at a time, flushed at once: the receiver is waiting
        sys.stdout.write(line)
        sys.stdout.flush()


def run(event):
    try:
        handle(event)
        answer({"id": event["id"], "ok": True})
    except RetryLater as e:
        answer({"id": event["id"], "ok": False, "retryAfterS": e.seconds, "error": str(e)})
    except Exception as e:  # anything else: retried with the receiver's backoff
        answer({"id": event["id"], "ok": False, "error": f"{type(e).__name__}: {e}"})


def main():
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError as e:
                print(f"not an event line: {e}", file=sys.stderr, flush=True)
                continue
            pool.submit(run, event)
    # The pool waited for what was in flight: every event read has been answered.


if __name__ == "__main__":
    main()
