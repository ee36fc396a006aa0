#!/usr/bin/env bash
# The same GPT-MoE (2 blocks, d_model 64, 4 heads, 8 experts top-2, d_ffn 128, 8 x 32 tokens a
# rank, byte-level on Debian's fortunes, the router's own balance) trained by the C++ worker
# (`hecate run`) and by the PyTorch front end (`./hecate run --frontend=python`, the example under
# torchrun), each with an embedded controller and 2 ranks, each rank pinned to its own core, the
# C++ worker without its transfer lane and calibration (the front end runs neither yet), in
# interleaved rounds; prints each run's median step and the ratio of the medians. The worker's
# step leaves out the plan agreement and switch between steps; the example's includes
# hecate.step() (docs/python.md "Overhead").
#
#   bazel run -c opt //bench:frontend_overhead [-- --iterations=40 --rounds=2 --workers=2]
set -euo pipefail
ROOT=${BUILD_WORKSPACE_DIRECTORY:?run with bazel run //bench:frontend_overhead}
cd "$ROOT"
ITERATIONS=40 ROUNDS=2 WORKERS=2
for a in "$@"; do
  case "$a" in
    --iterations=*) ITERATIONS=${a#*=} ;;
    --rounds=*) ROUNDS=${a#*=} ;;
    --workers=*) WORKERS=${a#*=} ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "frontend_overhead: unknown flag $a" >&2; exit 2 ;;
  esac
done
for v in "$ITERATIONS" "$ROUNDS" "$WORKERS"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "frontend_overhead: flags take positive integers" >&2; exit 2; }
done
median_of() { grep -o 'step [0-9.]* ms median' | awk '{print $2}'; }
cpp=() py=()
for r in $(seq 1 "$ROUNDS"); do
  c=$(bazel-bin/clients/hecate run --workers="$WORKERS" --iterations="$ITERATIONS" --skew=0 \
        --log_every=1000 -- --layers=2 --d_model=64 --heads=4 --experts=8 --top_k=2 \
        --d_ffn=128 --seq_len=32 --batch=8 --lr=3e-3 --gate_bias=0 --overlap=false \
        --calibration=false 2>/dev/null | median_of)
  p=$(scripts/run_python.sh --workers="$WORKERS" -- --iterations="$ITERATIONS" \
        --log-every=1000 --pin 2>/dev/null | median_of)
  [[ -n "$c" && -n "$p" ]] || { echo "frontend_overhead: a run failed (round $r)" >&2; exit 1; }
  echo "round $r/$ROUNDS: C++ worker $c ms, Python front end $p ms (median step)"
  cpp+=("$c") py+=("$p")
done
/usr/bin/python3 - "${cpp[*]}" "${py[*]}" <<'PY'
import statistics, sys
cpp = [float(v) for v in sys.argv[1].split()]
py = [float(v) for v in sys.argv[2].split()]
c, p = statistics.median(cpp), statistics.median(py)
print(f"frontend,step_ms\ncpp_worker,{c:.1f}\npython_frontend,{p:.1f}\nratio python/cpp: {p / c:.3f}")
PY
