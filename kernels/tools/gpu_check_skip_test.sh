#!/usr/bin/env bash
# gpu_check.sh on a machine without a GPU: exits 0, says SKIPPED, writes the report, builds
# nothing; and rejects an unknown flag with exit 2. (On a GPU machine the script runs for real.)
set -u
SCRIPT="$TEST_SRCDIR/hecate/kernels/tools/gpu_check.sh"
TMP="${TEST_TMPDIR:-/tmp}"
fail() { echo "FAIL: $*"; exit 1; }

# Hide nvidia-smi even if this machine had one: only coreutils, git and bash on PATH.
mkdir -p "$TMP/bin"
for t in bash date dirname tee sed head tail cat mkdir hostname git ls tr nproc grep; do
  p="$(command -v "$t")" && ln -sf "$p" "$TMP/bin/$t"
done
out="$(PATH="$TMP/bin" "$SCRIPT" --report "$TMP/report.txt" --build-dir "$TMP/build" 2>&1)"
rc=$?
[[ $rc -eq 0 ]] || fail "exit $rc without a GPU: $out"
grep -q "^SKIPPED: no GPU" <<<"$out" || fail "no SKIPPED line: $out"
grep -q "^SKIPPED: no GPU" "$TMP/report.txt" || fail "report lacks the SKIPPED line"
[[ ! -e "$TMP/build/CMakeCache.txt" ]] || fail "built something while skipping"

PATH="$TMP/bin" "$SCRIPT" --bogus >/dev/null 2>&1
rc=$?
[[ $rc -eq 2 ]] || fail "unknown flag gave exit $rc, want 2"
echo "PASS"
