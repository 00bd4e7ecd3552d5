#!/usr/bin/env bash
# docs/examples/verify_and_dedupe.c: a signed record is stored (202), the same again is a
# duplicate (200), a tampered one is refused (401).
set -uo pipefail
EX=$1 CALLHOOK=$2 PAYLOADS=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
secret=$("$CALLHOOK" secret new)
ts=$(date +%s)
body="$PAYLOADS/end-call-missed.json"
sig=$("$CALLHOOK" sign --secret "$secret" --id msg_a --timestamp "$ts" "$body")
failed=0
expect() { # expect WANT OUTPUT
    if [[ "$2" != "$1"* ]]; then echo "FAIL: want '$1', got '$2'"; failed=$((failed + 1)); fi
}
expect "202 stored (CallType MissedCall)" "$("$EX" "$dir/inbox.db" "$secret" msg_a "$ts" "$sig" end-call <"$body")"
expect "200 duplicate" "$("$EX" "$dir/inbox.db" "$secret" msg_a "$ts" "$sig" end-call <"$body")"
expect "401 no signature" "$(sed "s/QueueTimeout/QueueTimeouT/" "$body" | "$EX" "$dir/inbox.db" "$secret" msg_a "$ts" "$sig" end-call)"
echo "$((3 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
