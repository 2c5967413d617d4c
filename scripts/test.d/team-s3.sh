#!/usr/bin/env bash
# The team tier's S3 upstream against a real S3-compatible server: moto's (PyPI `moto[server]`), on loopback,
# started and stopped by PID by the test. Builds spark-daemon's tests with the `team-s3` feature (OpenDAL's S3
# service); the default build leaves S3 out. Without moto_server the test says SKIPPED and what to install.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto[server] (pip) for the S3 upstream test"
  python3 -m pip install --quiet 'moto[server]' || echo "SKIPPED: cannot install moto[server]: the S3 upstream test will skip"
fi
cargo test -p spark-daemon --features team-s3 --test team_s3 -- --nocapture
