#!/usr/bin/env bash
# `make install` as the build tree does it, into a temporary DESTDIR: exactly the files it
# should install under the configured prefix, the library's SONAME, callhook.pc and the systemd
# units naming paths under that prefix; a C program built against the installed headers and
# library found by `pkg-config --cflags --libs callhook` (PKG_CONFIG_SYSROOT_DIR, and the
# static library by --static) checks the Standard Webhooks test vector and parses a sample
# call record; the installed bash completion completes commands, subcommands and flags.
#
# usage: test_install.sh BUILD_DIR CMAKE CC SOURCE_DIR VERSION CONFDIR
# SANITIZE_FLAGS in the environment: what a program linked with this build's library needs.
set -uo pipefail
BUILD=$1 CMAKE=$2 CC=$3 SRC=$4 VERSION=$5 CONFDIR=$6
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
failed=0 passed=0
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
ok() { passed=$((passed + 1)); }

cache() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt"; }
prefix=$(cache CMAKE_INSTALL_PREFIX)
libdir=$(cache CMAKE_INSTALL_LIBDIR)
unitdir=$(cache CALLHOOK_SYSTEMD_UNIT_DIR)
[ -n "$unitdir" ] || unitdir=$prefix/lib/systemd/system
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
root=$dir/root

if ! DESTDIR=$root "$CMAKE" --install "$BUILD" >"$dir/install.log" 2>&1; then
    cat "$dir/install.log"
    fail "cmake --install failed"
    echo "$passed passed, $failed failed"
    exit 1
fi

# Exactly these files and links, nothing more: a file the install rules lose, or one they
# install by accident, fails here.
commands=$("$BUILD/callhook" --help | awk '/^commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 }')
{
    echo "$prefix/bin/callhook"
    for h in "$SRC"/include/callhook/*.h; do echo "$prefix/include/callhook/${h##*/}"; done
    echo "$libdir/libcallhook.a"
    echo "$libdir/libcallhook.so"
    echo "$libdir/libcallhook.so.0"
    echo "$libdir/libcallhook.so.$VERSION"
    echo "$libdir/pkgconfig/callhook.pc"
    echo "$prefix/share/man/man1/callhook.1"
    for c in $commands; do echo "$prefix/share/man/man1/callhook-$c.1"; done
    echo "$prefix/share/man/man3/libcallhook.3"
    echo "$prefix/share/bash-completion/completions/callhook"
    echo "$prefix/share/doc/callhook/examples/begin-call.json"
    echo "$prefix/share/doc/callhook/examples/end-call-answered.json"
    echo "$prefix/share/doc/callhook/examples/receive.conf"
    echo "$CONFDIR/serve.conf"
    echo "$unitdir/callhook-serve.service"
    echo "$unitdir/callhook-receive@.service"
} | sort >"$dir/want"
(cd "$root" && find . ! -type d | sed 's|^\.||' | sort) >"$dir/have"
if diff -u "$dir/want" "$dir/have"; then ok; else fail "the installed files differ (- wanted, + installed)"; fi

lib=$root$libdir
soname=$(readelf -d "$lib/libcallhook.so.$VERSION" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = libcallhook.so.0 ] && ok || fail "SONAME is '$soname', not libcallhook.so.0"
[ "$(readlink "$lib/libcallhook.so.0")" = "libcallhook.so.$VERSION" ] && ok ||
    fail "libcallhook.so.0 does not point to libcallhook.so.$VERSION"
[ "$(readlink "$lib/libcallhook.so")" = libcallhook.so.0 ] && ok ||
    fail "libcallhook.so does not point to libcallhook.so.0"
for f in "$root$prefix/bin/callhook" "$lib/libcallhook.so.$VERSION"; do
    if readelf -d "$f" | grep -E 'RPATH|RUNPATH'; then fail "$f keeps a run path"; else ok; fi
done

# The units and callhook.pc name the prefix the tree was configured with.
grep -qx "ExecStart=$prefix/bin/callhook serve --config $CONFDIR/serve.conf" \
    "$root$unitdir/callhook-serve.service" && ok || fail "callhook-serve.service's ExecStart"
grep -qx "ExecStart=$prefix/bin/callhook receive --config $CONFDIR/receive-%i.conf" \
    "$root$unitdir/callhook-receive@.service" && ok || fail "callhook-receive@.service's ExecStart"
grep -qx "prefix=$prefix" "$lib/pkgconfig/callhook.pc" && ok || fail "callhook.pc's prefix"

# A program of a library user, built on what was installed, found through pkg-config.
export PKG_CONFIG_SYSROOT_DIR=$root
export PKG_CONFIG_LIBDIR=$lib/pkgconfig:$(pkg-config --variable pc_path pkg-config)
got=$(pkg-config --modversion callhook)
[ "$got" = "$VERSION" ] && ok || fail "pkg-config --modversion callhook: '$got'"
flags=$(pkg-config --cflags --libs callhook) || fail "pkg-config --cflags --libs callhook"
echo "pkg-config --cflags --libs callhook: $flags"
static_flags=$(pkg-config --static --cflags --libs callhook | sed "s|-lcallhook|$lib/libcallhook.a|")
record="$SRC/tests/data/payloads/begin-call.json"
expected="version=$VERSION
vector=ok
active_call_id=291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10
correlation_id=6b8a9c1d-2e3f-4a5b-8c7d-0e1f2a3b4c5d
dedupe_key=291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10
call_type=ActiveCall"
# shellcheck disable=SC2086 # the flags are words
for kind in shared static; do
    f=$flags
    [ $kind = static ] && f=$static_flags
    if ! $CC ${SANITIZE_FLAGS:-} -Wall -Wextra -Werror -o "$dir/consumer_$kind" \
        "$SRC/tests/dist/lib_consumer.c" $f 2>"$dir/cc.log"; then
        cat "$dir/cc.log"
        fail "the program does not build against the $kind library"
        continue
    fi
    out=$(LD_LIBRARY_PATH=$lib "$dir/consumer_$kind" "$record" 2>&1)
    [ "$out" = "$expected" ] && ok || fail "$kind: the program said: $out"
    used=$(LD_LIBRARY_PATH=$lib ldd "$dir/consumer_$kind" | grep libcallhook || true)
    if [ $kind = shared ]; then
        [[ "$used" == *"=> $lib/libcallhook.so.0 "* ]] && ok || fail "shared: uses '$used'"
    else
        [ -z "$used" ] && ok || fail "static: still uses '$used'"
    fi
done
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR

# The bash completion, as bash would use it, with the installed binary.
complete_words() { # complete_words WORD... : what <TAB> offers after those words
    PATH=$root$prefix/bin:$PATH bash -c '
        source "$0"
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
        _callhook
        [ ${#COMPREPLY[@]} -gt 0 ] && printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " "' \
        "$root$prefix/share/bash-completion/completions/callhook" "$@"
}
check_completion() { # check_completion WANT WORD...
    local want=$1
    shift
    local got
    got=$(complete_words "$@")
    [ "$got" = "$want" ] && ok || fail "completing '$*': '$got', not '$want'"
}
check_completion "secret send serve " callhook se
check_completion "--listen " callhook serve --lis
check_completion "--secret --signature " callhook verify --s
check_completion "create list revoke " callhook key ""
check_completion "begin " callhook send b
check_completion "" callhook serve x

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
