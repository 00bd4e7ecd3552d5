#!/usr/bin/env bash
# The callhook binary as a user runs it: sign/verify reproduce the published vectors, exit codes
# say what happened, every command has help, bad input gets a clear message.
set -uo pipefail
CALLHOOK=${1:?usage: test_cli.sh PATH_TO_CALLHOOK PAYLOADS_DIR}
PAYLOADS=${2:?usage: test_cli.sh PATH_TO_CALLHOOK PAYLOADS_DIR}
passed=0
failed=0

check() { # check NAME EXPECTED_STATUS EXPECTED_OUTPUT_SUBSTRING -- command...
    local name=$1 want_status=$2 want_out=$3
    shift 4
    local out status
    out=$("$@" 2>&1)
    status=$?
    if [ "$status" -ne "$want_status" ] || [[ "$out" != *"$want_out"* ]]; then
        echo "FAIL: $name: status $status (want $want_status), output: $out"
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
}

SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
EDKEY=whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg==
ID=msg_p5jXN8AQM9LWM0D4loKWxJek
TS=1614265330
V1='v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
V1A='v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg=='
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '{"test": 2432232314}' >"$tmp/body"

sign() { "$CALLHOOK" sign "$@"; }
verify() { "$CALLHOOK" verify "$@"; }

check "sign v1 vector (file)" 0 "$V1" -- sign --secret $SECRET --id $ID --timestamp $TS "$tmp/body"
check "sign v1 vector (stdin)" 0 "$V1" -- sh -c "'$CALLHOOK' sign --secret $SECRET --id $ID --timestamp $TS < '$tmp/body'"
check "sign v1a vector" 0 "$V1A" -- sign --secret $EDKEY --id $ID --timestamp $TS "$tmp/body"
check "sign with both" 0 "$V1 $V1A" -- sign --secret $SECRET --secret $EDKEY --id $ID --timestamp $TS "$tmp/body"
check "sign from env" 0 "$V1" -- env CALLHOOK_SECRET=$SECRET "$CALLHOOK" sign --id $ID --timestamp $TS "$tmp/body"
check "verify v1" 0 "ok" -- verify --secret $SECRET --id $ID --timestamp $TS --signature "$V1" --now $TS "$tmp/body"
check "verify v1a" 0 "ok" -- verify --public-key "$("$CALLHOOK" secret public $EDKEY)" --id $ID --timestamp $TS --signature "$V1A" --now $TS "$tmp/body"
check "verify +299" 0 "ok" -- verify --secret $SECRET --id $ID --timestamp $TS --signature "$V1" --now $((TS + 299)) "$tmp/body"
check "verify +301" 1 "too old" -- verify --secret $SECRET --id $ID --timestamp $TS --signature "$V1" --now $((TS + 301)) "$tmp/body"
check "verify -301" 1 "too new" -- verify --secret $SECRET --id $ID --timestamp $TS --signature "$V1" --now $((TS - 301)) "$tmp/body"
check "verify real clock" 1 "too old" -- verify --secret $SECRET --id $ID --timestamp $TS --signature "$V1" "$tmp/body"
check "verify tampered" 1 "no matching signature" -- verify --secret $SECRET --id $ID --timestamp $TS --signature "${V1/g0h/g0i}" --now $TS "$tmp/body"
check "verify missing signature" 1 "missing webhook-signature" -- verify --secret $SECRET --id $ID --timestamp $TS --now $TS "$tmp/body"
check "verify bad timestamp" 1 "invalid timestamp" -- verify --secret $SECRET --id $ID --timestamp 0$TS --signature "$V1" --now $TS "$tmp/body"
check "verify rotated" 0 "ok" -- verify --secret "$("$CALLHOOK" secret new)" --secret $SECRET --id $ID --timestamp $TS --signature "$V1" --now $TS "$tmp/body"
check "bad secret" 2 "not valid base64" -- sign --secret 'whsec_!!' --id $ID --timestamp $TS "$tmp/body"
check "no secret" 2 "--secret is required" -- env -u CALLHOOK_SECRET "$CALLHOOK" sign --id $ID "$tmp/body"
check "no id" 2 "--id is required" -- sign --secret $SECRET "$tmp/body"
check "missing file" 1 "cannot open" -- sign --secret $SECRET --id $ID "$tmp/nope"
check "bad timestamp option" 2 "whole number" -- sign --secret $SECRET --id $ID --timestamp soon "$tmp/body"

# Round trip over a body with every byte value, NUL included: byte-exact.
head -c 4096 /dev/urandom >"$tmp/random"
sig=$(sign --secret $SECRET --id $ID --timestamp $TS "$tmp/random")
check "binary round trip" 0 "ok" -- verify --secret $SECRET --id $ID --timestamp $TS --signature "$sig" --now $TS "$tmp/random"
printf 'x' >>"$tmp/random"
check "binary one byte more" 1 "no matching" -- verify --secret $SECRET --id $ID --timestamp $TS --signature "$sig" --now $TS "$tmp/random"

# Secrets.
new=$("$CALLHOOK" secret new --bytes 24)
check "secret new shape" 0 "" -- sh -c "echo '$new' | grep -Eq '^whsec_[A-Za-z0-9+/]{32}$'"
check "secret bytes range" 2 "24 to 64" -- "$CALLHOOK" secret new --bytes 8
check "secret ed25519" 0 "whpk_" -- "$CALLHOOK" secret new --ed25519

# Records.
for f in "$PAYLOADS"/*.json; do
    check "inspect $(basename "$f")" 0 "dedupe key:" -- "$CALLHOOK" inspect "$f"
done
check "inspect unknown CallType" 0 "unknown (42)" -- "$CALLHOOK" inspect "$PAYLOADS/end-call-future-fields.json"
printf '{\n "a": ,\n}' >"$tmp/bad.json"
check "inspect invalid" 1 "line 2" -- "$CALLHOOK" inspect "$tmp/bad.json"
printf '[1]' >"$tmp/array.json"
check "inspect array" 1 "not an object" -- "$CALLHOOK" inspect "$tmp/array.json"
check "inspect too big" 1 "limit" -- "$CALLHOOK" inspect --max-bytes 100 "$PAYLOADS/begin-call.json"
check "msgid" 0 "msg_FfNCag812YSOMIBS9XgbzMQCLGW" -- "$CALLHOOK" msgid --app app-1 --event begin-call --key 291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10
check "msgid bad event" 2 "begin-call (or begin) or end-call (or end)" -- "$CALLHOOK" msgid --app a --event start --key k
# One spelling of events everywhere: the short forms name the same event.
check "msgid short event" 0 "msg_FfNCag812YSOMIBS9XgbzMQCLGW" -- "$CALLHOOK" msgid --app app-1 --event begin --key 291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10

# Help: the overview lists every command, and each command explains itself.
check "help" 0 "commands:" -- "$CALLHOOK" --help
check "version" 0 "callhook " -- "$CALLHOOK" --version
check "no command" 2 "usage:" -- "$CALLHOOK"
check "unknown command" 2 "is not a command" -- "$CALLHOOK" frobnicate
for cmd in $("$CALLHOOK" --help | awk '/^commands:/{on=1; next} on && !NF {exit} on {print $1}'); do
    check "$cmd --help" 0 "usage: callhook $cmd" -- "$CALLHOOK" "$cmd" --help
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
