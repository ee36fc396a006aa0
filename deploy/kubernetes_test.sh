#!/usr/bin/env bash
# The Kubernetes manifests parse and hold together (deploy/check_deploy.py kubernetes): one
# controller replica with its state dir on a persistent volume and gRPC health probes, Services
# that select real pods and ports, resources on every container, the PrometheusRule and the
# dashboards ConfigMap identical to deploy/prometheus and deploy/grafana.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
/usr/bin/python3 "$R/deploy/check_deploy.py" kubernetes "$R/deploy/kubernetes"
