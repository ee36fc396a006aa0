#!/usr/bin/env bash
# Copies this machine's Abseil (Debian's libabsl-dev 20220623: headers and shared libraries) into
# .device-build/absl, so kernels/tools/gpu_check.sh can build the MoE layer and the NCCL
# communicator on a GPU machine that has no Abseil (pass the folder along, e.g. the device tool's
# `carry`). About 6 MB. Usage: kernels/tools/pack_absl.sh [DEST]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-$ROOT/.device-build/absl}"
if [[ ! -d /usr/include/absl ]]; then
  echo "pack_absl.sh: /usr/include/absl missing (run scripts/setup.sh first)" >&2
  exit 1
fi
rm -rf "$DEST"
mkdir -p "$DEST/include" "$DEST/lib"
cp -r /usr/include/absl "$DEST/include/"
# Real files under their SONAME (libabsl_x.so.20220623): no symlinks to lose in transfer.
for so in /usr/lib/x86_64-linux-gnu/libabsl_*.so; do
  soname="$(objdump -p "$so" | awk '/SONAME/ {print $2}')"
  cp -L "$so" "$DEST/lib/$soname"
done
echo "packed $(ls "$DEST/lib" | wc -l) libraries and the headers into $DEST ($(du -sh "$DEST" | cut -f1))"
