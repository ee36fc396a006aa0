#!/usr/bin/env bash
# A live controller's /metrics scrape passes `promtool check metrics`, after the Python client
# registered workers and streamed reports (so labelled series exist), and carries the metric names
# DESIGN.md §10 promises.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
CTRL="$R/controller/hecate-controller"
export PYTHONPATH="$R/proto"
STATE="$TEST_TMPDIR/metrics_state"
command -v promtool >/dev/null || { echo "promtool missing: run scripts/setup.sh" >&2; exit 1; }

exec 3< <(exec "$CTRL" --listen=127.0.0.1:0 --metrics-listen=127.0.0.1:0 --state-dir="$STATE" \
  --metrics-expert-detail=on 2>"$TEST_TMPDIR/controller.log")
CTRL_PID=$!
trap 'kill $CTRL_PID 2>/dev/null || true' EXIT
read -r -t 30 line <&3; ADDR=${line#listening on }
read -r -t 30 line <&3; METRICS=${line#metrics on }
echo "controller $ADDR, metrics $METRICS"

/usr/bin/python3 "$R/clients/python/hecate_client.py" --controller "$ADDR" demo --workers 4 --iterations 3
# A plan exists once the planner ran: watch until the first one arrives (blocking, with a deadline).
timeout 30 /usr/bin/python3 "$R/clients/python/hecate_client.py" --controller "$ADDR" watch --job demo \
  --count 1

curl -sf "http://$METRICS/metrics" > "$TEST_TMPDIR/metrics.txt"
promtool check metrics < "$TEST_TMPDIR/metrics.txt"
for name in hecate_build_info hecate_controller_epoch hecate_plan_version \
    hecate_plans_published_total hecate_plan_compute_duration_seconds_bucket \
    'hecate_reports_received_total{result="accepted"} 12' 'hecate_workers{state="live"} 4' \
    hecate_layer_balancedness_ratio hecate_layer_expert_load_ratio \
    hecate_layer_predicted_balancedness_ratio hecate_plan_materialized_bytes \
    hecate_plan_migration_bytes_total hecate_expert_tokens_total; do
  grep -qF "$name" "$TEST_TMPDIR/metrics.txt" || { echo "missing: $name" >&2; exit 1; }
done
kill -TERM $CTRL_PID
wait $CTRL_PID
echo "metrics OK"
