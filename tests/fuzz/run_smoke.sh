#!/usr/bin/env bash
# Smoke run of one fuzz harness over its seed corpus and seeded mutations (tests/fuzz/fuzz.bzl):
#   run_smoke.sh HARNESS --mutations=N CORPUS_FILE...
set -euo pipefail
exec "$@"
