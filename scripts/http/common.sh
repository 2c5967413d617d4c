# Shared by the HTTP front's test hooks and bench: start a sparkd with --http on a free loopback port, find its
# token, stop it by PID. Source it; it defines sparkd_http_start and sparkd_http_stop.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# sparkd_http_start DIR [extra sparkd flags…]: sets SPARKD_PID, HTTP_PORT, HTTP_TOKEN, HTTP_URL.
sparkd_http_start() {
  local dir=$1; shift
  local bin=${SPARKD_BIN:-target/debug/sparkd}
  HTTP_PORT=$(free_port)
  "$bin" --socket "$dir/sparkd.sock" --cache-root "$dir/cache" --http "127.0.0.1:$HTTP_PORT" \
    --log-level warn "$@" >"$dir/sparkd.log" 2>&1 &
  SPARKD_PID=$!
  local i
  for i in $(seq 1 200); do
    if [ -s "$dir/sparkd.sock.token" ] && [ -S "$dir/sparkd.sock" ]; then break; fi
    if ! kill -0 "$SPARKD_PID" 2>/dev/null; then cat "$dir/sparkd.log" >&2; echo "FAIL: sparkd exited" >&2; return 1; fi
    sleep 0.05
  done
  HTTP_TOKEN=$(cat "$dir/sparkd.sock.token")
  HTTP_URL="http://127.0.0.1:$HTTP_PORT"
}

sparkd_http_stop() {
  if [ -n "${SPARKD_PID:-}" ] && kill -0 "$SPARKD_PID" 2>/dev/null; then
    kill "$SPARKD_PID" 2>/dev/null || true
    wait "$SPARKD_PID" 2>/dev/null || true
  fi
  SPARKD_PID=
}

# A C project of $2 source files (plus a header and main.c) in directory $1: every file defines functions
# that the others call, so the link is real.
gen_c_project() {
  local dir=$1 n=$2 i
  mkdir -p "$dir"
  {
    echo "#ifndef PROJECT_H"; echo "#define PROJECT_H"; echo "#include <stdint.h>"
    for i in $(seq 1 "$n"); do echo "uint64_t unit_$i(uint64_t x);"; done
    echo "#endif"
  } >"$dir/project.h"
  for i in $(seq 1 "$n"); do
    cat >"$dir/unit_$i.c" <<C
#include "project.h"
/* Unit $i: a little arithmetic so each object differs and takes real work to compile. */
static uint64_t mix_$i(uint64_t x) {
  for (int r = 0; r < $((i % 7 + 3)); r++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x += $i; }
  return x;
}
uint64_t unit_$i(uint64_t x) {
  uint64_t acc = 0;
  for (uint64_t k = 0; k < 100; k++) acc += mix_$i(x + k) % 1000003u;
  return acc;
}
C
  done
  {
    echo '#include <stdio.h>'; echo '#include "project.h"'
    echo 'int main(void) { uint64_t s = 0;'
    for i in $(seq 1 "$n"); do echo "  s += unit_$i($i);"; done
    echo '  printf("%llu\n", (unsigned long long)s); return 0; }'
  } >"$dir/main.c"
}
