#!/usr/bin/env bash
# GPU checks without Bazel: builds the CUDA kernels, their parity test, the NCCL group test, the
# expert FFN check (against PyTorch's LibTorch, CUDA when it has it) and the kernel benchmark with
# CMake, runs them, and writes a report. Meant for a GPU machine with nvcc, CMake and a Python with
# PyTorch but no Bazel and no internet; budget: under 8 minutes.
#
# With the packed dependencies (kernels/tools/pack_deps.sh, default .device-build/deps) it also builds
# the product (hecate-controller, hecate-worker, hecate, hecatectl) and trains with it: CUDA against
# CPU losses (1 rank over NCCL, 4 ranks on one GPU over Gloo; local planning, skewed routing, same
# seeds), `hecate run --device=cuda` with the embedded controller (NCCL, 1 rank; Gloo, 4 ranks), and
# a GPU-sized model's throughput, phases, peak memory and expert-GEMM efficiency; budget: 10 minutes.
#
# Usage: kernels/tools/gpu_check.sh [--report FILE] [--build-dir DIR] [--absl DIR] [--deps DIR]
#                                   [--compile-only]
#   --report FILE    where the report goes (default: $OUT/gpu_check_report.txt if $OUT is set,
#                    else <build-dir>/gpu_check_report.txt)
#   --build-dir DIR  CMake build directory (default: /tmp/hecate-gpu-check)
#   --absl DIR       Abseil headers and shared libraries (DIR/include, DIR/lib), e.g. made on a dev
#                    machine by kernels/tools/pack_absl.sh; also builds and runs the CUDA MoE layer
#                    check (default: .device-build/absl in the repository when present)
#   --deps DIR       kernels/tools/pack_deps.sh's folder (gRPC, Protocol Buffers, Abseil, ...): also
#                    builds and runs the product (default: .device-build/deps when present; it
#                    serves as --absl too)
#   --compile-only   build everything but run nothing (checks the build on a machine without GPU)
# Without a GPU (and without --compile-only) it prints "SKIPPED: ..." and exits 0.
# Exit status: 0 when every step passed (or skipped), 1 when a step failed, 2 on bad usage.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR=/tmp/hecate-gpu-check
REPORT=""
COMPILE_ONLY=0
ABSL=""
[[ -d "$ROOT/.device-build/absl/include/absl" ]] && ABSL="$ROOT/.device-build/absl"
DEPS=""
[[ -d "$ROOT/.device-build/deps/gen" ]] && DEPS="$ROOT/.device-build/deps"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --report) REPORT="$2"; shift 2 ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --compile-only) COMPILE_ONLY=1; shift ;;
    --absl) ABSL="$2"; shift 2 ;;
    --deps) DEPS="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "$REPORT" ]]; then
  if [[ -n "${OUT:-}" ]]; then REPORT="$OUT/gpu_check_report.txt"; else REPORT="$BUILD_DIR/gpu_check_report.txt"; fi
fi
mkdir -p "$BUILD_DIR" "$(dirname "$REPORT")"
: > "$REPORT"
START=$(date +%s)
log() { echo "$*" | tee -a "$REPORT"; }
elapsed() { echo $(( $(date +%s) - START )); }

log "# Hecate GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname)"
log "# commit ${HECATE_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"

# 1. Is there a GPU?
GPU=""
if command -v nvidia-smi >/dev/null 2>&1; then
  GPU="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
fi
if [[ -z "$GPU" && $COMPILE_ONLY -eq 0 ]]; then
  log "SKIPPED: no GPU on this machine (nvidia-smi missing or lists no device); nothing built or run."
  log "         On a GPU machine run: kernels/tools/gpu_check.sh  (or --compile-only to just build here)"
  exit 0
fi
log "gpu: ${GPU:-none (compile only)}"

# 2. Toolchain: nvcc, CMake, PyTorch (optional), NCCL.
export PATH="/usr/local/cuda/bin:$PATH"
for tool in nvcc cmake; do
  if ! command -v "$tool" >/dev/null 2>&1; then log "FAILED: $tool not found"; exit 1; fi
done
log "nvcc: $(nvcc --version | tail -1)"
log "cmake: $(cmake --version | head -1)"
PY="$(command -v python3 || command -v python || true)"
TORCH_ARGS=()
NCCL_INC=""
NCCL_LIB=""
if [[ -n "$PY" ]] && TORCH_INFO="$("$PY" - 2>/dev/null <<'PYEOF'
import os, torch
from torch.utils import cpp_extension
print(";".join(cpp_extension.include_paths()))
print(";".join(cpp_extension.library_paths()))
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(1 if torch.version.cuda else 0)
print(torch.__version__, torch.version.cuda)
try:
    import nvidia.nccl as n
    base = list(n.__path__)[0]
    print(os.path.join(base, "include")); print(os.path.join(base, "lib"))
except Exception:
    print(""); print("")
PYEOF
)"; then
  mapfile -t T <<<"$TORCH_INFO"
  LIBS="c10;torch_cpu;torch"
  if [[ "${T[3]}" == 1 ]]; then LIBS="c10;c10_cuda;torch_cpu;torch_cuda;torch"; fi
  TORCH_ARGS=(-DTORCH_INCLUDE_DIRS="${T[0]}" -DTORCH_LIBRARY_DIRS="${T[1]}" -DTORCH_CXX11_ABI="${T[2]}"
              -DTORCH_LIBRARIES="$LIBS" -DTORCH_HAS_CUDA="$([[ ${T[3]} == 1 ]] && echo ON || echo OFF)")
  log "torch: ${T[4]} (LibTorch from PyTorch)"
  [[ -n "${T[5]}" && -f "${T[5]}/nccl.h" ]] && NCCL_INC="${T[5]}"
  [[ -n "${T[6]}" ]] && NCCL_LIB="$(ls "${T[6]}"/libnccl.so* 2>/dev/null | head -1)"
elif [[ -f /usr/include/torch/csrc/api/include/torch/torch.h ]]; then
  TORCH_ARGS=(-DTORCH_INCLUDE_DIRS="/usr/include;/usr/include/torch/csrc/api/include"
              -DTORCH_LIBRARY_DIRS="/usr/lib/x86_64-linux-gnu" -DTORCH_CXX11_ABI=1
              -DTORCH_LIBRARIES="c10;torch_cpu;torch" -DTORCH_HAS_CUDA=OFF)
  log "torch: Debian's CPU LibTorch (no PyTorch found); the expert FFN check runs on the CPU only"
else
  log "torch: none found; the expert FFN check is not built"
fi
# Prefer the toolkit's NCCL when PyTorch does not bring one.
for dir in /usr/local/cuda/include /usr/include; do
  [[ -z "$NCCL_INC" && -f "$dir/nccl.h" ]] && NCCL_INC="$dir"
done
for lib in /usr/local/cuda/lib/libnccl.so /usr/local/cuda/lib64/libnccl.so /usr/lib/x86_64-linux-gnu/libnccl.so; do
  [[ -z "$NCCL_LIB" && -e "$lib" ]] && NCCL_LIB="$lib"
done
log "nccl: include ${NCCL_INC:-missing}, library ${NCCL_LIB:-missing}"
[[ -n "$DEPS" && -z "$ABSL" ]] && ABSL="$DEPS"
log "absl: ${ABSL:-none (the CUDA MoE layer check is not built; see --absl)}"
log "deps: ${DEPS:-none (the product is not built; see --deps)}"
PY_INCLUDE=""
if [[ -n "$PY" ]]; then
  PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)"
  [[ -f "$PY_INCLUDE/Python.h" ]] || PY_INCLUDE=""
fi
log "python headers: ${PY_INCLUDE:-none (the PyTorch front end is not built)}"

# 3. Build.
JOBS="$(nproc 2>/dev/null || echo 2)"
log ""
log "## build ($JOBS jobs)"
if ! cmake -S "$ROOT/kernels/tools" -B "$BUILD_DIR" -DHECATE_ROOT="$ROOT" \
      -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DNCCL_INCLUDE_DIR="$NCCL_INC" \
      -DNCCL_LIBRARY="$NCCL_LIB" -DHECATE_ABSL_DIR="$ABSL" -DHECATE_DEPS_DIR="$DEPS" -DHECATE_PYTHON_INCLUDE="$PY_INCLUDE" "${TORCH_ARGS[@]}" >"$BUILD_DIR/cmake.log" 2>&1; then
  tail -30 "$BUILD_DIR/cmake.log" | tee -a "$REPORT"
  log "FAILED: cmake configure (full log: $BUILD_DIR/cmake.log)"
  exit 1
fi
if ! cmake --build "$BUILD_DIR" -j "$JOBS" >"$BUILD_DIR/build.log" 2>&1; then
  grep -E "error|Error" "$BUILD_DIR/build.log" | head -30 | tee -a "$REPORT"
  log "FAILED: build (full log: $BUILD_DIR/build.log)"
  exit 1
fi
log "built in $(elapsed) s: $(cd "$BUILD_DIR" && ls kernels_parity_test kernel_bench nccl_group_test expert_ffn_check moe_layer_cuda_check nccl_communicator_test bin/controller/hecate-controller bin/worker/hecate-worker bin/clients/hecate bin/clients/hecatectl bin/python/hecate/_C.so 2>/dev/null | tr '\n' ' ')"
if [[ $COMPILE_ONLY -eq 1 ]]; then
  log "compile-only: nothing run"
  exit 0
fi

# 4. Run: tests first, benchmark last; each with a time limit.
FAILED=()
step() {
  local name="$1" limit="$2"; shift 2
  log ""
  log "## $name"
  if [[ ! -x "$BUILD_DIR/$name" ]]; then log "not built"; FAILED+=("$name(not built)"); return; fi
  local t0=$(date +%s)
  timeout "$limit" "$BUILD_DIR/$name" "$@" 2>&1 | tee -a "$REPORT"
  local rc=${PIPESTATUS[0]}
  log "-- $name: exit $rc in $(( $(date +%s) - t0 )) s"
  [[ $rc -eq 0 ]] || FAILED+=("$name(exit $rc)")
}
step kernels_parity_test 120
step nccl_group_test 120
step expert_ffn_check 180
if [[ -n "$ABSL" ]]; then
  step moe_layer_cuda_check 180
  [[ -x "$BUILD_DIR/nccl_communicator_test" ]] && step nccl_communicator_test 120
fi
step kernel_bench 180
if [[ -n "$DEPS" ]]; then
  # shellcheck source=kernels/tools/gpu_product_runs.sh
  source "$ROOT/kernels/tools/gpu_product_runs.sh"
fi

log ""
if [[ ${#FAILED[@]} -eq 0 ]]; then
  log "RESULT: all GPU checks passed in $(elapsed) s on ${GPU}"
  exit 0
fi
log "RESULT: failed: ${FAILED[*]} ($(elapsed) s)"
exit 1
