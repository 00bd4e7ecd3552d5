#!/usr/bin/env bash
# The README's quick start, run as written: serve started as `make run` starts it (in a fresh
# folder, default settings but the port), then the lines between the quickstart markers of
# README.md, unchanged except the ports (free ones instead of 8080 and 9000, so parallel tests
# do not collide). Checks that the first message is delivered and arrives at the receiver, and
# that the one meant to fail is failed with its error.
set -uo pipefail
CALLHOOK=${1:?usage: test_readme.sh PATH_TO_CALLHOOK REPO_ROOT}
ROOT=${2:?usage: test_readme.sh PATH_TO_CALLHOOK REPO_ROOT}
unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY no_proxy NO_PROXY
unset CALLHOOK_URL CALLHOOK_KEY CALLHOOK_DB CALLHOOK_LISTEN CALLHOOK_ADMIN_KEY

tmp=$(mktemp -d)
serve_pid=
cleanup() {
    [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    pkill -f -- "--store $tmp/var/inbox.db" 2>/dev/null
    [ -n "${KEEP:-}" ] && cp "$tmp/out" /tmp/readme.out; rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    echo "---- the quick start's output ----"; cat "$tmp/out" 2>/dev/null
    echo "---- serve ----"; tail -20 "$tmp/serve.log" 2>/dev/null
    echo "---- receive ----"; tail -20 "$tmp/var/receive.log" 2>/dev/null
    exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api=$(free_port)
rx=$(free_port)

# The folder as `make run` leaves it: build/release/callhook, the payloads, no var/ yet.
mkdir -p "$tmp/build/release" "$tmp/tests/data"
ln -s "$(cd "$(dirname "$CALLHOOK")" && pwd)/$(basename "$CALLHOOK")" "$tmp/build/release/callhook"
ln -s "$ROOT/tests/data/payloads" "$tmp/tests/data/payloads"

block=$(sed -n '/<!-- quickstart:begin -->/,/<!-- quickstart:end -->/p' "$ROOT/README.md" |
    sed '1,2d;$d' | sed '$d')
[ -n "$block" ] || fail "no quickstart block in README.md"
grep -q 'callhook send begin --app support' <<<"$block" || fail "the block is not the quick start"
block=${block//127.0.0.1:9000/127.0.0.1:$rx}

cd "$tmp" || exit 1
"$tmp/build/release/callhook" serve --listen "127.0.0.1:$api" >"$tmp/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
    [ -s var/admin.key ] && curl -sf "http://127.0.0.1:$api/healthz" >/dev/null && break
    sleep 0.1
done
[ -s var/admin.key ] || fail "serve wrote no var/admin.key"

CALLHOOK_URL="http://127.0.0.1:$api" bash -c "set -e; $block" >"$tmp/out" 2>&1 ||
    fail "the quick start stopped with status $?"

export CALLHOOK_URL="http://127.0.0.1:$api" CALLHOOK_KEY=$(cat var/admin.key)
ch() { "$tmp/build/release/callhook" "$@"; }
grep -q "delivered" "$tmp/out" || fail "the quick start's first message is not shown delivered"
[ "$(wc -l <var/calls.jsonl)" -eq 1 ] || fail "var/calls.jsonl has not exactly one event"
python3 -c 'import json,sys; e=json.loads(open(sys.argv[1]).readline()); sys.exit(0 if e.get("event") == "begin-call" else 1)' var/calls.jsonl ||
    fail "var/calls.jsonl does not hold the begin-call: $(head -c 300 var/calls.jsonl)"
grep -Eq "failed|pending" "$tmp/out" || fail "the broken app's message is not shown"
for _ in $(seq 50); do
    ch messages --app broken --json | python3 -c 'import json,sys; m=json.load(sys.stdin)["data"][0]; sys.exit(0 if m["status"] == "failed" and m["attemptCount"] >= 1 else 1)' && break
    sleep 0.1
done
ch messages --app broken --json | python3 -c 'import json,sys; m=json.load(sys.stdin)["data"][0]; sys.exit(0 if m["status"] == "failed" else 1)' ||
    fail "the broken app's message is not failed: $(ch messages --app broken --json)"
echo "README quick start: ok"
