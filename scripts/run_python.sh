#!/usr/bin/env bash
# ./hecate run --frontend=python: the PyTorch front end's example (examples/torch/train_gpt_moe.py)
# under torchrun, against an embedded controller (or --controller=HOST:PORT), on this host.
#
#   scripts/run_python.sh [--workers=N] [--controller=HOST:PORT] [-- EXAMPLE FLAGS]
#
# --workers: ranks (default: one per available core, at least 2). Expects //python:hecate and
# //controller:hecate-controller built (./hecate run builds them).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKERS=0
CONTROLLER=""
EXAMPLE=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workers=*) WORKERS=${1#--workers=} ;;
    --controller=*) CONTROLLER=${1#--controller=} ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
               PYTHONPATH="$ROOT/bazel-bin/python" /usr/bin/python3 \
                 "$ROOT/examples/torch/train_gpt_moe.py" --help | sed 1,2d
               exit 0 ;;
    --) shift; EXAMPLE+=("$@"); break ;;
    *) EXAMPLE+=("$1") ;;
  esac
  shift
done
if ! [[ "$WORKERS" =~ ^[0-9]+$ ]]; then
  echo "hecate run --frontend=python: --workers must be a number, got '$WORKERS'" >&2
  exit 2
fi
[[ "$WORKERS" -gt 0 ]] || WORKERS=$(( $(nproc) < 2 ? 2 : $(nproc) ))
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
STATE=$(mktemp -d /tmp/hecate-python-run.XXXXXX)
CONTROLLER_PID=""
cleanup() {
  [[ -n "$CONTROLLER_PID" ]] && kill "$CONTROLLER_PID" 2>/dev/null || true
  rm -rf "$STATE"
}
trap cleanup EXIT
if [[ -z "$CONTROLLER" ]]; then
  exec 3< <(exec "$ROOT/bazel-bin/controller/hecate-controller" --listen=127.0.0.1:0 --metrics_listen= \
    --state_dir="$STATE/state" 2>"$STATE/controller.log")
  CONTROLLER_PID=$!
  if ! read -r -t 60 line <&3; then
    echo "hecate run --frontend=python: the controller did not start:" >&2
    cat "$STATE/controller.log" >&2
    exit 1
  fi
  CONTROLLER=${line##*listening on }
fi
echo "controller      $CONTROLLER"
echo "ranks           $WORKERS (torchrun)"
PORT=$(free_port)
export HECATE_MASTER_PORT=$(free_port) HECATE_CONTROLLER=$CONTROLLER
# The planners assume this machine's rates, as `hecate run` tells its C++ workers
# (DefaultWorkerFlags in clients/hecate_main.cc); the user's flags after them win.
MACHINE=(--attention-ms=0 --device-gflops=90 --link-gbytes=2.4 --copy-overhead-ms=4
         --reshard-period=10)
# --redirects/--tee: Debian's torch 1.13 on Python 3.11 cannot parse their default (docs/python.md).
PYTHONPATH="$ROOT/bazel-bin/python" /usr/bin/python3 -m torch.distributed.run --nnodes=1 \
  --nproc_per_node="$WORKERS" --redirects=1 --tee=1 --log_dir="$STATE/logs" \
  --master_addr=127.0.0.1 --master_port="$PORT" "$ROOT/examples/torch/train_gpt_moe.py" \
  "${MACHINE[@]}" "${EXAMPLE[@]}" 2> >(grep -v '^\[W\|^WARNING\|^\*\*\*\|OMP_NUM_THREADS' >&2) |
  sed -n 's/^\[default0\]://p'
