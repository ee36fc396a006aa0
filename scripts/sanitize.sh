#!/usr/bin/env bash
# The controller, agent, communicator and multi-process job tests under AddressSanitizer and
# UBSan (--config=asan, GCC), in their own Bazel output base so the default build's cache is kept.
# Any report fails the test (halt_on_error / abort_on_error).
#
#   scripts/sanitize.sh [BAZEL TEST TARGETS...]
#   scripts/sanitize.sh --tsan [BAZEL TEST TARGETS...]   ThreadSanitizer instead (--config=tsan,
#                                                        its own output base; see
#                                                        docs/operations.md "Sanitizers")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG=asan
if [[ "${1:-}" == "--tsan" ]]; then
  CONFIG=tsan
  shift
fi
OB=${HECATE_SANITIZE_OUTPUT_BASE:-$HOME/.cache/hecate-$CONFIG-bazel}
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 && $CONFIG == asan ]]; then
  TARGETS=(//controller/... //worker/agent/... //worker/comm/... //tests:job_test
           //tests:controller_restart_test //tests:launcher_test //wire/... //placement/...)
elif [[ ${#TARGETS[@]} -eq 0 ]]; then
  TARGETS=(//worker/comm:communicator_test //worker/agent/... //controller/service:controller_service_test)
fi
bazel --output_base="$OB" test --config="$CONFIG" "${TARGETS[@]}"
