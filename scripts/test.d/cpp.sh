#!/usr/bin/env bash
# The C ABI from C++: builds examples/cpp/engine.cpp with g++ against libsparkdaemon found through
# pkg-config (one binary linked to the shared library, one to the static one) and runs engine processes
# against one daemon. Each compiles the real GLSL/WGSL shaders of examples/cpp/shaders (4 files plus 8
# permutations: 12 SPIR-V modules) through spark_shader_cache_get_or_compile:
#   A  auto-spawns the daemon (SPARK_DAEMON_* settings): the daemon compiles all 12;
#   B  a separate process with its own empty local cache: all 12 are daemon hits;
#   C  daemon disabled: compiles in process (naga), then local hits on a second run;
#   D  the daemon is SIGKILLed mid-session: the engine carries on from its local cache (no SIGPIPE death).
# Every run must print the same digest of the 12 outputs: whichever tier answered, the bytes are the same.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

have() { command -v "$1" >/dev/null 2>&1; }
missing=()
have g++ || missing+=(g++)
have pkg-config || missing+=(pkg-config)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt)"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

tmp=$(mktemp -d)
sock="$tmp/run/sparkd.sock"
sparkctl="$root/target/debug/sparkctl"
cleanup() {
  if [ -S "$sock" ]; then "$sparkctl" --socket "$sock" shutdown >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { # expect FILE TEXT
  grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "expected '$2' in the output above"; }
}

scripts/ffi-install "$tmp/prefix" --debug >/dev/null
cargo build -q -p spark-daemon -p sparkctl
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"

echo "building the C++ example (g++ -std=c++17; shared and static)"
# The header must also be valid C.
gcc -std=c99 -Wall -Wextra -Werror -fsyntax-only -x c $(pkg-config --cflags sparkdaemon) include/sparkdaemon.h
cxx=(g++ -std=c++17 -Wall -Wextra -Werror $(pkg-config --cflags sparkdaemon) examples/cpp/engine.cpp)
"${cxx[@]}" -o "$tmp/engine-shared" $(pkg-config --libs sparkdaemon) \
  -Wl,-rpath,"$(pkg-config --variable=libdir sparkdaemon)"
"${cxx[@]}" -o "$tmp/engine-static" "$(pkg-config --variable=staticlib sparkdaemon)" \
  $(pkg-config --static --libs-only-l sparkdaemon | sed 's/-lsparkdaemon//')
if ldd "$tmp/engine-static" | grep -q sparkdaemon; then fail "the static build still needs libsparkdaemon.so"; fi

# The auto-spawned daemon inherits this: its caches stay inside $tmp.
export XDG_CACHE_HOME="$tmp/xdg-cache"
unset SPARK_DAEMON_ENABLED SPARK_DAEMON_SOCKET SPARK_DAEMON_AUTO_SPAWN SPARK_DAEMON_BIN
on=(env SPARK_DAEMON_ENABLED=1 SPARK_DAEMON_SOCKET="$sock")
shaders="$root/examples/cpp/shaders"

echo "A: auto-spawns the daemon, which compiles every shader"
"${on[@]}" SPARK_DAEMON_AUTO_SPAWN=1 SPARK_DAEMON_BIN="$root/target/debug/sparkd" \
  "$tmp/engine-shared" A "$tmp/cache-a" "$shaders" > "$tmp/a.out"
cat "$tmp/a.out"
expect "$tmp/a.out" "[A] daemon: connected pid="
expect "$tmp/a.out" "[A] assets: ok"
expect "$tmp/a.out" "[A] pass 1: shaders=12 compiled=12 cached=0"
expect "$tmp/a.out" "[A] summary: daemon_fresh=12 daemon_hits=0 local_cache=0 local_compile=0"
[ -S "$sock" ] || fail "no daemon socket after auto-spawn"
digest=$(sed -n 's/.*pass 1: .* digest=\([0-9a-f]*\).*/\1/p' "$tmp/a.out")
[ -n "$digest" ] || fail "no digest in A's output"

echo "B: another process (static build), empty local cache: the daemon's results"
"${on[@]}" "$tmp/engine-static" B "$tmp/cache-b" "$shaders" > "$tmp/b.out"
cat "$tmp/b.out"
a_pid=$(sed -n 's/.*daemon: connected pid=\([0-9]*\).*/\1/p' "$tmp/a.out")
expect "$tmp/b.out" "[B] daemon: connected pid=$a_pid"
expect "$tmp/b.out" "[B] pass 1: shaders=12 compiled=0 cached=12"
expect "$tmp/b.out" "[B] summary: daemon_fresh=0 daemon_hits=12 local_cache=0 local_compile=0"

echo "C: daemon disabled (the default): compiled in process, then a plain local disk cache"
"$tmp/engine-shared" C "$tmp/cache-c" "$shaders" > "$tmp/c1.out"
"$tmp/engine-static" C "$tmp/cache-c" "$shaders" > "$tmp/c2.out"
cat "$tmp/c1.out" "$tmp/c2.out"
expect "$tmp/c1.out" "[C] daemon: not connected"
expect "$tmp/c1.out" "[C] summary: daemon_fresh=0 daemon_hits=0 local_cache=0 local_compile=12"
expect "$tmp/c2.out" "[C] summary: daemon_fresh=0 daemon_hits=0 local_cache=12 local_compile=0"

echo "D: the daemon is killed mid-session"
mkfifo "$tmp/d.in"
"${on[@]}" "$tmp/engine-shared" D "$tmp/cache-a" "$shaders" --pause < "$tmp/d.in" > "$tmp/d.out" &
d_pid=$!
exec 3>"$tmp/d.in"
for _ in $(seq 600); do grep -qF "[D] paused" "$tmp/d.out" && break; sleep 0.05; done
expect "$tmp/d.out" "[D] paused"
kill -KILL "$a_pid"
for _ in $(seq 600); do "$sparkctl" --socket "$sock" ping >/dev/null 2>&1 || break; sleep 0.05; done
echo go >&3
exec 3>&-
status=0
wait "$d_pid" || status=$?
cat "$tmp/d.out"
[ "$status" = 0 ] || fail "engine D exited with status $status after the daemon died (141 would be SIGPIPE)"
expect "$tmp/d.out" "[D] pass 1: shaders=12 compiled=0 cached=12"
expect "$tmp/d.out" "[D] pass 2: shaders=12 compiled=0 cached=12 events=0"  # polling a dead daemon: no event
expect "$tmp/d.out" "[D] summary: daemon_fresh=0 daemon_hits=12 local_cache=12 local_compile=0"

for out in a b c1 c2 d; do
  n=$(grep -c "pass [12]: .* digest=$digest" "$tmp/$out.out" || true)
  [ "$n" -ge 1 ] || { cat "$tmp/$out.out" >&2; fail "$out: the shaders' digest differs from A's ($digest)"; }
done
if grep "digest=" "$tmp"/*.out | grep -v "digest=$digest"; then fail "a pass got different shader bytes"; fi

echo "C++ engine example: 6 runs passed"
