#!/usr/bin/env bash
# The HTTP front's /metrics against Prometheus's own checker: `promtool check metrics` (Debian's prometheus
# package) after known traffic. promtool fails on malformed exposition text and on lint problems (a counter
# without `_total`, a type in a metric's name, …). The Rust tests parse /metrics too (crates/spark-daemon/tests/http.rs);
# this is the reference implementation's opinion. Without promtool: SKIPPED, saying what to install.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus (apt, for promtool; its service is not started)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
    >/dev/null 2>&1 || true
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "SKIPPED: http-promtool: promtool missing: install prometheus (apt-get install -y prometheus)"
  exit 0
fi
sparkd="${SPARKD_BIN:-$root/target/debug/sparkd}"
sparkctl="$root/target/debug/sparkctl"
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$sparkd" --socket "$tmp/s.sock" --cache-root "$tmp/cache" --http "127.0.0.1:$port" --log-level warn &
pid=$!
for _ in $(seq 200); do [ -S "$tmp/s.sock" ] && [ -s "$tmp/s.sock.token" ] && break; sleep 0.05; done
ctl=("$sparkctl" --socket "$tmp/s.sock")
echo "compiled bytes" | "${ctl[@]}" shader put 0123abcd 1 0 >/dev/null
"${ctl[@]}" shader get 0123abcd 1 0 >/dev/null
"${ctl[@]}" shader get 0123abce 1 0 >/dev/null || true   # a miss: exit 3
token=$(cat "$tmp/s.sock.token")
python3 - "$port" "$token" > "$tmp/metrics.txt" <<'PY'
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/metrics", headers={"Authorization": f"Bearer {sys.argv[2]}"})
sys.stdout.write(urllib.request.urlopen(req, timeout=10).read().decode())
PY
grep -q '^sparkd_namespace_hits_total{namespace="shader"} 1$' "$tmp/metrics.txt" \
  || { grep namespace_hits "$tmp/metrics.txt" >&2; echo "FAIL: /metrics does not show the shader hit" >&2; exit 1; }
if ! promtool check metrics < "$tmp/metrics.txt"; then
  echo "FAIL: promtool check metrics rejected sparkd's /metrics (above)" >&2
  exit 1
fi
echo "http-promtool: promtool check metrics accepts /metrics ($(grep -vc '^#' "$tmp/metrics.txt") samples)"
