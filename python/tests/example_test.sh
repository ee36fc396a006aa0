#!/usr/bin/env bash
# examples/torch/train_gpt_moe.py trains 20 iterations on 2 torchrun ranks against a
# hecate-controller started here: the loss falls and the ranks end on a controller plan.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
source "$R/python/tests/lib.sh"
start_controller
export HECATE_MASTER_PORT=$(free_port)
OUT="$TEST_TMPDIR/out.txt"
PYTHONPATH="$R/python" /usr/bin/python3 -m torch.distributed.run --nnodes=1 --nproc_per_node=2 \
  --redirects=1 --tee=1 --log_dir="$TEST_TMPDIR/logs" --master_addr=127.0.0.1 \
  --master_port="$(free_port)" "$R/examples/torch/train_gpt_moe.py" --iterations=20 \
  --data="$R/examples/torch/train_gpt_moe.py" >"$OUT" 2>&1 || { cat "$OUT"; exit 1; }
sed -n 's/^\[default0\]://p' "$OUT"
/usr/bin/python3 - "$OUT" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"summary: 20 iterations, loss ([0-9.]+) -> ([0-9.]+), .* "
              r"(\d+) plan switches \(final (\d+)\.(\d+)\)", text)
assert m, "no summary line"
first, last, switches, epoch = float(m[1]), float(m[2]), int(m[3]), int(m[4])
assert last < first, f"the loss did not fall: {first} -> {last}"
assert switches >= 1 and epoch >= 1, f"never ran a controller plan: {m[0]}"
PY
# Bad flags are a clear usage error.
if PYTHONPATH="$R/python" /usr/bin/python3 "$R/examples/torch/train_gpt_moe.py" --top-k=9 \
    2>"$TEST_TMPDIR/bad.err"; then
  echo "a bad flag was accepted"; exit 1
fi
grep -q "top-k must be at most --experts" "$TEST_TMPDIR/bad.err"
# So is a planner assumption out of range, named by its keyword.
if PYTHONPATH="$R/python" /usr/bin/python3 "$R/examples/torch/train_gpt_moe.py" \
    --copy-overhead-ms=-1 --data="$R/examples/torch/train_gpt_moe.py" 2>"$TEST_TMPDIR/bad2.err"; then
  echo "a negative --copy-overhead-ms was accepted"; exit 1
fi
grep -q "copy_overhead_ms must be >= 0" "$TEST_TMPDIR/bad2.err" || { cat "$TEST_TMPDIR/bad2.err"; exit 1; }
