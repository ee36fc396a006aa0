#!/usr/bin/env bash
# Installs every system package Hecate needs to build, test and run, from Debian's apt registry.
#
# Idempotent: when every package is already installed it only checks (well under a second) and exits 0.
# Fails loudly, with apt's own message, when a package cannot be installed.
#
# Usage: scripts/setup.sh [--check]   (--check: report what is missing, install nothing; exit 1 if any)
set -euo pipefail

PACKAGES=(
  # toolchain and offline Bazel (see third_party/README.md for the shims)
  build-essential pkg-config bazel-bootstrap bazel-rules-java
  # gRPC, protobuf, Abseil
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev libgrpc-dev libabsl-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # worker data plane: LibTorch (CPU), a fast BLAS, Gloo
  libtorch-dev libopenblas0-pthread libgloo-dev
  # metrics and the Prometheus server (promtool, real scrapes in tests)
  prometheus-cpp-dev prometheus
  # durable controller state
  libsqlite3-dev
  # Python client (run with /usr/bin/python3)
  python3-grpcio python3-protobuf
  # the PyTorch front end (python/): Debian's torch (the same LibTorch 1.13) and pybind11
  python3-torch pybind11-dev python3-dev
  # plots for bench/paper
  python3-matplotlib
  # the default training text (Debian's fortune quotes)
  fortunes
  # network namespace for offline CI builds (unshare, ip)
  util-linux iproute2 curl
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "setup: missing: ${missing[*]}" >&2
  exit 1
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi

echo "setup: installing ${#missing[@]} package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -q; then
  echo "setup: apt-get update failed (see apt's message above)" >&2
  exit 1
fi
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  echo "setup: apt-get install failed for: ${missing[*]} (see apt's message above)" >&2
  exit 1
fi
echo "setup: done"
