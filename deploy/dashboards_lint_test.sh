#!/usr/bin/env bash
# Dashboard lint: unique uids and panel ids, the ${datasource} variable on every panel, query and
# template variable, no hard-coded instances.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
/usr/bin/python3 "$R/deploy/check_deploy.py" lint-dashboards "$R/deploy/grafana/dashboards"
