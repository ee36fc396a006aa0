# Sourced by kernels/tools/gpu_check.sh after its checks, with the product built in
# $BUILD_DIR/bin: trains with it on the GPU and writes the figures into the report. Uses the
# caller's log, FAILED, REPORT, BUILD_DIR, ROOT and GPU.
#
#   1. CUDA == CPU: the same small GPT-MoE (float32, same seeds, local planning under skewed
#      routing, so plans change), 30 iterations, on the CPU and on the GPU; every iteration's loss
#      within 1e-3 relative, and the same plan each iteration. 1 rank over NCCL; 4 ranks on one GPU
#      over Gloo through pinned host memory.
#   2. `hecate run --device=cuda` with the embedded controller: NCCL, 1 rank; Gloo, 4 ranks.
#   3. The PyTorch front end built against this LibTorch: python/tests/torch_moe_test.py and the
#      example under torchrun (2 ranks; the front end's experts run on the CPU).
#   4. A model sized to the GPU (4 blocks, d_model 1024, 8 experts of d_ffn 4096, 16 x 256 tokens
#      per rank): tokens/s, step ms by phase, peak GPU memory (nvidia-smi, sampled), and the expert
#      GEMMs' share of the fp32 and bf16 peaks; beside it the same model's CPU figures.
# HECATE_RUNS_DEVICE=cpu runs every "GPU" run on the CPU instead and skips the sized model: a check of
# this script on a machine without a GPU (nothing it prints is a GPU figure then).
DEV="${HECATE_RUNS_DEVICE:-cuda}"
BIN="$BUILD_DIR/bin"
# Run logs next to the report when there is an $OUT (the device tool brings it back).
WORK="${OUT:+$OUT/runs}"
WORK="${WORK:-$BUILD_DIR/runs}"
rm -rf "$WORK"
mkdir -p "$WORK"
TEXT="$WORK/text.txt"
cat "$ROOT"/README.md "$ROOT"/docs/*.md > "$TEXT"
PY="${PY:-python3}"

# ranks N OUT [worker flags]: N hecate-worker processes on loopback; rank 0's stdout in OUT, every
# rank's stderr in OUT.err.R. Returns the first non-zero exit status.
ranks() {
  local n="$1" out="$2"; shift 2
  local port=$(( 20000 + RANDOM % 20000 )) pids=() rc=0
  for ((r = 0; r < n; ++r)); do
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      timeout 300 "$BIN/worker/hecate-worker" "$@" >"$( [[ $r -eq 0 ]] && echo "$out" || echo /dev/null )" \
      2>"$out.err.$r" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { local s=$?; [[ $rc -eq 0 ]] && rc=$s; }; done
  return $rc
}

# product_step NAME COMMAND...: runs it, logs its status, records a failure.
product_step() {
  local name="$1"; shift
  log ""
  log "## $name"
  local t0=$(date +%s)
  "$@"
  local rc=$?
  log "-- $name: exit $rc in $(( $(date +%s) - t0 )) s"
  [[ $rc -eq 0 ]] || FAILED+=("$name(exit $rc)")
}

# compare CPU_OUT GPU_OUT: losses within 1e-3 relative, the same plan every iteration.
compare() {
  "$PY" - "$1" "$2" <<'PYEOF' 2>&1 | tee -a "$REPORT"
import re, sys
def read(path):
    rows = {}
    for line in open(path):
        m = re.match(r"progress iter=(\d+) loss=(\S+) .* plan=(\S+) ", line)
        if m: rows[int(m.group(1))] = (float(m.group(2)), m.group(3))
    return rows
cpu, gpu = read(sys.argv[1]), read(sys.argv[2])
if not cpu or sorted(cpu) != sorted(gpu):
    print(f"FAILED: iterations differ: cpu {len(cpu)}, gpu {len(gpu)}"); sys.exit(1)
worst = max(abs(cpu[i][0] - gpu[i][0]) / abs(cpu[i][0]) for i in cpu)
same_plans = all(cpu[i][1] == gpu[i][1] for i in cpu)
plans = sorted({p for _, p in cpu.values()})
print(f"iterations {len(cpu)}; loss {cpu[min(cpu)][0]:.4f} -> {cpu[max(cpu)][0]:.4f} (cpu), "
      f"{gpu[min(gpu)][0]:.4f} -> {gpu[max(gpu)][0]:.4f} (gpu); worst relative difference "
      f"{worst:.2e} (limit 1e-3); plans {', '.join(plans)}; same plan every iteration: {same_plans}")
sys.exit(0 if worst <= 1e-3 and same_plans else 1)
PYEOF
  return "${PIPESTATUS[0]}"
}

SMALL=(--layers=2 --d_model=64 --heads=4 --experts=8 --top_k=2 --d_ffn=256 --seq_len=32 --batch=8
       --gate_bias=3 --skew_experts=2 --seed=7 --data="$TEXT" --iterations=30 --log_every=1
       --reshard_period=10 --attention_ms=0.2 --device_gflops=2000 --link_gbytes=10)

equivalence() {
  local n="$1" comm="$2"
  ranks "$n" "$WORK/cpu$n.out" "${SMALL[@]}" --device=cpu --threads=2 || { log "cpu run failed"; tail -5 "$WORK/cpu$n.out.err.0" | tee -a "$REPORT"; return 1; }
  ranks "$n" "$WORK/gpu$n.out" "${SMALL[@]}" --device="$DEV" --comm="$comm" || { log "gpu run failed"; tail -5 "$WORK/gpu$n.out.err.0" | tee -a "$REPORT"; return 1; }
  compare "$WORK/cpu$n.out" "$WORK/gpu$n.out"
}
product_step "cuda == cpu, 1 rank, NCCL" equivalence 1 "$([[ $DEV == cuda ]] && echo nccl || echo gloo)"
product_step "cuda == cpu, 4 ranks on one GPU, Gloo" equivalence 4 gloo

launcher() {
  timeout 300 "$BIN/clients/hecate" run --bin_dir="$BIN" --iterations=30 --log_every=10 "$@" \
    -- --data="$TEXT" >"$WORK/launcher.out" 2>&1
  local rc=$?
  grep -E "^ +(0|10|20|29) |^summary" "$WORK/launcher.out" | tee -a "$REPORT"
  [[ $rc -eq 0 ]] || tail -20 "$WORK/launcher.out" | tee -a "$REPORT"
  return $rc
}
product_step "hecate run --device=cuda (NCCL, 1 rank, controller)" launcher --device="$DEV" --workers=1
product_step "hecate run --device=cuda --comm=gloo --workers=4 (controller)" launcher --device="$DEV" --comm=gloo --workers=4

# The PyTorch front end built against this LibTorch: its layer against plain PyTorch (forward and
# every gradient, float64, changing plans) and the example under torchrun (2 ranks, local planning).
frontend() {
  if [[ ! -f "$BIN/python/hecate/_C.so" ]]; then log "not built (no Python headers)"; return 1; fi
  PYTHONPATH="$BIN/python:$ROOT/python/tests" timeout 300 "$PY" "$ROOT/python/tests/torch_moe_test.py" \
    >"$WORK/frontend_test.out" 2>&1
  local rc=$?
  tail -4 "$WORK/frontend_test.out" | tee -a "$REPORT"
  [[ $rc -eq 0 ]] || return $rc
  PYTHONPATH="$BIN/python" HECATE_MASTER_PORT=$(( 20000 + RANDOM % 20000 )) timeout 300 \
    "$PY" -m torch.distributed.run --nnodes=1 --nproc_per_node=2 --master_addr=127.0.0.1 \
    --redirects=1 --tee=1 --log_dir="$WORK/torchrun_logs" \
    --master_port=$(( 20000 + RANDOM % 20000 )) "$ROOT/examples/torch/train_gpt_moe.py" \
    --iterations=20 --data="$TEXT" >"$WORK/frontend_example.out" 2>&1
  rc=$?
  grep -E "summary" "$WORK/frontend_example.out" | tee -a "$REPORT"
  [[ $rc -eq 0 ]] || tail -20 "$WORK/frontend_example.out" | tee -a "$REPORT"
  return $rc
}
product_step "PyTorch front end against PyTorch's LibTorch" frontend

BIG=(--layers=4 --d_model=1024 --heads=16 --experts=8 --top_k=2 --d_ffn=4096 --seq_len=256
     --batch=16 --gate_bias=2 --skew_experts=2 --seed=7 --data="$TEXT" --log_every=5)
performance() {
  local peak="$WORK/peak_mib"
  echo 0 >"$peak"
  ( while true; do
      m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
      [[ -n "$m" && "$m" -gt "$(cat "$peak")" ]] && echo "$m" >"$peak"
      sleep 0.2
    done ) &
  local sampler=$!
  ranks 1 "$WORK/big_gpu.out" "${BIG[@]}" --device=cuda --iterations=20
  local rc=$?
  kill "$sampler" 2>/dev/null
  [[ $rc -eq 0 ]] || { tail -5 "$WORK/big_gpu.out.err.0" | tee -a "$REPORT"; return $rc; }
  ranks 1 "$WORK/big_cpu.out" "${BIG[@]}" --device=cpu --threads="$(nproc)" --iterations=3 --cpu=-1 || return $?
  "$PY" - "$WORK/big_gpu.out" "$WORK/big_cpu.out" "$(cat "$peak")" "$GPU" <<'PYEOF' 2>&1 | tee -a "$REPORT"
import re, sys
def summary(path):
    line = [l for l in open(path) if l.startswith("summary ")][-1]
    return dict(kv.split("=", 1) for kv in line.split()[1:])
g, c = summary(sys.argv[1]), summary(sys.argv[2])
peak_mib, gpu = float(sys.argv[3]), sys.argv[4]
tokens, k, d, f = 16 * 256, 2, 1024, 4096
flops = tokens * k * 12 * d * f  # two GEMMs per expert, forward and the two backward products
fp32, bf16 = (67e12, 989e12)  # H100 SXM / H200 dense peaks (fp32 non-tensor, bf16 tensor)
print("model: 4 blocks, d_model 1024, 16 heads, 8 experts x d_ffn 4096, top-2, 16 x 256 tokens/rank, float32")
print(f"{'':22s} {'gpu (1 rank, NCCL)':>20s} {'cpu (1 rank)':>14s}")
for key, label in [("tokens_per_s", "tokens/s"), ("mean_step_ms", "step ms"),
                   ("mean_attention_ms", "attention ms"), ("mean_gate_ms", "gate ms"),
                   ("mean_dispatch_ms", "dispatch ms"), ("mean_expert_ms", "expert ms"),
                   ("mean_combine_ms", "combine ms"), ("mean_spag_exposed_ms", "spAG exposed ms"),
                   ("mean_sprs_exposed_ms", "spRS exposed ms"), ("mean_optimizer_ms", "optimizer ms"),
                   ("mean_dense_allreduce_ms", "dense all-reduce ms")]:
    print(f"{label:22s} {float(g[key]):20.2f} {float(c[key]):14.2f}")
expert_s = float(g["mean_expert_ms"]) / 1e3
print(f"peak GPU memory (nvidia-smi, whole device): {peak_mib:.0f} MiB on {gpu}")
print(f"expert GEMMs: {flops / 1e12:.3f} TFLOP per step in {expert_s * 1e3:.2f} ms = "
      f"{flops / expert_s / 1e12:.1f} TFLOP/s: {100 * flops / expert_s / fp32:.0f}% of the fp32 peak "
      f"(67 TFLOP/s), {100 * flops / expert_s / bf16:.1f}% of the bf16 dense peak (989 TFLOP/s)")
PYEOF
}
[[ "$DEV" == cuda ]] && product_step "GPU-sized model: throughput, phases, memory" performance
