#!/usr/bin/env bash
# Installs the Debian packages callhook builds, tests and runs with, the packaging tests' among
# them (debhelper and lintian build and check the .deb, groff-base and man-db render the manual
# pages, systemd's systemd-analyze verifies the units, procps has the /bin/kill they name). As
# root it runs apt-get itself; otherwise it prints the exact command to run and fails, so
# nothing is half set up.
set -euo pipefail

packages=(
    build-essential cmake ninja-build pkg-config clang clang-format
    libjansson-dev libssl-dev libcurl4-openssl-dev libmicrohttpd-dev libsqlite3-dev libpq-dev
    postgresql
    libcmocka-dev libgnutls28-dev nodejs npm python3 curl openssl wrk webhook faketime
    debhelper dpkg-dev lintian groff-base man-db systemd procps
    chromium
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
# node and npm may come from outside Debian's packages; a working pair on PATH is enough.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    kept=()
    for p in "${missing[@]}"; do
        case "$p" in nodejs | npm) ;; *) kept+=("$p") ;; esac
    done
    missing=("${kept[@]+"${kept[@]}"}")
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "callhook: missing Debian packages: ${missing[*]}" >&2
    echo "callhook: run this as root, then try again:" >&2
    echo "    sudo sh -c '$cmd'" >&2
    exit 1
fi
echo "callhook: installing ${missing[*]}" >&2
sh -c "$cmd"
