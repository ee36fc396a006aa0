#!/usr/bin/env python3
"""Offline and live checks of deploy/ (used by the Bazel tests in deploy/BUILD).

  check_deploy.py lint-dashboards DASHBOARD_DIR
      unique uids and panel ids, a ${datasource} variable used by every panel and target, no
      hard-coded instances or addresses, every target has a query.
  check_deploy.py live PROMETHEUS_URL TIME DASHBOARD_DIR RULE_FILE... --vars k=v,...
      evaluates every dashboard panel query, every template-variable query and every recording
      rule at TIME through Prometheus's HTTP API (each must succeed and return data), and every
      alert expression (each must succeed); prints one line per query.
  check_deploy.py kubernetes MANIFEST_DIR
      structural validation of the Kubernetes manifests.
  check_deploy.py generate-kubernetes DEPLOY_DIR
      writes kubernetes/prometheusrule.yaml and grafana-dashboards.yaml from the rules and
      dashboards (kubernetes checks that they are up to date).
  check_deploy.py metrics-doc OPERATIONS_MD METRIC_NAME...
      the metric names in docs/operations.md's "Metrics" section are exactly the exported ones.
"""
import glob
import json
import os
import re
import sys
import urllib.parse
import urllib.request

import yaml


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def dashboards(directory):
    files = sorted(glob.glob(os.path.join(directory, "*.json")))
    if not files:
        fail("no dashboards in " + directory)
    return [(f, json.load(open(f))) for f in files]


def panels(d):
    for p in d.get("panels", []):
        yield p
        for inner in p.get("panels", []):  # collapsed rows
            yield inner


def lint_dashboards(directory):
    uids = set()
    for path, d in dashboards(directory):
        name = os.path.basename(path)
        uid = d.get("uid")
        if not uid or uid in uids:
            fail("%s: missing or duplicate uid %r" % (name, uid))
        uids.add(uid)
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        ds = variables.get("datasource")
        if ds is None or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            fail("%s: no Prometheus ${datasource} variable" % name)
        ids = set()
        for p in panels(d):
            if p.get("type") == "row":
                continue
            if p["id"] in ids:
                fail("%s: duplicate panel id %s" % (name, p["id"]))
            ids.add(p["id"])
            if p.get("datasource", {}).get("uid") != "${datasource}":
                fail("%s: panel %r does not use ${datasource}" % (name, p.get("title")))
            if not p.get("targets"):
                fail("%s: panel %r has no query" % (name, p.get("title")))
            for t in p["targets"]:
                expr = t.get("expr", "")
                if not expr.strip():
                    fail("%s: panel %r has an empty query" % (name, p.get("title")))
                if t.get("datasource", {}).get("uid") != "${datasource}":
                    fail("%s: a query of %r does not use ${datasource}" % (name, p.get("title")))
                if re.search(r'instance\s*=~?\s*"(?!\$)', expr) or re.search(r"\d+\.\d+\.\d+\.\d+", expr):
                    fail("%s: panel %r hard-codes an instance: %s" % (name, p.get("title"), expr))
        for v in variables.values():
            if v["type"] == "query" and v.get("datasource", {}).get("uid") != "${datasource}":
                fail("%s: variable %s does not use ${datasource}" % (name, v["name"]))
    print("%d dashboards, %d uids: OK" % (len(uids), len(uids)))


def substitute(expr, values):
    for k in sorted(values, key=len, reverse=True):
        expr = expr.replace("${%s}" % k, values[k]).replace("$" + k, values[k])
    return expr


def variable_query(q):
    """label_values(metric{...}, label) -> a PromQL query returning that label's values."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q)
    if m:
        return "group by (%s) (%s)" % (m.group(2), m.group(1))
    return q


def query(url, expr, at):
    data = urllib.parse.urlencode({"query": expr, "time": at}).encode()
    try:
        with urllib.request.urlopen(url + "/api/v1/query", data, timeout=30) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    if body.get("status") != "success":
        return None, body.get("error", "unknown error")
    return body["data"]["result"], None


def live(url, at, directory, rule_files, values):
    failures = 0
    checked = 0

    def check(kind, where, expr, need_data):
        nonlocal failures, checked
        checked += 1
        result, error = query(url, expr, at)
        if error is not None:
            print("FAIL %s %s: error %s: %s" % (kind, where, error, expr))
            failures += 1
        elif need_data and not result:
            print("FAIL %s %s: no data: %s" % (kind, where, expr))
            failures += 1
        else:
            print("ok   %s %s: %d series: %s" % (kind, where, len(result), " ".join(expr.split())))

    for path, d in dashboards(directory):
        name = os.path.basename(path)
        for v in d.get("templating", {}).get("list", []):
            if v["type"] == "query":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                check("variable", "%s $%s" % (name, v["name"]), substitute(variable_query(q), values), True)
        for p in panels(d):
            for t in p.get("targets", []):
                check("panel", "%s %r" % (name, p["title"]), substitute(t["expr"], values), True)
    for f in rule_files:
        for g in yaml.safe_load(open(f))["groups"]:
            for r in g["rules"]:
                if "record" in r:
                    check("record", r["record"], r["expr"], True)
                else:
                    check("alert", r["alert"], r["expr"], False)
    print("%d queries, %d failed" % (checked, failures))
    if failures:
        sys.exit(1)


def kubernetes(directory):
    docs = []
    for f in sorted(glob.glob(os.path.join(directory, "*.yaml"))):
        for d in yaml.safe_load_all(open(f)):
            if d is not None:
                docs.append((os.path.basename(f), d))
    if not docs:
        fail("no manifests in " + directory)
    kinds = {}
    for name, d in docs:
        for key in ("apiVersion", "kind", "metadata"):
            if key not in d:
                fail("%s: %s missing" % (name, key))
        if not d["metadata"].get("name"):
            fail("%s: %s without metadata.name" % (name, d["kind"]))
        kinds.setdefault(d["kind"], []).append((name, d))
    for kind in ("StatefulSet", "Service", "ServiceMonitor", "PrometheusRule", "NetworkPolicy",
                 "ConfigMap", "Job"):
        if kind not in kinds:
            fail("no %s among the manifests" % kind)

    def containers(d):
        spec = d["spec"]["template"]["spec"]
        return spec.get("containers", []) + spec.get("initContainers", [])

    for name, d in kinds["StatefulSet"] + kinds["Job"]:
        for c in containers(d):
            if not c.get("image") or not c.get("name"):
                fail("%s: a container without name or image" % name)
            for k in ("limits", "requests"):
                if k not in c.get("resources", {}):
                    fail("%s: container %s has no resources.%s" % (name, c["name"], k))
    sts = kinds["StatefulSet"][0][1]
    if sts["spec"].get("replicas") != 1:
        fail("the controller StatefulSet must have exactly one replica")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        if "grpc" not in c.get(probe, {}):
            fail("controller %s is not a gRPC health probe" % probe)
    if not sts["spec"].get("volumeClaimTemplates"):
        fail("the controller has no persistent volume for its state dir")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    state = [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--state-dir=")]
    if not state or state[0] not in mounts:
        fail("--state-dir is not on the persistent volume")
    # Every Service selects the pods of some workload, on ports those pods expose.
    workloads = []
    for _, d in kinds["StatefulSet"] + kinds["Job"]:
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        ports = {p["name"] for x in containers(d) for p in x.get("ports", [])}
        workloads.append((labels, ports))
    for name, svc in kinds["Service"]:
        sel = svc["spec"].get("selector", {})
        match = [ports for labels, ports in workloads
                 if sel and all(labels.get(k) == v for k, v in sel.items())]
        if not match:
            fail("%s: Service %s selects no workload's pods" % (name, svc["metadata"]["name"]))
        for p in svc["spec"].get("ports", []):
            if p.get("targetPort") not in match[0]:
                fail("%s: Service port %s targets no container port" % (name, p.get("name")))
    # The PrometheusRule and the dashboards ConfigMap are generated from deploy/prometheus and
    # deploy/grafana (`check_deploy.py generate-kubernetes deploy`); they must be up to date.
    deploy = os.path.dirname(directory.rstrip("/"))
    for f, text in generated(deploy).items():
        if open(os.path.join(directory, f)).read() != text:
            fail("%s is out of date: run deploy/check_deploy.py generate-kubernetes deploy" % f)
    print("%d manifests (%s): OK" % (len(docs), ", ".join(sorted(kinds))))


def generated(deploy):
    """The Kubernetes files derived from deploy/prometheus and deploy/grafana, by name."""
    groups = []
    for f in ("hecate-rules.yml", "hecate-alerts.yml"):
        groups += yaml.safe_load(open(os.path.join(deploy, "prometheus", f)))["groups"]
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "hecate", "namespace": "hecate",
                         "labels": {"app.kubernetes.io/part-of": "hecate"}},
            "spec": {"groups": groups}}
    data = {}
    for p in sorted(glob.glob(os.path.join(deploy, "grafana", "dashboards", "*.json"))):
        data[os.path.basename(p)] = open(p).read()
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "hecate-dashboards", "namespace": "hecate",
                       "labels": {"grafana_dashboard": "1", "app.kubernetes.io/part-of": "hecate"},
                       "annotations": {"grafana_folder": "Hecate"}},
          "data": data}
    head = "# Generated by deploy/check_deploy.py generate-kubernetes deploy from %s; do not edit.\n"
    return {
        "prometheusrule.yaml": head % "deploy/prometheus" + yaml.safe_dump(rule, sort_keys=False, width=100),
        "grafana-dashboards.yaml": head % "deploy/grafana/dashboards" + yaml.safe_dump(cm, sort_keys=False, width=100),
    }


def metrics_doc(operations_md, exported):
    text = open(operations_md).read()
    start = text.index("\n## Metrics")
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end
    documented = set(re.findall(r"`(hecate_[a-z0-9_]+)", text[start:end]))
    exported = set(exported)
    missing = exported - documented
    extra = documented - exported
    if missing or extra:
        fail("docs/operations.md Metrics: undocumented %s; documented but not exported %s"
             % (sorted(missing), sorted(extra)))
    print("%d metrics documented and exported: OK" % len(exported))


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "lint-dashboards":
        lint_dashboards(argv[2])
    elif cmd == "live":
        values = {}
        rest = argv[5:]
        if "--vars" in rest:
            i = rest.index("--vars")
            values = dict(kv.split("=", 1) for kv in rest[i + 1].split(",") if kv)
            rest = rest[:i] + rest[i + 2:]
        live(argv[2], argv[3], argv[4], rest, values)
    elif cmd == "kubernetes":
        kubernetes(argv[2])
    elif cmd == "generate-kubernetes":
        for f, text in generated(argv[2]).items():
            with open(os.path.join(argv[2], "kubernetes", f), "w") as out:
                out.write(text)
    elif cmd == "metrics-doc":
        metrics_doc(argv[2], argv[3:])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
