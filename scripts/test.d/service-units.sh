#!/usr/bin/env bash
# The service files in dist/: the systemd units must pass `systemd-analyze verify` with no warning at all
# (it exits 0 on unknown keys, so any output fails), and the launchd plist must be a valid property list that
# runs sparkd. Socket activation itself is tested by crates/spark-daemon/tests/socket_activation.rs.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! command -v systemd-analyze >/dev/null; then
  echo "SKIPPED: systemd-analyze missing: install systemd (apt-get install -y systemd)"
else
  # ExecStart=%h/.local/bin/sparkd must exist for verify: a home with the freshly built binary.
  mkdir -p "$tmp/home/.local/bin" "$tmp/run"
  chmod 700 "$tmp/run"
  cp "${SPARKD_BIN:-$root/target/debug/sparkd}" "$tmp/home/.local/bin/sparkd"
  out=$(cd dist/systemd && HOME="$tmp/home" XDG_RUNTIME_DIR="$tmp/run" \
    systemd-analyze verify --user sparkd.socket sparkd.service 2>&1) || { echo "$out"; exit 1; }
  if [ -n "$out" ]; then
    echo "systemd-analyze verify complained about dist/systemd:"; echo "$out"; exit 1
  fi
  echo "dist/systemd: sparkd.socket and sparkd.service verify cleanly"
fi

python3 - "$root/dist/launchd/com.sparkdaemon.sparkd.plist" <<'PY'
import plistlib, sys
p = plistlib.load(open(sys.argv[1], "rb"))
assert p["Label"] == "com.sparkdaemon.sparkd", p["Label"]
assert p["ProgramArguments"][0].endswith("/sparkd"), p["ProgramArguments"]
assert p["KeepAlive"] == {"SuccessfulExit": False}, p["KeepAlive"]
print("dist/launchd: plist parses and runs sparkd")
PY
