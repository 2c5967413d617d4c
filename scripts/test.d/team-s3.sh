#!/usr/bin/env bash
# The team tier's cloud upstreams. S3 against a real S3-compatible server: moto's (PyPI `moto[server]`), on loopback,
# started and stopped by PID by the test. Builds spark-daemon's tests with the `team-s3` feature (OpenDAL's S3
# service); the default build leaves S3 out. Without moto_server the test says SKIPPED and what to install.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto[server] (pip) for the S3 upstream test"
  python3 -m pip install --quiet 'moto[server]' || echo "SKIPPED: cannot install moto[server]: the S3 upstream test will skip"
fi
# Every cloud backend is compiled and linted, so none rots behind its feature: GCS and Azure Blob have no
# server here, their URL handling is unit-tested with the backends built in.
features=team-s3,team-gcs,team-azblob
cargo clippy --quiet -p spark-daemon --features "$features" -- -D warnings
cargo test -p spark-daemon --features "$features" --lib team::upstream
cargo test -p spark-daemon --features "$features" --test team_s3 -- --nocapture
