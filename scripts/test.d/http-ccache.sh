#!/usr/bin/env bash
# ccache (Debian's, 4.7) against sparkd's HTTP front as its remote storage: build a 24-file C project in
# directory A with an empty local cache, then the same sources in directory B with a fresh empty local cache.
# B's objects must all come from remote storage (ccache's own statistics say so), and be byte-identical to A's.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
source scripts/http/common.sh

need=()
command -v ccache >/dev/null 2>&1 || need+=(ccache)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >/dev/null 2>&1 || true
fi
for t in ccache gcc; do
  if ! command -v "$t" >/dev/null 2>&1; then
    echo "SKIPPED: http-ccache: $t missing: install $t (apt-get install -y $t)"
    exit 0
  fi
done
echo "$(ccache --version | head -1)"

[ -n "${SPARKD_BIN:-}" ] || cargo build -q -p spark-daemon
tmp=$(mktemp -d)
trap 'sparkd_http_stop; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

sparkd_http_start "$tmp"
N=24
gen_c_project "$tmp/src" $N
cp -r "$tmp/src" "$tmp/A"
cp -r "$tmp/src" "$tmp/B"

# ccache takes HTTP Basic credentials from the URL: any user name, the token as password (docs/http.md).
export CCACHE_REMOTE_STORAGE="http://:$HTTP_TOKEN@127.0.0.1:$HTTP_PORT/ccache"
export CCACHE_BASEDIR="$tmp" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=1G

build() { # build DIR: compile every unit through ccache, link, run
  (cd "$1" && for f in *.c; do ccache gcc -O2 -c "$f" -o "${f%.c}.o"; done && gcc -o app ./*.o && ./app >out.txt)
}
stat_of() { # stat_of CCACHE_DIR KEY
  CCACHE_DIR=$1 ccache --print-stats | awk -v k="$2" '$1 == k { print $2 }'
}

CCACHE_DIR="$tmp/ccache-A" build "$tmp/A"
echo "build A (empty local cache):"
CCACHE_DIR="$tmp/ccache-A" ccache -s | sed 's/^/  A | /'
[ "$(stat_of "$tmp/ccache-A" remote_storage_error)" = 0 ] || fail "A: remote storage errors"
[ "$(stat_of "$tmp/ccache-A" remote_storage_miss)" -ge $((N + 1)) ] || fail "A: expected remote misses"

CCACHE_DIR="$tmp/ccache-B" build "$tmp/B"
echo "build B (fresh empty local cache, other directory):"
CCACHE_DIR="$tmp/ccache-B" ccache -s | sed 's/^/  B | /'
hits=$(stat_of "$tmp/ccache-B" remote_storage_hit)
misses=$(stat_of "$tmp/ccache-B" cache_miss)
[ "$(stat_of "$tmp/ccache-B" remote_storage_error)" = 0 ] || fail "B: remote storage errors"
[ "$misses" = 0 ] || fail "B: $misses compilations missed the cache"
[ "$hits" -ge $((N + 1)) ] || fail "B: $hits remote hits, expected $((N + 1)) (every unit and main.c)"

for o in "$tmp"/A/*.o; do
  cmp -s "$o" "$tmp/B/$(basename "$o")" || fail "object $(basename "$o") differs between A and B"
done
cmp -s "$tmp/A/out.txt" "$tmp/B/out.txt" || fail "the programs print different results"

# sparkd counted them in its ccache namespace.
metrics=$(curl -sf -H "Authorization: Bearer $HTTP_TOKEN" "$HTTP_URL/metrics")
served=$(echo "$metrics" | awk -F' ' '/^sparkd_namespace_hits_total\{namespace="ccache"\}/ { print $2 }')
[ "${served%.*}" -ge $((N + 1)) ] || fail "sparkd's ccache namespace served $served hits"
echo "ok: B got all $hits results from sparkd (ccache namespace hits: $served); $((N + 1)) objects identical"
