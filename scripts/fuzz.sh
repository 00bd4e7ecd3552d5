#!/usr/bin/env bash
# Runs each libFuzzer target of a `make fuzz` build for SECONDS on a scratch copy of its corpus
# in git, so new inputs never land in the repository. Fails if any target finds a crash, a leak,
# a timeout or a broken invariant; the input that did it is kept in BUILD_DIR/fuzz-artifacts/,
# one directory per run.
set -euo pipefail

usage() {
    echo "usage: scripts/fuzz.sh BUILD_DIR SECONDS" >&2
    echo "BUILD_DIR is configured with CC=clang -DCALLHOOK_FUZZ=ON (make fuzz does it)." >&2
    exit 2
}
[ $# -eq 2 ] || usage
build_dir=$1
seconds=$2
case $seconds in '' | *[!0-9]* | 0) usage ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)

# Each target with the longest input worth trying: records (and the one-pass JSON check, compared
# with jansson) past jansson's nesting limit (2048),
# signature headers past CH_SIGNATURE_HEADER_MAX (8192),
# Voice App settings past a full one (16 headers of 1 KiB, two 2 KiB URLs),
# request headers and a body past the signature header's limit.
targets=(record:16384 sigheader:10240 jsonscan:16384 app:32768 reqheaders:16384)

work=$(mktemp -d "${TMPDIR:-/tmp}/callhook-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts=$build_dir/fuzz-artifacts/$(date +%Y%m%d-%H%M%S)
mkdir -p "$artifacts"

failed=()
for entry in "${targets[@]}"; do
    name=${entry%%:*}
    max_len=${entry#*:}
    bin=$build_dir/tests/fuzz/fuzz_$name
    if [ ! -x "$bin" ]; then
        echo "fuzz.sh: no $bin: configure $build_dir with CC=clang -DCALLHOOK_FUZZ=ON and build it" >&2
        exit 1
    fi
    corpus=$work/$name
    mkdir -p "$corpus" "$artifacts/$name"
    cp "$root/tests/fuzz/corpus/$name/"* "$corpus/"
    log=$artifacts/$name.log

    echo "fuzz.sh: $name for ${seconds}s (log: $log)"
    status=0
    "$bin" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -use_value_profile=1 -dict="$root/tests/fuzz/$name.dict" -print_final_stats=1 \
        -artifact_prefix="$artifacts/$name/" "$corpus" >"$log" 2>&1 || status=$?
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
        "$log" | sed 's/^/    /' || true
    if [ "$status" -ne 0 ]; then
        failed+=("$name")
        echo "fuzz.sh: $name FAILED (exit $status); the end of its log:" >&2
        tail -n 40 "$log" >&2
        find "$artifacts/$name" -type f | while read -r input; do
            echo "fuzz.sh: reproduce with: $bin $input" >&2
        done
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: no failure in ${#targets[@]} targets"
