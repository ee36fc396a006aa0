#!/usr/bin/env bash
# The controller, agent, communicator and multi-process job tests under AddressSanitizer and
# UBSan (--config=asan, GCC), in their own Bazel output base so the default build's cache is kept.
# Any report fails the test (halt_on_error / abort_on_error).
#
#   scripts/sanitize.sh [BAZEL TEST TARGETS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OB=${HECATE_SANITIZE_OUTPUT_BASE:-$HOME/.cache/hecate-asan-bazel}
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(
  //controller/... //worker/agent/... //worker/comm/... //tests:job_test
  //tests:controller_restart_test //tests:launcher_test //wire/... //placement/...)
bazel --output_base="$OB" test --config=asan "${TARGETS[@]}"
