#!/usr/bin/env bash
# The dashboard in a real browser: Debian's chromium, headless, opens sparkd's page after traffic this script
# made (ccache-style PUT/GET hits and misses over a few seconds, a named client on the socket). From the DOM
# it proves that the embedded script and style sheet loaded (the page marks #summary) and that the charts have
# data: the ccache card's counters and hit-rate points, the client's name in the table. The screenshot and
# the DOM are kept in target/artifacts/. Then the page is driven over the DevTools protocol until it has
# received two live samples over server-sent events (scripts/http/cdp_live.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
source scripts/http/common.sh

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "installing chromium (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 || true
  browser=$(command -v chromium || true)
fi
if [ -z "$browser" ]; then
  echo "SKIPPED: http-dashboard: chromium missing: install chromium (apt-get install -y chromium)"
  exit 0
fi

[ -n "${SPARKD_BIN:-}" ] || cargo build -q -p spark-daemon
tmp=$(mktemp -d)
client_pid=
cleanup() {
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
  sparkd_http_stop
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
art="$root/target/artifacts"
mkdir -p "$art"

sparkd_http_start "$tmp"
# A named client stays connected while the browser looks.
PYTHONPATH="$root/clients/python" python3 -c "
import sys, time, sparkdaemon
c = sparkdaemon.connect(sys.argv[1], client_name='dashboard-test-editor'); c.connect()
print('connected', flush=True); time.sleep(600)" "$tmp/sparkd.sock" >"$tmp/client.out" &
client_pid=$!
for i in $(seq 1 100); do grep -q connected "$tmp/client.out" 2>/dev/null && break; sleep 0.05; done

# Traffic in three rounds a sample apart (the page charts one sample a second): each round stores two
# entries, hits both and misses one.
base="http://:$HTTP_TOKEN@127.0.0.1:$HTTP_PORT/ccache"
for round in 1 2 3; do
  for k in a b; do
    curl -sf -X PUT --data-binary "object $round$k" "$base/$round$k/0001" >/dev/null
    curl -sf "$base/$round$k/0001" >/dev/null
  done
  code=$(curl -s -o /dev/null -w '%{http_code}' "$base/ff/$round")
  [ "$code" = 404 ] || fail "expected a miss, got $code"
  sleep 1.1
done

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
  --disable-component-update --disable-sync --window-size=1280,1000)
# The token goes in the query: the page hands it on to its assets and its event stream (docs/http.md).
url="$HTTP_URL/?token=$HTTP_TOKEN"
timeout 120 "$browser" "${flags[@]}" --user-data-dir="$tmp/profile-dom" --dump-dom "$url" \
  >"$art/dashboard-dom.html" 2>"$tmp/chromium-dom.log" || { tail -20 "$tmp/chromium-dom.log"; fail "chromium --dump-dom failed"; }
timeout 120 "$browser" "${flags[@]}" --user-data-dir="$tmp/profile-shot" --screenshot="$art/dashboard.png" "$url" \
  >"$tmp/chromium-shot.log" 2>&1 || { tail -20 "$tmp/chromium-shot.log"; fail "chromium --screenshot failed"; }
[ -s "$art/dashboard.png" ] || fail "no screenshot"

python3 - "$art/dashboard-dom.html" <<'PY'
import sys
from html.parser import HTMLParser

class P(HTMLParser):
    def __init__(self):
        super().__init__()
        self.summary, self.cards, self.stack, self.cells = None, {}, [], []
        self.polylines = {}
        self.in_td = False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") == "summary":
            self.summary = a
        if "data-namespace" in a:
            self.cards[a["data-namespace"]] = a
            self.current = a["data-namespace"]
        if tag == "polyline" and getattr(self, "current", None):
            self.polylines.setdefault(self.current, {})[a.get("class")] = a.get("points", "")
        self.in_td = tag == "td"
    def handle_data(self, data):
        if self.in_td:
            self.cells.append(data)
    def handle_endtag(self, tag):
        self.in_td = False

p = P()
p.feed(open(sys.argv[1]).read())
s = p.summary
def check(ok, what):
    if not ok:
        sys.exit("FAIL: dashboard DOM: " + what)
check(s is not None, "no #summary element (the page itself did not load)")
check(s.get("data-js") == "loaded", "the embedded app.js did not run: %r" % s)
check(s.get("data-css") == "loaded", "the embedded style.css did not apply: %r" % s)
check(int(s.get("data-samples", 0)) >= 3, "fewer than 3 samples: %r" % s)
check("ccache" in s.get("data-namespaces", "").split(","), "no ccache namespace: %r" % s)
c = p.cards.get("ccache", {})
check(int(c.get("data-hits", 0)) >= 6 and int(c.get("data-misses", 0)) >= 3, "ccache counters: %r" % c)
check(int(c.get("data-points", 0)) >= 2, "the ccache hit-rate chart has fewer than 2 points: %r" % c)
pts = p.polylines.get("ccache", {})
check(len(pts.get("cumulative", "").split()) >= 2, "no cumulative hit-rate line: %r" % pts)
check(len(pts.get("rate", "").split()) >= 1, "no per-interval hit-rate points: %r" % pts)
check(int(s.get("data-clients", 0)) >= 1 and "dashboard-test-editor" in p.cells,
      "the connected client is not listed: %r %r" % (s, p.cells))
print("ok: dashboard loaded its embedded assets; %s samples; ccache hits=%s misses=%s, %s chart points; clients %s"
      % (s["data-samples"], c["data-hits"], c["data-misses"], c["data-points"], s["data-clients"]))
PY
# Live: the same page in a browser driven over the DevTools protocol must receive samples over /events.
python3 scripts/http/cdp_live.py "$browser" "$tmp/profile-live" "$url" "$art/dashboard-live.png"
echo "artefacts: $art/dashboard.png, $art/dashboard-live.png, $art/dashboard-dom.html"
