#!/usr/bin/env bash
# make demo: callhook serve, a local receiver and `callhook simulate` together, on 127.0.0.1,
# in a throwaway folder. Shows each delivery as it arrives, then the message log.
set -euo pipefail
BIN=${1:-build/release/callhook}
CALLS=${CALLS:-20}
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api=$(free_port)
sink=$(free_port)
export CALLHOOK_KEY="chk_demo_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export CALLHOOK_URL="http://127.0.0.1:$api"

CALLHOOK_ADMIN_KEY=$CALLHOOK_KEY "$BIN" serve --listen "127.0.0.1:$api" --db "sqlite:$dir/callhook.db" \
    2>"$dir/serve.log" &
pids+=($!)
for _ in $(seq 50); do curl -sf "$CALLHOOK_URL/healthz" >/dev/null && break; sleep 0.1; done

"$BIN" app put demo --begin-url "http://127.0.0.1:$sink/calls/begin" \
    --end-url "http://127.0.0.1:$sink/calls/end" --allow-http --allow-private >/dev/null
secret=$("$BIN" app secret demo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
python3 "$(dirname "$0")/demo-receiver.py" "$sink" "$secret" &
pids+=($!)
sleep 0.3

echo "== $CALLS calls through callhook serve ($CALLHOOK_URL) to a receiver on 127.0.0.1:$sink"
"$BIN" simulate --app demo --calls "$CALLS" --rate 10 --min-duration-ms 300 --max-duration-ms 2000
sleep 2
echo
echo "== the message log (callhook messages --app demo)"
"$BIN" messages --app demo --limit 10
