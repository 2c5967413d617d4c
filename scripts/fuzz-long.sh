#!/usr/bin/env bash
# Long local fuzzing: runs each cargo-fuzz target in turn for SECS seconds (default 630), one at a time (the
# dev machines have 2 shared cores), and prints libFuzzer's final exec count per target. Findings land in
# fuzz/artifacts/<target>/; copy each into fuzz/regressions/<target>/ once fixed.
# Usage: scripts/fuzz-long.sh [SECS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1 enables its flags.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-630}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame payloads record blob index_replay pack_record pack_recovery)
export RUSTC_BOOTSTRAP=1
cargo fuzz build
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds+=("seeds/$t")
  [ -d "regressions/$t" ] && seeds+=("regressions/$t")
  echo "==> fuzzing $t for ${secs}s"
  cargo fuzz run "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
    2>&1 | tee "/tmp/spark-fuzz-$t.log" | grep -E '^(Done|stat::number_of_executed_units|==[0-9]+== ERROR|SUMMARY)|panicked' || true
done
