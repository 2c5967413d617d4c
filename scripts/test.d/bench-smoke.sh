#!/usr/bin/env bash
# The benchmark in smoke mode (tiny counts, one repetition, debug build): proves spark-bench and every case it
# runs still work. It asserts no timing; PASS/MISS lines are information only.
set -euo pipefail
cd "$(dirname "$0")/../.."
SPARK_BENCH_PROFILE=dev exec scripts/bench --smoke
