#!/usr/bin/env bash
# The Collab service's NATS bridge against a real nats-server (Debian package nats-server): two sparkd share a
# session through it (presence, messages, state, locks, a killed daemon's locks expiring), and stopping the
# server degrades the session and restarting it recovers. The test starts nats-server itself (JetStream on,
# 127.0.0.1, a temporary store dir) and stops it by PID. Without the package it SKIPS LOUDLY.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v nats-server >/dev/null 2>&1; then
  echo "installing nats-server (apt)"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null 2>&1 || true
fi
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  echo "SKIPPED: collab NATS bridge tests: nats-server missing: install nats-server (apt-get install -y nats-server)"
  exit 0
fi
export PATH="$PATH:/usr/sbin"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test -q -p spark-daemon --test collab_nats -- --nocapture --test-threads=1 2>&1 | tee "$out"
if grep -q "SKIPPED" "$out"; then
  echo "collab-nats: nats-server is installed but the bridge tests skipped" >&2
  exit 1
fi
