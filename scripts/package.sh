#!/usr/bin/env bash
# Builds the Debian packages (make package): copies the sources (what git tracks, and new files
# it does not ignore) to OUT/callhook-VERSION and runs dpkg-buildpackage there, which leaves
# the .deb files, the .buildinfo and the .changes in OUT; the tree itself is not written to.
# DEB_BUILD_OPTIONS passes through (noddebs, parallel=N; parallel defaults to every core).
#
# usage: package.sh OUT_DIR
set -euo pipefail
out=${1:?usage: package.sh OUT_DIR}
src=$(cd "$(dirname "$0")/.." && pwd)
for tool in dpkg-buildpackage dh; do
    if ! command -v "$tool" >/dev/null; then
        echo "callhook: $tool is missing; install the build dependencies first:" >&2
        echo "    sudo apt-get build-dep ./" >&2
        exit 1
    fi
done
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
mkdir -p "$out"
out=$(cd "$out" && pwd)
stage="$out/callhook-$version"
rm -rf "$stage"
rm -f "$out"/*.deb "$out"/*.ddeb "$out"/*.changes "$out"/*.buildinfo
mkdir -p "$stage"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked files deleted in the work tree are left out.
    (cd "$src" && git ls-files -z -co --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -C "$stage" -xf -
else
    tar -C "$src" --exclude=./build --exclude=./var --exclude=node_modules -cf - . |
        tar -C "$stage" -xf -
fi
case " ${DEB_BUILD_OPTIONS:-} " in
*" parallel="*) ;;
*) export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:+$DEB_BUILD_OPTIONS }parallel=$(nproc)" ;;
esac
(cd "$stage" && dpkg-buildpackage -b -us -uc)
echo "callhook: the packages are in $out:"
ls -1 "$out"/*.deb
