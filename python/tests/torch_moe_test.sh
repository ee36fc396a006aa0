#!/usr/bin/env bash
# hecate.torch.MoE against a plain PyTorch MoE (python/tests/torch_moe_test.py), with
# /usr/bin/python3 and Debian's python3-torch.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
PYTHONPATH="$R/python" exec /usr/bin/python3 "$R/python/tests/torch_moe_test.py"
