#!/usr/bin/env bash
# promtool checks of deploy/prometheus: rules and alerts parse, every alert's unit tests pass (each
# alert firing and not firing), the example configurations are valid, and every alert carries the
# mixin-style labels and annotations with a runbook that exists in docs/operations.md.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
D="$R/deploy/prometheus"
command -v promtool >/dev/null || { echo "promtool missing: run scripts/setup.sh" >&2; exit 1; }
promtool check rules "$D/hecate-rules.yml" "$D/hecate-alerts.yml"
(cd "$D/tests" && promtool test rules hecate-alerts-test.yml)
cp "$D"/*.yml "$TEST_TMPDIR/"
promtool check config "$TEST_TMPDIR/prometheus.yml"
# Debian's Prometheus is built without Kubernetes service discovery: check the rest of the
# Kubernetes example with its kubernetes_sd_configs swapped for an empty static list.
/usr/bin/python3 - "$TEST_TMPDIR/prometheus-kubernetes.yml" <<'PY'
import sys, yaml
path = sys.argv[1]
cfg = yaml.safe_load(open(path))
for job in cfg["scrape_configs"]:
    sd = job.pop("kubernetes_sd_configs")
    assert sd and all(s["role"] in ("endpoints", "pod", "service") for s in sd), job["job_name"]
    job["static_configs"] = [{"targets": []}]
yaml.safe_dump(cfg, open(path, "w"))
PY
promtool check config "$TEST_TMPDIR/prometheus-kubernetes.yml"
/usr/bin/python3 - "$D/hecate-alerts.yml" "$D/tests/hecate-alerts-test.yml" "$R/docs/operations.md" <<'PY'
import re, sys, yaml
alerts = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]]
tests = open(sys.argv[2]).read()
docs = open(sys.argv[3]).read()
runbooks = docs[docs.index("\n## Runbooks"):]
assert alerts, "no alerts"
for a in alerts:
    name = a["alert"]
    assert re.fullmatch(r"Hecate[A-Z][A-Za-z]+", name), name
    assert a["labels"]["severity"] in ("critical", "warning", "info"), name
    for key in ("summary", "description", "runbook_url"):
        assert a["annotations"].get(key), (name, key)
    assert a["annotations"]["runbook_url"] == "docs/operations.md#" + name.lower(), name
    assert "\n### %s\n" % name in runbooks, (name, "no runbook section in docs/operations.md")
    # Each alert has a unit test in which it fires and one in which it does not.
    assert re.search(r"alertname: %s\n\s+exp_alerts: \[\]" % name, tests), (name, "never tested quiet")
    assert re.search(r"alertname: %s\n\s+exp_alerts:\n" % name, tests), (name, "never tested firing")
print(len(alerts), "alerts checked")
PY
echo "prometheus rules OK"
