#!/usr/bin/env bash
# The controller's unit file: `systemd-analyze verify` finds nothing to say (any warning fails:
# verify exits 0 on unknown keys and bad values), and its offline security exposure stays low.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing" >&2; exit 1; }
UNIT="$TEST_TMPDIR/hecate-controller.service"
# verify needs ExecStart's binary to exist: point it at the one built here.
sed "s|/usr/local/bin/hecate-controller|$R/controller/hecate-controller|" \
  "$R/deploy/systemd/hecate-controller.service" > "$UNIT"
out=$(systemd-analyze verify "$UNIT" 2>&1) || { echo "$out"; exit 1; }
[[ -z "$out" ]] || { echo "systemd-analyze verify: $out"; exit 1; }
systemd-analyze security --offline=yes --threshold=20 "$UNIT" | tail -1
echo "systemd unit OK"
