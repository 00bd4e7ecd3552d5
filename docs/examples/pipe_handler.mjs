#!/usr/bin/env node
// A long-lived handler for `callhook receive --pipe 'node pipe_handler.mjs'`.
//
// The receiver starts this program once and writes each call event to its stdin as one line of
// JSON:
//
//   {"id": "msg_...", "event": "begin-call" | "end-call", "activeCallId": "..." | null,
//    "correlationId": "..." | null, "callType": 2 | null, "callTypeName": "MissedCall" | null,
//    "receivedAt": 1795770843, "attempt": 1, "body": {...the call record as received...}}
//
// For every line it answers one line on stdout, in any order, as soon as the event is handled:
//
//   {"id": "msg_...", "ok": true}
//   {"id": "msg_...", "ok": false, "retryAfterS": 30, "error": "why"}   // retried later
//
// Many events are in flight at once (the receiver's --pipe-window): each is handled as its own
// promise and answered when it settles, out of order. An event is handled at least once: after
// a crash of this program or of the receiver, the events it had not answered are sent again, so
// make handle() idempotent (key on event.id). For each call's end-call to come only after its
// begin-call was answered ok, run the receiver with --ordered. stdout carries answers only: log
// to stderr (the receiver logs it). When stdin ends, the receiver is stopping: Node exits once
// the events in flight are answered.
//
// Copy it, and put your code in handle(). Node 18 or later, standard library only.
import { createInterface } from 'node:readline';

export class RetryLater extends Error {
  // Throw from handle() to have the event sent again in `seconds`, not before.
  constructor(seconds, why = '') {
    super(why || `retry in ${seconds} s`);
    this.seconds = seconds;
  }
}

// Your code: resolve to acknowledge the event; throw (or reject) to have it retried.
async function handle(event) {
  const record = event.body;
  if (event.event === 'end-call' && event.callTypeName === 'MissedCall') {
    // Personal data (numbers, names) stays out of logs: ids only.
    console.error(`missed call ${event.activeCallId} on ${record.VoiceAppName}`);
  }
}

// One whole line per write. Node hands it to the pipe at once when the pipe has room, and queues
// what a full pipe cannot take until the receiver reads it: there is no buffer to flush. (Do not
// end with process.exit() while answers may still be queued: let Node exit by itself.)
function answer(reply) {
  process.stdout.write(JSON.stringify(reply) + '\n');
}

async function run(event) {
  try {
    await handle(event);
    answer({ id: event.id, ok: true });
  } catch (err) {
    if (err instanceof RetryLater) {
      answer({ id: event.id, ok: false, retryAfterS: err.seconds, error: err.message });
    } else {
      answer({ id: event.id, ok: false, error: String(err && err.message ? err.message : err) });
    }
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  if (!line.trim()) return;
  let event;
  try {
    event = JSON.parse(line);
  } catch (err) {
    console.error(`not an event line: ${err.message}`);
    return;
  }
  run(event); // not awaited: the next line is read while this one is handled
});
