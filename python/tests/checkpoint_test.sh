#!/usr/bin/env bash
# hecate.state_dict() / load_state_dict() on 2 torchrun ranks: a run resumed from the checkpoint
# taken after iteration 6 reproduces the losses of iterations 6..11 (python/tests/checkpoint_moe.py).
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
source "$R/python/tests/lib.sh"
run() {
  HECATE_MASTER_PORT=$(free_port) PYTHONPATH="$R/python" /usr/bin/python3 -m torch.distributed.run \
    --nnodes=1 --nproc_per_node=2 --redirects=1 --tee=1 --log_dir="$TEST_TMPDIR/logs-$1" \
    --master_addr=127.0.0.1 --master_port="$(free_port)" "$R/python/tests/checkpoint_moe.py" \
    "$1" "$TEST_TMPDIR" >"$TEST_TMPDIR/$1.out" 2>&1 || { cat "$TEST_TMPDIR/$1.out"; exit 1; }
  sed -n 's/^\[default0\]://p' "$TEST_TMPDIR/$1.out"
}
run full
run resume
/usr/bin/python3 - "$TEST_TMPDIR" <<'PY'
import sys
d = sys.argv[1]
full = [float(v) for v in open(f"{d}/full.losses")]
resumed = [float(v) for v in open(f"{d}/resume.losses")]
assert len(full) == 12 and len(resumed) == 6, (len(full), len(resumed))
for i, (a, b) in enumerate(zip(full[6:], resumed)):
    assert abs(a - b) <= 1e-9 * abs(a), f"iteration {6 + i}: {a} resumed as {b}"
print("resumed losses equal:", resumed)
PY
