#!/usr/bin/env bash
# bench/ab-receive.sh BIN... : callhook receive --jsonl of each build under the same short wrk
# load (64 connections, 5 s, requests pre-signed by ch-bench-sign), one after the other, ROUNDS
# times (default 2), printing acknowledged requests per run. For A/B runs of two commits' Release
# builds on a quiet machine: noise between runs is ±15%, so alternate and compare several.
# Needs a built bench tree (build/bench: bench/run builds it) and wrk; 127.0.0.1 only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sign="$here/../build/bench/ch-bench-sign"
[ -x "$sign" ] || { echo "ab-receive: $sign is missing: run bench/run once" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: bench/ab-receive.sh BIN [BIN...]" >&2; exit 2; }
port=18870
for round in $(seq "${ROUNDS:-2}"); do
    for bin in "$@"; do
        d=$(mktemp -d)
        secret="whsec_$(head -c 32 /dev/urandom | base64)"
        "$bin" receive --insecure-http --listen "127.0.0.1:$port" --secret "$secret" \
            --store "$d/inbox.db" --jsonl "$d/out.jsonl" >"$d/log" 2>&1 &
        pid=$!
        sleep 1
        "$sign" --secret "$secret" --count 200000 --out "$d/req.txt"
        line=$(wrk -t2 -c64 -d5s --timeout 10s -s "$here/receiver.lua" "http://127.0.0.1:$port/" \
            -- "$d/req.txt" 2 | sed -n 's/^BENCH //p')
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        rm -rf "$d"
        echo "round $round $bin: $line"
        port=$((port + 1))
    done
done
