#!/usr/bin/env bash
# Long fuzz runs of every harness in tests/fuzz (docs/operations.md "Security"): builds them with
# clang, libFuzzer, ASan and UBSan (--config=fuzz, in its own Bazel output base so the default
# build's cache is kept), then runs each for RUNS executions (default 1,000,000) from its seed
# corpus, and prints libFuzzer's final stats. A crash stops the run and leaves its input
# (crash-*) in the harness's work directory; add it to the harness's corpus as a regression seed.
#
#   scripts/fuzz.sh [HARNESS...]        RUNS=N  WORK=DIR (default /tmp/hecate-fuzz)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-1000000}
WORK=${WORK:-/tmp/hecate-fuzz}
OB=${HECATE_FUZZ_OUTPUT_BASE:-$HOME/.cache/hecate-fuzz-bazel}
HARNESSES=("$@")
[[ ${#HARNESSES[@]} -gt 0 ]] || HARNESSES=(plan_delta load_report trace loads_csv configs)
targets=()
for h in "${HARNESSES[@]}"; do targets+=("//tests/fuzz:${h}_fuzzer"); done
echo "building ${targets[*]} (clang, libFuzzer, ASan + UBSan)..."
bazel --output_base="$OB" build --config=fuzz "${targets[@]}"
BIN=$(bazel --output_base="$OB" info --config=fuzz bazel-bin 2>/dev/null)
for h in "${HARNESSES[@]}"; do
  seeds=tests/fuzz/corpus/$h
  [[ $h == configs ]] && seeds=sim/configs
  mkdir -p "$WORK/$h/corpus"
  echo "== $h: $RUNS runs"
  start=$(date +%s)
  (cd "$WORK/$h" && "$BIN/tests/fuzz/${h}_fuzzer" -runs="$RUNS" -print_final_stats=1 \
     -max_len=65536 corpus "$OLDPWD/$seeds" 2>&1 | tee log | grep -E "^(#[0-9]+\s+DONE|stat::|==|SUMMARY)" || true)
  echo "   $(( $(date +%s) - start )) s; log: $WORK/$h/log"
  if ls "$WORK/$h"/crash-* "$WORK/$h"/leak-* "$WORK/$h"/timeout-* >/dev/null 2>&1; then
    echo "$h: found a failing input: $(ls "$WORK/$h"/crash-* "$WORK/$h"/leak-* "$WORK/$h"/timeout-* 2>/dev/null)" >&2
    exit 1
  fi
done
echo "every harness ran $RUNS executions without a crash or sanitizer report"
