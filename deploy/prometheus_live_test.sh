#!/usr/bin/env bash
# A real Prometheus scraping a short `hecate run` (controller and every worker, through
# `hecate run --prometheus` with the shipped rules and alerts): every dashboard panel query,
# every template-variable query and every recording rule returns data, and every alert expression
# evaluates without error, at a moment the job was running. Prints the series count of the run.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
command -v prometheus >/dev/null || { echo "prometheus missing: run scripts/setup.sh" >&2; exit 1; }
WORKERS=${HECATE_LIVE_WORKERS:-4}
exec 3< <(exec "$R/clients/hecate" run --prometheus --workers="$WORKERS" --iterations=40 \
  --log_every=1 --state_dir="$TEST_TMPDIR/state" 2>"$TEST_TMPDIR/run.err")
RUN=$!
trap 'kill -INT $RUN 2>/dev/null || true' EXIT
PORT="" AT=""
while IFS= read -r -t 600 line <&3; do
  echo "$line"
  case "$line" in
    *"prometheus      http://127.0.0.1:"*) PORT=${line##*127.0.0.1:}; PORT=${PORT%% *} ;;
    *"stays up"*) break ;;
  esac
  # A progress row: the job is running now, and Prometheus scraped it within the last second.
  if [[ "$line" =~ ^\ +[0-9]+\ +[0-9.]+\  ]]; then AT=$(date +%s.%N); fi
done
[[ -n "$PORT" && -n "$AT" ]] || { echo "no Prometheus or no progress; see run.err" >&2; cat "$TEST_TMPDIR/run.err" >&2; exit 1; }
URL="http://127.0.0.1:$PORT"
/usr/bin/python3 "$R/deploy/check_deploy.py" live "$URL" "$AT" "$R/deploy/grafana/dashboards" \
  "$R/deploy/prometheus/hecate-rules.yml" "$R/deploy/prometheus/hecate-alerts.yml" \
  --vars "job_id=hecate-run,layer=0,instance=.*"
for q in 'count({__name__=~"hecate_.+",job="hecate-controller"})' \
         'count({__name__=~"hecate_.+",job="hecate-workers"})' \
         'count({__name__=~"hecate_expert_tokens_total"})' \
         'count({__name__=~"hecate.+:.+"})'; do
  echo "series $q = $(curl -sf "$URL/api/v1/query" --data-urlencode "query=$q" --data-urlencode "time=$AT" \
    | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')"
done
# The metric names docs/operations.md lists are exactly the ones the run exported (histograms
# without their _bucket/_sum/_count series).
NAMES=$(curl -sf "$URL/api/v1/query" --data-urlencode 'query=group by (__name__) ({__name__=~"hecate_[a-z0-9_]+"})' \
  --data-urlencode "time=$AT" | /usr/bin/python3 -c '
import json, re, sys
names = {r["metric"]["__name__"] for r in json.load(sys.stdin)["data"]["result"]}
print(" ".join(sorted({re.sub(r"_(bucket|sum|count)$", "", n) if re.search(r"_seconds_(bucket|sum|count)$", n) else n for n in names})))')
/usr/bin/python3 "$R/deploy/check_deploy.py" metrics-doc "$R/docs/operations.md" $NAMES
kill -INT $RUN
wait $RUN || code=$?
[[ ${code:-0} -eq 0 ]] || { echo "launcher exited ${code}" >&2; exit 1; }
trap - EXIT
echo "prometheus live OK"
