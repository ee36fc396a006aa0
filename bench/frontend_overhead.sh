#!/usr/bin/env bash
# The same GPT-MoE (2 blocks, d_model 64, 4 heads, 8 experts top-2, d_ffn 128, 8 x 32 tokens a
# rank, byte-level on Debian's fortunes, the router's own balance) trained by the C++ worker
# (`hecate run`) and by the PyTorch front end (`./hecate run --frontend=python`, the example under
# torchrun), each with an embedded controller and 2 ranks, each rank pinned to its own core, both
# with their transfer lane and calibration (the defaults) and the same planner assumptions (this
# machine's rates, as `hecate run` gives them) and the same dense Adam (the worker's; the example
# steps with hecate.torch.Adam), in interleaved rounds; prints the
# medians and their ratios. Like for like are whole iterations: the worker's (plan agreement,
# switch, step and load report) against the example's (hecate.step(), which sends the report,
# included); the worker's step alone leaves the agreement, switch and report out
# (docs/python.md "Overhead").
#
# Both sides' processes get the same BLAS pool (--blas_threads, default: the machine's cores, what
# a hecate run worker gets when nothing is set; torchrun would otherwise give its ranks one): a
# pinned rank's idle BLAS thread yields the core while the rank waits for its peers, which on a VM
# shortens the wake-ups of every collective (docs/python.md "Overhead").
#
# --model=wide: the same but d_model 256, d_ffn 1024, 64-token sequences (about ten times the
# compute an iteration; the front end's per-operation cost weighs less).
#
# Six rounds of 100 iterations by default: single iterations on a 2-vCPU VM scatter by a factor
# of two, so fewer rounds move the ratio by several percent.
#
#   bazel run -c opt //bench:frontend_overhead [-- --iterations=100 --rounds=6 --workers=2
#                                                  --blas_threads=N --model=small|wide]
set -euo pipefail
ROOT=${BUILD_WORKSPACE_DIRECTORY:?run with bazel run //bench:frontend_overhead}
cd "$ROOT"
ITERATIONS=100 ROUNDS=6 WORKERS=2 BLAS_THREADS=$(nproc) MODEL=small
for a in "$@"; do
  case "$a" in
    --iterations=*) ITERATIONS=${a#*=} ;;
    --rounds=*) ROUNDS=${a#*=} ;;
    --workers=*) WORKERS=${a#*=} ;;
    --blas_threads=*) BLAS_THREADS=${a#*=} ;;
    --model=*) MODEL=${a#*=} ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "frontend_overhead: unknown flag $a" >&2; exit 2 ;;
  esac
done
for v in "$ITERATIONS" "$ROUNDS" "$WORKERS" "$BLAS_THREADS"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "frontend_overhead: flags take positive integers" >&2; exit 2; }
done
case "$MODEL" in
  small) SHAPE=(layers=2 d_model=64 heads=4 experts=8 top_k=2 d_ffn=128 seq_len=32 batch=8) ;;
  wide) SHAPE=(layers=2 d_model=256 heads=4 experts=8 top_k=2 d_ffn=1024 seq_len=64 batch=8) ;;
  *) echo "frontend_overhead: --model is small or wide, got '$MODEL'" >&2; exit 2 ;;
esac
PLANNER=(attention_ms=0 device_gflops=90 link_gbytes=2.4 copy_overhead_ms=4 reshard_period=10)
cpp_planner=() py_planner=()
for kv in "${SHAPE[@]}" "${PLANNER[@]}"; do
  cpp_planner+=("--$kv")
  k=${kv%%=*}
  py_planner+=("--${k//_/-}=${kv#*=}")
done
median_of() { grep -o 'step [0-9.]* ms median' | awk '{print $2}'; }
iteration_of() { grep -o 'iteration [0-9.]* ms median' | awk '{print $2}'; }
export OPENBLAS_NUM_THREADS=$BLAS_THREADS
echo "model $MODEL (${SHAPE[*]})"
echo "ranks $WORKERS, each pinned to a core; BLAS pool $BLAS_THREADS thread(s) a rank"
cpp=() cpp_it=() py=()
for r in $(seq 1 "$ROUNDS"); do
  out=$(bazel-bin/clients/hecate run --workers="$WORKERS" --iterations="$ITERATIONS" --skew=0 \
        --log_every=1000 -- --lr=3e-3 --gate_bias=0 "${cpp_planner[@]}" 2>/dev/null)
  c=$(median_of <<<"$out") ci=$(iteration_of <<<"$out")
  p=$(scripts/run_python.sh --workers="$WORKERS" -- --iterations="$ITERATIONS" \
        --log-every=1000 --pin "${py_planner[@]}" 2>/dev/null | median_of)
  [[ -n "$c" && -n "$ci" && -n "$p" ]] || { echo "frontend_overhead: a run failed (round $r)" >&2; exit 1; }
  echo "round $r/$ROUNDS: C++ worker step $c ms, iteration $ci ms; Python front end iteration $p ms (medians)"
  cpp+=("$c") cpp_it+=("$ci") py+=("$p")
done
/usr/bin/python3 - "${cpp[*]}" "${cpp_it[*]}" "${py[*]}" <<'PY'
import statistics, sys
cpp, cpp_it, py = ([float(v) for v in a.split()] for a in sys.argv[1:4])
c, ci, p = statistics.median(cpp), statistics.median(cpp_it), statistics.median(py)
print("frontend,median_ms")
print(f"cpp_worker_step,{c:.1f}\ncpp_worker_iteration,{ci:.1f}\npython_frontend_iteration,{p:.1f}")
print(f"ratio python/cpp, whole iterations (like for like): {p / ci:.3f}")
print(f"ratio python/cpp, against the worker's step (no agreement or switch): {p / c:.3f}")
# Each round runs the two back to back: the median of the rounds' own ratios cancels the host's
# slow drift between rounds.
paired = statistics.median(b / a for a, b in zip(cpp_it, py))
print(f"ratio python/cpp, median of the rounds' ratios (whole iterations): {paired:.3f}")
PY
