#!/bin/sh
# libcallhook exports its public API and nothing else: every global symbol libcallhook.a
# defines and every dynamic symbol libcallhook.so defines starts with ch_ or CH_, and every
# function include/callhook/*.h names is among them.
#
#   check_symbols.sh NM libcallhook.a libcallhook.so INCLUDE_DIR
set -eu
nm=$1 archive=$2 shared=$3 include=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

# The functions the public headers name (declarations, and references in their comments).
grep -ho '\bch_[a-z0-9_]*(' "$include"/callhook/*.h | tr -d '(' | sort -u >"$tmp/api"
if [ ! -s "$tmp/api" ]; then
    echo "no ch_ function found in $include/callhook/*.h" >&2
    exit 1
fi

# check WHAT FILE: FILE lists the symbols WHAT defines, one a line.
check() {
    bad=0
    if [ ! -s "$2" ]; then
        echo "$1: no symbol at all" >&2
        status=1
        return
    fi
    # In a coverage build (make fuzz) the linker adds the bounds of libFuzzer's sections.
    if grep -v -E '^(ch_|CH_|__(start|stop)___sancov_[a-z]+$)' "$2" >"$tmp/stray"; then
        echo "$1 exports symbols outside the ch_/CH_ namespace:" >&2
        sed 's/^/    /' "$tmp/stray" >&2
        bad=1
    fi
    if sort -u "$2" | comm -23 "$tmp/api" - >"$tmp/missing" && [ -s "$tmp/missing" ]; then
        echo "$1 lacks public functions (CH_API missing on their declaration?):" >&2
        sed 's/^/    /' "$tmp/missing" >&2
        bad=1
    fi
    if [ $bad -eq 0 ]; then
        echo "$1: $(wc -l <"$2") symbols, all ch_ or CH_, the whole public API"
    else
        status=1
    fi
}

"$nm" --defined-only --extern-only "$archive" | awk 'NF == 3 { print $3 }' >"$tmp/static"
check "$archive" "$tmp/static"
"$nm" --dynamic --defined-only "$shared" | awk 'NF == 3 { print $3 }' >"$tmp/dynamic"
check "$shared" "$tmp/dynamic"
exit $status
