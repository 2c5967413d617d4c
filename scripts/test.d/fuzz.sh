#!/usr/bin/env bash
# Brief fuzzing for CI: every cargo-fuzz target in fuzz/ for SPARK_FUZZ_SECS seconds each (default 6: about
# 30 s in all), seeded with fuzz/seeds and fuzz/regressions. Needs cargo-fuzz; on a stable toolchain
# RUSTC_BOOTSTRAP=1 enables the nightly flags it passes. Without cargo-fuzz this step is skipped loudly: the
# same properties always run on stable in `cargo test` (crates/spark-reliability/tests/fuzz_equivalents.rs).
# SPARK_FUZZ_INSTALL=1 installs cargo-fuzz first (a few minutes); SPARK_FUZZ_SECS=0 skips.
# Long local runs: scripts/fuzz-long.sh. See docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/../../fuzz"
secs=${SPARK_FUZZ_SECS:-6}
if [ "$secs" = 0 ]; then
  echo "SKIP: fuzzing disabled (SPARK_FUZZ_SECS=0); the proptest equivalents ran in cargo test"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  if [ -n "${SPARK_FUZZ_INSTALL:-}" ]; then
    cargo install cargo-fuzz --locked
  else
    echo "SKIP: cargo-fuzz is not installed, so no fuzzing here; the same properties ran as proptest"
    echo "SKIP: equivalents in cargo test (spark-reliability fuzz_equivalents). SPARK_FUZZ_INSTALL=1 installs it."
    exit 0
  fi
fi
export RUSTC_BOOTSTRAP=1
# No AddressSanitizer for the short run: the code under test has no unsafe, and an uninstrumented build is
# much quicker on CI's two cores. The long local runs use the default (ASan).
# Its own target dir, so it never rebuilds over the ASan binaries of a long local run.
if ! cargo fuzz build -s none --target-dir target/ci >/tmp/spark-fuzz-build.log 2>&1; then
  tail -20 /tmp/spark-fuzz-build.log
  echo "SKIP: cargo fuzz build failed on this toolchain (log above); the proptest equivalents ran in cargo test"
  exit 0
fi
for t in $(cargo fuzz list); do
  corpus=$(mktemp -d)
  seeds=()
  for d in "seeds/$t" "regressions/$t"; do [ -d "$d" ] && seeds+=("$d"); done
  # The fresh corpus dir comes first: libFuzzer writes new inputs there, never into the committed seeds.
  if ! cargo fuzz run -s none --target-dir target/ci "$t" "$corpus" "${seeds[@]}" -- -max_total_time="$secs" -timeout=10 \
      -print_final_stats=1 >"/tmp/spark-fuzz-ci-$t.log" 2>&1; then
    tail -40 "/tmp/spark-fuzz-ci-$t.log"
    echo "fuzz target $t found a crash: the input is in fuzz/artifacts/$t/; fix it and keep it in fuzz/regressions/$t/"
    rm -rf "$corpus"
    exit 1
  fi
  echo "fuzz $t: $(grep -h '^stat::number_of_executed_units' "/tmp/spark-fuzz-ci-$t.log" | awk '{print $2}') execs in ${secs}s"
  rm -rf "$corpus"
done
