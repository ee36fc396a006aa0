#!/usr/bin/env bash
# Builds and runs every test with networking disabled (a fresh network namespace with only
# loopback), so a build step that tries to download fails here instead of passing on a warm
# machine. Prints "N passed, N failed" (test cases, from each test target's test.xml) last and
# exits non-zero on any failure.
#
# Usage: scripts/test.sh [bazel test targets and flags]   (default: //...)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="/usr/local/cuda/bin:$PATH"

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(//...)

bep=$(mktemp /tmp/hecate-bep.XXXXXX.json)
trap 'rm -f "$bep"' EXIT

# A Bazel server started outside the namespace would keep its network: stop it first so the
# server that builds and tests is born inside the offline namespace.
bazel shutdown >/dev/null 2>&1 || true

quoted=$(printf ' %q' "${targets[@]}")
if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null; then
  unshare -n bash -c "ip link set lo up && bazel test --build_event_json_file=$bep $quoted"
  rc=$?
  bazel shutdown >/dev/null 2>&1 || true
else
  echo "test: not root, running with the network on (unshare -n needs root)" >&2
  bazel test --build_event_json_file="$bep" "${targets[@]}"
  rc=$?
fi

/usr/bin/python3 scripts/test_summary.py "$bep"
summary_rc=$?
[[ $rc -eq 0 && $summary_rc -eq 0 ]] || exit 1
