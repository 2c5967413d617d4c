#!/usr/bin/env bash
# include/sparkdaemon.h must be exactly what the pinned cbindgen generates from crates/spark-ffi: installs
# that cbindgen if missing (once per machine), then runs the header test with the check made mandatory.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/gen-header --ensure-cbindgen
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
SPARK_REQUIRE_CBINDGEN=1 cargo test -q -p spark-ffi --test header
