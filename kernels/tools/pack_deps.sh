#!/usr/bin/env bash
# Packs what the product build on a GPU machine needs and that machine lacks (it has nvcc, CMake and
# PyTorch, but no Bazel, no Debian packages and no internet): this machine's headers and shared
# libraries of Abseil, gRPC, Protocol Buffers, prometheus-cpp, Gloo, SQLite and OpenSSL (each
# library under its SONAME, plus every library they load that is not part of glibc or the compiler
# runtime), and the C++ sources protoc generated for proto/ (built here with Bazel). The GPU
# machine then needs nothing else: kernels/tools/gpu_check.sh --deps DIR (default
# .device-build/deps) builds hecate-controller, hecate-worker, hecate and hecatectl with CMake
# against PyTorch's LibTorch and NCCL. Pass the folder along, e.g. the device tool's `carry`.
#
# Usage: kernels/tools/pack_deps.sh [DEST]   (default: .device-build/deps; about 40 MB)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-$ROOT/.device-build/deps}"
case "${1:-}" in -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
LIBDIR=/usr/lib/x86_64-linux-gnu
for h in absl grpcpp google/protobuf prometheus gloo sqlite3.h openssl; do
  if [[ ! -e /usr/include/$h ]]; then
    echo "pack_deps.sh: /usr/include/$h missing (run scripts/setup.sh first)" >&2
    exit 1
  fi
done

# Generated protocol sources, from the same protoc Bazel uses.
(cd "$ROOT" && bazel build //proto:hecate_v1_codegen //proto:health_v1_codegen >/dev/null 2>&1) || {
  echo "pack_deps.sh: bazel could not generate the proto sources" >&2; exit 1; }
GEN="$(cd "$ROOT" && bazel info bazel-bin 2>/dev/null)/proto"

rm -rf "$DEST"
mkdir -p "$DEST/include" "$DEST/lib" "$DEST/gen"
for h in absl grpc grpcpp grpc++ google prometheus gloo openssl sqlite3.h sqlite3ext.h; do
  if [[ -e /usr/include/$h ]]; then cp -rL "/usr/include/$h" "$DEST/include/"; fi
done
# OpenSSL's configuration headers live in the multiarch folder.
if [[ -d /usr/include/x86_64-linux-gnu/openssl ]]; then
  cp -rL /usr/include/x86_64-linux-gnu/openssl/. "$DEST/include/openssl/"
fi
(cd "$GEN" && find . \( -name '*.pb.h' -o -name '*.pb.cc' \) -exec cp --parents {} "$DEST/gen/" \;)

# The libraries the product links (third_party/BUILD's linkopts), then their own dependencies.
NAMES="grpc++ grpc++_reflection grpc gpr address_sorting upb re2 cares ssl crypto z protobuf
       prometheus-cpp-pull prometheus-cpp-core gloo sqlite3"
QUEUE=()
for n in $NAMES; do
  # Debian's libgloo-dev installs into /usr/lib, not the multiarch folder.
  if [[ -e "$LIBDIR/lib$n.so" ]]; then QUEUE+=("$LIBDIR/lib$n.so"); else QUEUE+=("/usr/lib/lib$n.so"); fi
done
for so in "$LIBDIR"/libabsl_*.so; do QUEUE+=("$so"); done
declare -A SEEN LOCATE
while read -r name path; do LOCATE[$name]="$path"; done < <(ldconfig -p | awk '/x86-64/ {print $1, $NF}')
# Part of every Linux (glibc, the compiler runtime): never packed.
SYSTEM='^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux-x86-64|linux-vdso)\.so'
while [[ ${#QUEUE[@]} -gt 0 ]]; do
  so="${QUEUE[0]}"; QUEUE=("${QUEUE[@]:1}")
  real="$(readlink -f "$so")"
  [[ -f "$real" ]] || { echo "pack_deps.sh: $so missing" >&2; exit 1; }
  soname="$(objdump -p "$real" | awk '/SONAME/ {print $2}')"
  [[ -n "$soname" ]] || soname="$(basename "$so")"
  [[ -n "${SEEN[$soname]:-}" ]] && continue
  SEEN[$soname]=1
  cp -L "$real" "$DEST/lib/$soname"
  # The link-time name too (libfoo.so), so -lfoo finds it.
  base="$(basename "$so")"
  if [[ "$base" == *.so && "$base" != "$soname" && ! -e "$DEST/lib/$base" ]]; then
    ln -s "$soname" "$DEST/lib/$base"
  fi
  while read -r need; do
    [[ "$need" =~ $SYSTEM ]] && continue
    dep="${LOCATE[$need]:-}"
    if [[ -n "$dep" ]]; then QUEUE+=("$dep"); fi
  done < <(objdump -p "$real" | awk '/NEEDED/ {print $2}')
done
echo "packed $(ls "$DEST/lib" | wc -l) libraries, the headers and $(find "$DEST/gen" -name '*.cc' | wc -l) generated sources into $DEST ($(du -sh "$DEST" | cut -f1))"
