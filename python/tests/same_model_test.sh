#!/usr/bin/env bash
# The PyTorch front end's example (examples/torch/train_gpt_moe.py under torchrun) and the C++
# worker (`hecate run`) train the same model on the same data: with the same shape, seed and
# text, on 2 ranks, every iteration's loss agrees to the 4 decimals both print. The dense
# initialization (one seed, one construction order), the experts' (seeded per layer and expert
# in the extension, as in the worker), the batches (the worker's sequence starts) and the
# optimizer (hecate.torch.Adam, the worker's step) must all match for that.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
source "$R/python/tests/lib.sh"
DATA="$R/examples/torch/train_gpt_moe.py"  # any text will do; the same for both
ITERATIONS=12
SHAPE=(layers=2 d_model=32 heads=4 experts=8 top_k=2 d_ffn=64 seq_len=16 batch=4 seed=3)
cpp_flags=() py_flags=()
for kv in "${SHAPE[@]}"; do
  cpp_flags+=("--$kv")
  k=${kv%%=*}
  py_flags+=("--${k//_/-}=${kv#*=}")
done
"$R/clients/hecate" run --workers=2 --iterations=$ITERATIONS --skew=0 --log_every=1 \
  --state_dir="$TEST_TMPDIR/cpp_state" -- --lr=3e-3 --gate_bias=0 --data="$DATA" \
  "${cpp_flags[@]}" >"$TEST_TMPDIR/cpp.txt" 2>"$TEST_TMPDIR/cpp.err" ||
  { cat "$TEST_TMPDIR/cpp.txt" "$TEST_TMPDIR/cpp.err"; exit 1; }
start_controller
export HECATE_MASTER_PORT=$(free_port)
PYTHONPATH="$R/python" /usr/bin/python3 -m torch.distributed.run --nnodes=1 --nproc_per_node=2 \
  --redirects=1 --tee=1 --log_dir="$TEST_TMPDIR/logs" --master_addr=127.0.0.1 \
  --master_port="$(free_port)" "$DATA" --iterations=$ITERATIONS --log-every=1 --lr=3e-3 \
  --data="$DATA" "${py_flags[@]}" >"$TEST_TMPDIR/py.txt" 2>&1 || { cat "$TEST_TMPDIR/py.txt"; exit 1; }
/usr/bin/python3 - "$TEST_TMPDIR/cpp.txt" "$TEST_TMPDIR/py.txt" "$ITERATIONS" <<'PY'
import re, sys

def losses(path, prefix):
    """{iteration: loss} from the progress rows (iteration, then loss, first on the line)."""
    out = {}
    for line in open(path):
        m = re.match(prefix + r"\s+(\d+)\s+(\d+\.\d{4})\s", line)
        if m:
            out[int(m[1])] = float(m[2])
    return out

cpp = losses(sys.argv[1], "")
py = losses(sys.argv[2], r"\[default0\]:")
n = int(sys.argv[3])
assert sorted(cpp) == list(range(n)), f"hecate run printed iterations {sorted(cpp)}"
assert sorted(py) == list(range(n)), f"the example printed iterations {sorted(py)}"
for it in range(n):
    print(f"iteration {it}: hecate run {cpp[it]:.4f}, PyTorch front end {py[it]:.4f}")
    # Last-digit rounding apart (the two sum some gradients in another order).
    assert abs(cpp[it] - py[it]) <= 1.5e-4, f"iteration {it}: the losses differ"
assert py[n - 1] < py[0], "the loss did not fall"
PY
