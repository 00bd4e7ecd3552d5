#!/usr/bin/env python3
"""The demo's receiving end: answers 200, checks each delivery's Standard Webhooks signature
with the Voice App's secret, and prints one line per event so the calls can be seen flowing."""
import base64, hashlib, hmac, http.server, json, sys, time

port, secret = int(sys.argv[1]), sys.argv[2]
key = base64.b64decode(secret.removeprefix("whsec_") + "==="[: -len(secret) % 4 or 0])
seen = set()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        msg_id, ts = self.headers.get("webhook-id", ""), self.headers.get("webhook-timestamp", "")
        mac = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        ok = any(s == f"v1,{mac}" for s in self.headers.get("webhook-signature", "").split())
        self.send_response(200 if ok else 401)
        self.end_headers()
        rec = json.loads(body) if ok else {}
        dup = " (duplicate)" if msg_id in seen else ""
        seen.add(msg_id)
        call = rec.get("ActiveCallId") or rec.get("activeCallId") or "?"
        print(f"{time.strftime('%H:%M:%S')} {self.headers.get('x-call-event', '?'):10} call {call[:8]}"
              f" CallType {rec.get('CallType', rec.get('callType'))!s:4} signature {'ok' if ok else 'BAD'}{dup}",
              flush=True)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
