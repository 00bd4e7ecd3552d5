#!/usr/bin/env bash
# docs/examples/verify_and_dedupe.c: a signed record is stored (202), the same again is a
# duplicate (200), a tampered one is refused (401). Checked twice: on the build's own target
# (EX, with this build's sanitizers), and on the program that the command of docs/SIGNATURES.md
# builds, run as written (not retyped here) from a copy of the tree's layout, after the library
# is built as `make build` builds it (build/release, RelWithDebInfo, no sanitizers).
#
# usage: test_example.sh EX CALLHOOK PAYLOADS SOURCE_DIR CMAKE
set -uo pipefail
EX=$1 CALLHOOK=$2 PAYLOADS=$3 SRC=$4 CMAKE=$5
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
failed=0 passed=0
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

# The command, as the page shows it: the fenced block after the build-example marker.
doc="$SRC/docs/SIGNATURES.md"
command=$(awk '/<!-- build-example:/ { marked = 1; next }
               marked && /^```sh$/ { inside = 1; next }
               inside && /^```$/ { exit }
               inside { print }' "$doc")
if [ -z "$command" ]; then
    fail "no build-example block in $doc"
    echo "0 passed, $failed failed"
    exit 1
fi
echo "the documented command:"
echo "$command"

# The tree as `make build` leaves it: include/ and docs/ from the source, build/release with
# the library built by the make target's own cmake lines (the library alone, for time).
tree="$dir/tree"
mkdir -p "$tree/build"
ln -s "$SRC/include" "$tree/include"
ln -s "$SRC/docs" "$tree/docs"
release_line=$(grep -E '^\s+cmake -S \. -B \$\(RELEASE_DIR\)' "$SRC/Makefile")
case "$release_line" in
*"-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALLHOOK_TESTS=OFF"*) ;;
*) fail "make build's cmake line is not what this test mirrors: '$release_line'" ;;
esac
if ! "$CMAKE" -S "$SRC" -B "$tree/build/release" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCALLHOOK_TESTS=OFF >"$dir/cmake.log" 2>&1 ||
    ! "$CMAKE" --build "$tree/build/release" --target libcallhook >>"$dir/cmake.log" 2>&1; then
    cat "$dir/cmake.log"
    fail "cannot build libcallhook.a as make build does"
fi
if (cd "$tree" && bash -euc "$command") >"$dir/cc.log" 2>&1; then
    passed=$((passed + 1))
else
    cat "$dir/cc.log"
    fail "the documented command does not build the example"
fi
documented="$tree/verify_and_dedupe"

secret=$("$CALLHOOK" secret new)
ts=$(date +%s)
body="$PAYLOADS/end-call-missed.json"
sig=$("$CALLHOOK" sign --secret "$secret" --id msg_a --timestamp "$ts" "$body")
expect() { # expect WANT OUTPUT
    if [[ "$2" != "$1"* ]]; then fail "want '$1', got '$2'"; else passed=$((passed + 1)); fi
}
for ex in "$EX" "$documented"; do
    [ -x "$ex" ] || { fail "no program at $ex"; continue; }
    inbox="$dir/inbox-$(basename "$(dirname "$ex")").db"
    expect "202 stored (CallType MissedCall)" "$("$ex" "$inbox" "$secret" msg_a "$ts" "$sig" end-call <"$body")"
    expect "200 duplicate" "$("$ex" "$inbox" "$secret" msg_a "$ts" "$sig" end-call <"$body")"
    expect "401 no signature" "$(sed "s/QueueTimeout/QueueTimeouT/" "$body" | "$ex" "$inbox" "$secret" msg_a "$ts" "$sig" end-call)"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
