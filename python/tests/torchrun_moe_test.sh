#!/usr/bin/env bash
# Four ranks under torchrun (python3 -m torch.distributed.run, Debian's python3-torch) train two
# hecate.torch.MoE layers against a plain PyTorch reference (python/tests/torchrun_moe.py); the
# local planner's plans must change (versions rise, copies appear) and agree on every rank.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
export HECATE_MASTER_PORT=$(free_port)
OUT="$TEST_TMPDIR/out.txt"
# --redirects/--tee: Debian's torch 1.13 on Python 3.11 cannot parse their default, 0 (docs/python.md).
PYTHONPATH="$R/python" /usr/bin/python3 -m torch.distributed.run --nnodes=1 --nproc_per_node=4 \
  --redirects=1 --tee=1 --log_dir="$TEST_TMPDIR/logs" \
  --master_addr=127.0.0.1 --master_port="$PORT" "$R/python/tests/torchrun_moe.py" >"$OUT" 2>&1 ||
  { cat "$OUT"; exit 1; }
grep -v '^\[W' "$OUT" | tail -5
grep -q "OK 4 ranks, 8 iterations" "$OUT"
# Plans changed: more than one version, and some iteration ran with copies.
/usr/bin/python3 - "$OUT" <<'PY'
import ast, sys
text = open(sys.argv[1]).read()
versions = ast.literal_eval(text.split("plan versions ", 1)[1].splitlines()[0])
copies = ast.literal_eval(text.split("copies ", 1)[1].splitlines()[0])
assert len(set(versions)) > 1, f"the plan never changed: {versions}"
assert versions == sorted(versions), f"plan versions went back: {versions}"
assert max(copies) > 0, f"no plan had a copy: {copies}"
print("plans changed:", versions, "copies:", copies)
PY
