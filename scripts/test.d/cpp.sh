#!/usr/bin/env bash
# The C ABI from C++: builds examples/cpp/engine.cpp with g++ against libsparkdaemon found through
# pkg-config (one binary linked to the shared library, one to the static one) and runs engine processes
# against one daemon:
#   A  auto-spawns the daemon (SPARK_DAEMON_* settings) and compiles every shader;
#   B  a separate process with its own empty local cache: every shader is a daemon hit, metadata intact;
#   C  daemon disabled: exactly a plain local disk cache (compiles, then local hits on a second run);
#   D  the daemon is SIGKILLed mid-session: the engine carries on from its local cache (no SIGPIPE death).
# Each also compiles the real GLSL/WGSL shaders of examples/cpp/shaders through spark_shader_cache_get_or_compile:
# A has the daemon compile them, B gets the daemon's cached results, C compiles them in process (no daemon)
# and then hits its local cache, D finds them in its local cache once the daemon is gone.
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
real=(--real-shaders "$root/examples/cpp/shaders")

echo "A: auto-spawns the daemon, compiles and stores"
"${on[@]}" SPARK_DAEMON_AUTO_SPAWN=1 SPARK_DAEMON_BIN="$root/target/debug/sparkd" \
  "$tmp/engine-shared" A "$tmp/cache-a" "${real[@]}" > "$tmp/a.out"
cat "$tmp/a.out"
expect "$tmp/a.out" "[A] daemon: connected pid="
expect "$tmp/a.out" "[A] assets: ok"
expect "$tmp/a.out" "[A] summary: compiled=8 verified=0 daemon_hits=0 local_hits=0 misses=8"
expect "$tmp/a.out" "[A] real shaders: ok=4 daemon_fresh=4 daemon_hits=0 local_cache=0 local_compile=0"
[ -S "$sock" ] || fail "no daemon socket after auto-spawn"

echo "B: another process (static build), empty local cache: hits what A stored"
"${on[@]}" "$tmp/engine-static" B "$tmp/cache-b" "${real[@]}" > "$tmp/b.out"
cat "$tmp/b.out"
expect "$tmp/b.out" "[B] daemon: connected pid="
a_pid=$(sed -n 's/.*daemon: connected pid=\([0-9]*\).*/\1/p' "$tmp/a.out")
expect "$tmp/b.out" "connected pid=$a_pid"
expect "$tmp/b.out" "[B] summary: compiled=0 verified=8 daemon_hits=8 local_hits=0 misses=0"
expect "$tmp/b.out" "[B] real shaders: ok=4 daemon_fresh=0 daemon_hits=4 local_cache=0 local_compile=0"

echo "C: daemon disabled (the default): a plain local disk cache"
"$tmp/engine-shared" C "$tmp/cache-c" "${real[@]}" > "$tmp/c1.out"
"$tmp/engine-static" C "$tmp/cache-c" "${real[@]}" > "$tmp/c2.out"
cat "$tmp/c1.out" "$tmp/c2.out"
expect "$tmp/c1.out" "[C] daemon: not connected"
expect "$tmp/c1.out" "[C] summary: compiled=8 verified=0 daemon_hits=0 local_hits=0 misses=8"
expect "$tmp/c2.out" "[C] summary: compiled=0 verified=8 daemon_hits=0 local_hits=8 misses=0"
expect "$tmp/c1.out" "[C] real shaders: ok=4 daemon_fresh=0 daemon_hits=0 local_cache=0 local_compile=4"
expect "$tmp/c2.out" "[C] real shaders: ok=4 daemon_fresh=0 daemon_hits=0 local_cache=4 local_compile=0"

echo "D: the daemon is killed mid-session"
mkfifo "$tmp/d.in"
"${on[@]}" "$tmp/engine-shared" D "$tmp/cache-a" --pause "${real[@]}" < "$tmp/d.in" > "$tmp/d.out" &
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
expect "$tmp/d.out" "[D] pass 1: compiled=0 cached=8"
expect "$tmp/d.out" "[D] pass 2: compiled=0 cached=8 events=0"  # polling a dead daemon is just no event
expect "$tmp/d.out" "daemon_hits=8 local_hits=8 misses=0"
expect "$tmp/d.out" "[D] real shaders: ok=4 daemon_fresh=0 daemon_hits=0 local_cache=4 local_compile=0"

echo "C++ engine example: 6 runs passed"
