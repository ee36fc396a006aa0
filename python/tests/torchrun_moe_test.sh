#!/usr/bin/env bash
# Four ranks under torchrun (python3 -m torch.distributed.run, Debian's python3-torch) train two
# hecate.torch.MoE layers against a plain PyTorch reference (python/tests/torchrun_moe.py); the
# plans must change (versions rise, copies appear) and agree on every rank.
#   torchrun_moe_test.sh               local planning, 8 iterations
#   torchrun_moe_test.sh --controller  a hecate-controller started here, 20 iterations: the ranks
#                                      register, report, and train on the controller's plans
#   torchrun_moe_test.sh --fastermoe   local planning under the fastermoe policy, the planners
#                                      assuming slow experts: hot experts are shadowed (spAG bytes
#                                      flow) and the gradients still equal the reference
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
source "$R/python/tests/lib.sh"
PORT=$(free_port)
export HECATE_MASTER_PORT=$(free_port)
OUT="$TEST_TMPDIR/out.txt"
ITERATIONS=8
POLICY=hecate
if [[ "${1:-}" == "--controller" ]]; then
  ITERATIONS=20
  start_controller
  echo "controller at $HECATE_CONTROLLER"
elif [[ "${1:-}" == "--fastermoe" ]]; then
  POLICY=fastermoe
  export HECATE_TEST_POLICY=fastermoe HECATE_TEST_DEVICE_GFLOPS=0.0001
fi
export HECATE_TEST_ITERATIONS=$ITERATIONS
# --redirects/--tee: Debian's torch 1.13 on Python 3.11 cannot parse their default, 0 (docs/python.md).
PYTHONPATH="$R/python" /usr/bin/python3 -m torch.distributed.run --nnodes=1 --nproc_per_node=4 \
  --redirects=1 --tee=1 --log_dir="$TEST_TMPDIR/logs" \
  --master_addr=127.0.0.1 --master_port="$PORT" "$R/python/tests/torchrun_moe.py" >"$OUT" 2>&1 ||
  { cat "$OUT"; exit 1; }
grep -v '^\[W' "$OUT" | tail -6
grep -q "OK 4 ranks, $ITERATIONS iterations" "$OUT"
/usr/bin/python3 - "$OUT" "${HECATE_CONTROLLER:-}" "$POLICY" <<'PY'
import ast, sys
text, controller, policy = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
def field(name):
    return ast.literal_eval(text.split(name + " ", 1)[1].splitlines()[0])
versions, epochs, copies = field("plan versions"), field("plan epochs"), field("copies")
ids = list(zip(epochs, versions))
assert ids == sorted(ids), f"plans went back: {ids}"
if policy == "fastermoe":
    # Shadows are decided after each gate and are not in the plan: the broadcast bytes show them.
    assert field("spag bytes") > 0, "no expert was shadowed"
    print("plans:", ids, "spAG bytes:", field("spag bytes"))
    sys.exit(0)
assert len(set(ids)) > 1, f"the plan never changed: {ids}"
assert max(copies) > 0, f"no plan had a copy: {copies}"
if controller:
    assert epochs[-1] >= 1, f"never ran a controller plan: {ids}"
else:
    assert max(epochs) == 0, f"a controller plan without a controller: {ids}"
print("plans:", ids, "copies:", copies)
PY
