#!/usr/bin/env bash
# The layers of docs/ARCHITECTURE.md, checked: which src/ folder may include which, and where
# each third-party library may be included. A new include that breaks a rule fails the suite;
# change the rule here and the drawing there together, or move the code.
set -euo pipefail
src=${1:?usage: layers.sh SRC_DIR}
cd "$src"

# folder: the folders of src/ its files may include (itself always may).
declare -A may=(
    [util]=""
    [lib]="util"
    [http]="lib util"
    [store]="lib util"
    [deliver]="store lib util"
    [ui]="http util"
    [api]="ui http deliver store lib util"
    [serve]="api http deliver store lib util"
    [receive]="http lib util"
    [cli]="serve receive store lib util"
)
# header pattern: the only files that may include it.
declare -A only=(
    ['microhttpd\.h|gnutls/']="http/http.c"
    ['libpq-fe\.h']="store/postgres.c receive/sink_postgres.c"
    ['openssl/']="lib/crypto.c"
    ['sqlite3\.h']="store/sqlite.c lib/inbox.c util/sqlite_db.h util/sqlite_db.c"
    ['curl/curl\.h']="deliver/engine.c deliver/ssrf.c deliver/transfer.h deliver/retry.h deliver/probe.c receive/sink_forward.c cli/client.c serve/serve.c"
)

bad=0
for dir in */; do
    dir=${dir%/}
    if [ -z "${may[$dir]+set}" ]; then
        echo "layers: src/$dir/ is a folder docs/ARCHITECTURE.md does not place (add it to tests/lint/layers.sh)"
        bad=1
        continue
    fi
    while IFS=: read -r file _ target; do
        to=${target%%/*}
        [ "$to" = "$dir" ] && continue
        case " ${may[$dir]} " in *" $to "*) continue ;; esac
        echo "layers: $file includes \"$target\": src/$dir/ may include only ${may[$dir]:-itself}"
        bad=1
    done < <(grep -Ho '^#include "[a-z_]*/[a-z_]*\.h"' "$dir"/*.[ch] | sed 's/#include "\(.*\)"/\1/' | awk -F: '{ print $1 ":x:" $2 }')
done
for pattern in "${!only[@]}"; do
    while read -r file; do
        case " ${only[$pattern]} " in *" $file "*) continue ;; esac
        echo "layers: $file includes a header matching '$pattern': only ${only[$pattern]} may"
        bad=1
    done < <(grep -lE "^#include <($pattern)" */*.[ch] || true)
done
[ "$bad" = 0 ] && echo "layers: every include keeps to its layer"
exit "$bad"
