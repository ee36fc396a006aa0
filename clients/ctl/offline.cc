// hecatectl's offline commands (no controller needed): simulate, plan compute, trace tools.
#include "clients/ctl/offline.h"

#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "clients/ctl/ctl.h"
#include "clients/ctl/output.h"
#include "clients/ctl/placement_file.h"
#include "placement/synthetic.h"
#include "sim/configs.h"
#include "sim/simulator.h"
#include "sim/workloads.h"
#include "wire/convert.h"
#include "wire/trace.h"

namespace hecate::ctl {

namespace pl = placement;

namespace {

// --name=value or --name value from `args`; removes what it consumed.
class Args {
 public:
  explicit Args(std::vector<std::string> args) : args_(std::move(args)) {}
  std::string Get(const std::string& name, const std::string& fallback = "") {
    for (size_t i = 0; i < args_.size(); ++i) {
      if (args_[i] == name && i + 1 < args_.size()) {
        std::string v = args_[i + 1];
        args_.erase(args_.begin() + i, args_.begin() + i + 2);
        return v;
      }
      if (args_[i].rfind(name + "=", 0) == 0) {
        std::string v = args_[i].substr(name.size() + 1);
        args_.erase(args_.begin() + i);
        return v;
      }
    }
    return fallback;
  }
  const std::vector<std::string>& rest() const { return args_; }

 private:
  std::vector<std::string> args_;
};

int Bad(std::ostream& err, const std::string& msg) {
  err << "hecatectl: " << msg << "\n";
  return kUsage;
}

int Fail(std::ostream& err, const absl::Status& s) {
  err << "hecatectl: " << s.message() << "\n";
  return s.code() == absl::StatusCode::kNotFound ? kNotFound : kRejected;
}

// The cluster, model and loads every offline plan command reads.
struct PlanInputs {
  std::optional<pl::Cluster> cluster;
  pl::ModelSpec model;
  pl::ModelLoad load;
  int extra_slots = -1;
  double attention_seconds = 0;  // the model's attention forward on the cluster
};

// Reads --loads, --cluster, --model and --extra-slots; a usage error (with `usage`) or a load
// failure returns its exit code in *rc.
std::optional<PlanInputs> ReadPlanInputs(Args& a, const std::string& usage, std::ostream& err,
                                         int* rc) {
  const std::string loads_path = a.Get("--loads"), cluster_path = a.Get("--cluster"),
                    model_path = a.Get("--model"), extra = a.Get("--extra-slots", "-1");
  PlanInputs in;
  if (loads_path.empty() || cluster_path.empty() || model_path.empty()) {
    *rc = Bad(err, "usage: " + usage);
    return std::nullopt;
  }
  if (!absl::SimpleAtoi(extra, &in.extra_slots) || in.extra_slots < -1) {
    *rc = Bad(err,
              "--extra-slots must be an integer >= -1 (-1: memory decides), got '" + extra + "'");
    return std::nullopt;
  }
  absl::StatusOr<pl::Cluster> cluster = sim::LoadCluster(cluster_path);
  if (!cluster.ok()) {
    *rc = Fail(err, cluster.status());
    return std::nullopt;
  }
  in.cluster = std::move(*cluster);
  absl::StatusOr<pl::ModelSpec> model = sim::LoadModel(model_path);
  if (!model.ok()) {
    *rc = Fail(err, model.status());
    return std::nullopt;
  }
  in.model = std::move(*model);
  absl::StatusOr<pl::ModelLoad> load = ReadLoads(loads_path, *in.cluster, in.model, 5);
  if (!load.ok()) {
    *rc = Fail(err, load.status());
    return std::nullopt;
  }
  in.load = std::move(*load);
  in.attention_seconds = sim::AttentionSeconds(in.model, *in.cluster);
  return in;
}

std::string PeakGiB(const pl::Plan& plan) {
  const std::vector<int64_t>& m = plan.prediction.device_memory_bytes;
  return absl::StrFormat("%.2f",
                         m.empty() ? 0.0 : *std::max_element(m.begin(), m.end()) / double(1 << 30));
}

// One plan's figures, against static EP on the same loads: `plan compute` and `plan evaluate`.
void PrintPlan(const pl::Plan& plan, const pl::Plan& ep, Format format, std::ostream& out) {
  v1::Plan proto = wire::ToProto(plan);
  if (format == Format::kJson) {
    out << wire::ToJson(proto) << "\n";
    return;
  }
  if (format == Format::kYaml) {
    out << ToYaml(proto);
    return;
  }
  out << absl::StrFormat(
      "policy %s (dispatch %s, %s copies): predicted MoE %.3f ms/iter (EP %.3f ms, %.2fx), "
      "balancedness %.3f (EP %.3f), %d bytes/iter sparse, peak MoE memory %s GiB (EP %s)\n",
      plan.policy, pl::DispatchRuleName(plan.dispatch_rule),
      pl::ReplicaSemanticsName(plan.semantics), plan.prediction.moe_seconds * 1e3,
      ep.prediction.moe_seconds * 1e3,
      ep.prediction.moe_seconds / std::max(1e-12, plan.prediction.moe_seconds),
      plan.prediction.balancedness, ep.prediction.balancedness, plan.prediction.sparse_bytes,
      PeakGiB(plan), PeakGiB(ep));
  Table t({"LAYER", "COPIES", "BALANCEDNESS", "MAX/MEAN", "MOE_MS", "COMPUTE_MS", "A2A_MS",
           "EXPOSED_MS"});
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    int copies = 0;
    for (const auto& r2 : plan.layers[l].replicas) copies += static_cast<int>(r2.size()) - 1;
    const pl::LayerPrediction& lp = plan.prediction.layers[l];
    t.Add({absl::StrCat(l), absl::StrCat(copies), absl::StrFormat("%.3f", lp.balancedness),
           absl::StrFormat("%.3f", lp.mean_tokens > 0 ? lp.max_tokens / lp.mean_tokens : 1.0),
           absl::StrFormat("%.3f", lp.total_seconds * 1e3),
           absl::StrFormat("%.3f", lp.compute_seconds * 1e3),
           absl::StrFormat("%.3f", lp.all_to_all_seconds * 1e3),
           absl::StrFormat("%.3f", lp.exposed_comm_seconds * 1e3)});
  }
  out << t.Render();
}

constexpr char kComputeUsage[] =
    "plan compute --loads=FILE --cluster=C.json --model=M.json [--policy=P[,P...]|all] "
    "[--extra-slots=N] [-o json|yaml|table]";

int PlanCompute(Args& a, Format format, std::ostream& out, std::ostream& err) {
  const std::string policies = a.Get("--policy", "hecate");
  int rc = kOk;
  std::optional<PlanInputs> in = ReadPlanInputs(a, kComputeUsage, err, &rc);
  if (!in) return rc;
  std::vector<std::string> names =
      policies == "all" ? pl::PolicyNames() : absl::StrSplit(policies, ',');
  std::vector<std::unique_ptr<pl::Policy>> made;
  for (const std::string& name : names) {
    absl::StatusOr<std::unique_ptr<pl::Policy>> policy = pl::MakePolicy(name);
    if (!policy.ok()) return Fail(err, policy.status());
    made.push_back(std::move(*policy));
  }
  pl::PlanRequest r{&*in->cluster, &in->model, &in->load};
  r.config.attention_forward_seconds = in->attention_seconds;
  r.config.extra_slots = in->extra_slots;
  // Static EP on the same loads, for comparison.
  const pl::Plan ep = (*pl::MakePolicy("ep"))->Compute(r);
  if (made.size() == 1) {
    pl::Plan plan = made[0]->Compute(r);
    plan.job_id = "offline";
    PrintPlan(plan, ep, format, out);
    return kOk;
  }
  // Several policies: one row each, every one under its own dispatch rule, copy semantics and
  // memory (a first plan: cadences do not apply; `simulate` runs them over time).
  Table t({"POLICY", "DISPATCH", "COPIES", "MOE_MS", "SPEEDUP_VS_EP", "BALANCEDNESS",
           "SPARSE_MB/ITER", "MIGRATION_MB", "PEAK_MEM_GIB"});
  std::string json = "[";
  for (const std::unique_ptr<pl::Policy>& policy : made) {
    pl::Plan plan = policy->Compute(r);
    plan.job_id = "offline";
    int copies = 0;
    for (const pl::LayerPlan& layer : plan.layers) {
      for (const auto& h : layer.replicas) copies += static_cast<int>(h.size()) - 1;
    }
    t.Add({plan.policy, pl::DispatchRuleName(plan.dispatch_rule), absl::StrCat(copies),
           absl::StrFormat("%.3f", plan.prediction.moe_seconds * 1e3),
           absl::StrFormat(
               "%.2f", ep.prediction.moe_seconds / std::max(1e-12, plan.prediction.moe_seconds)),
           absl::StrFormat("%.3f", plan.prediction.balancedness),
           absl::StrFormat("%.1f", plan.prediction.sparse_bytes / 1e6),
           absl::StrFormat("%.1f", plan.migration_bytes() / 1e6), PeakGiB(plan)});
    absl::StrAppend(&json, json.size() > 1 ? "," : "", wire::ToJson(wire::ToProto(plan)));
  }
  if (format == Format::kTable) {
    out << t.Render();
  } else {
    out << json << "]\n";
  }
  return kOk;
}

constexpr char kEvaluateUsage[] =
    "plan evaluate --placement=FILE --loads=FILE --cluster=C.json --model=M.json "
    "[--dispatch=replica-even|even|load-aware] [--semantics=persistent|ephemeral|shadow] "
    "[-o json|yaml|table]";

// A placement made elsewhere (CSV, or EPLB's phy2log JSON: placement_file.h), judged by the cost
// model under the dispatch rule and copy semantics it runs with.
int PlanEvaluate(Args& a, Format format, std::ostream& out, std::ostream& err) {
  const std::string placement_path = a.Get("--placement"),
                    dispatch = a.Get("--dispatch", "replica-even"),
                    semantics = a.Get("--semantics", "persistent");
  if (placement_path.empty()) return Bad(err, std::string("usage: ") + kEvaluateUsage);
  pl::Plan plan;
  if (!pl::ParseDispatchRule(dispatch, &plan.dispatch_rule)) {
    return Bad(err, "--dispatch must be replica-even, even or load-aware, got '" + dispatch + "'");
  }
  if (!pl::ParseReplicaSemantics(semantics, &plan.semantics)) {
    return Bad(err, "--semantics must be persistent, ephemeral or shadow, got '" + semantics + "'");
  }
  int rc = kOk;
  std::optional<PlanInputs> in = ReadPlanInputs(a, kEvaluateUsage, err, &rc);
  if (!in) return rc;
  absl::StatusOr<std::vector<pl::LayerPlan>> layers =
      ReadPlacement(placement_path, *in->cluster, in->model);
  if (!layers.ok()) return Fail(err, layers.status());
  plan.job_id = "offline";
  plan.policy = "evaluated";
  plan.layers = std::move(*layers);
  const pl::CostModel cost(*in->cluster, in->model, in->attention_seconds);
  cost.Evaluate(&plan, in->load);
  pl::PlanRequest r{&*in->cluster, &in->model, &in->load};
  r.config.attention_forward_seconds = in->attention_seconds;
  const pl::Plan ep = (*pl::MakePolicy("ep"))->Compute(r);
  PrintPlan(plan, ep, format, out);
  if (absl::Status s = pl::CheckMemory(plan, *in->cluster, in->model); !s.ok()) {
    err << "hecatectl: warning: " << s.message() << "\n";
  }
  return kOk;
}

int Simulate(Args& a, Format format, std::ostream& out, std::ostream& err) {
  const std::string trace_path = a.Get("--trace"), cluster_path = a.Get("--cluster"),
                    model_path = a.Get("--model"), policies = a.Get("--policy", "hecate"),
                    workload = a.Get("--workload");
  int iterations = 0, reshard = 100, extra = -1;
  (void)absl::SimpleAtoi(a.Get("--iterations", "0"), &iterations);
  (void)absl::SimpleAtoi(a.Get("--reshard-period", "100"), &reshard);
  (void)absl::SimpleAtoi(a.Get("--extra-slots", "-1"), &extra);
  double zipf = 1.0, drift = 0.2, noise = 0.1;
  (void)absl::SimpleAtod(a.Get("--zipf", "1.0"), &zipf);
  (void)absl::SimpleAtod(a.Get("--drift", "0.2"), &drift);
  (void)absl::SimpleAtod(a.Get("--noise", "0.1"), &noise);
  if (cluster_path.empty() && trace_path.empty()) {
    return Bad(err,
               "usage: simulate (--trace=T | --cluster=C.json --model=M.json [--workload=W | "
               "--zipf=S --drift=D --noise=N] [--iterations=N]) [--policy=P[,P...]] "
               "[--reshard-period=R] [--extra-slots=N] [-o table|json]");
  }
  std::optional<wire::Trace> trace;
  if (!trace_path.empty()) {
    absl::StatusOr<wire::Trace> t = wire::ReadTrace(trace_path);
    if (!t.ok()) return Fail(err, t.status());
    trace = std::move(*t);
  }
  absl::StatusOr<pl::Cluster> cluster =
      !cluster_path.empty() ? sim::LoadCluster(cluster_path) : pl::Cluster::Create(trace->cluster);
  if (!cluster.ok()) return Fail(err, cluster.status());
  absl::StatusOr<pl::ModelSpec> model = !model_path.empty()
                                            ? sim::LoadModel(model_path)
                                            : absl::StatusOr<pl::ModelSpec>(trace->model);
  if (!model.ok()) return Fail(err, model.status());
  if (trace.has_value()) {
    if (iterations <= 0) iterations = static_cast<int>(trace->loads.size());
    if (!trace->loads.empty()) {
      if (absl::Status s = pl::CheckShape(trace->loads[0], *cluster, *model); !s.ok()) {
        return Fail(err, absl::InvalidArgumentError(absl::StrCat(
                             "the trace does not fit the cluster/model: ", s.message())));
      }
    }
  } else if (iterations <= 0) {
    iterations = 60;
  }
  pl::SkewOptions gen;
  gen.zipf_s = zipf;
  gen.drift_per_iteration = drift;
  gen.source_noise = noise;
  if (!workload.empty()) {
    if (trace.has_value()) return Bad(err, "--workload and --trace exclude each other");
    absl::StatusOr<sim::Workload> w = sim::FindWorkload(workload, *cluster, *model, nullptr);
    if (!w.ok()) return Fail(err, w.status());
    gen = w->options;
    err << absl::StrFormat("workload %s: %s (zipf %.3f; EP max/mean %.2f)\n", w->name, w->source,
                           gen.zipf_s, w->ep_max_mean);
  }
  sim::LoadSource source = [&](int i) {
    return trace.has_value() ? trace->loads[std::min<size_t>(i, trace->loads.size() - 1)]
                             : pl::SkewedLoad(*cluster, *model, gen, i);
  };
  std::vector<std::string> names = absl::StrSplit(policies, ',');
  Table t({"POLICY", "ITER_MS", "ATTENTION", "ALL_TO_ALL", "EXPERT", "EXPOSED_SPARSE", "MIGRATION",
           "BALANCEDNESS", "SPARSE_MB/ITER", "PEAK_MEM_GIB", "SPEEDUP_VS_EP"});
  std::optional<double> ep_ms;
  std::string json = "[";
  for (const std::string& name : names) {
    sim::SimOptions o;
    o.policy = name;
    o.reshard_period = reshard;
    o.planner.extra_slots = extra;
    o.planner.attention_forward_seconds = sim::AttentionSeconds(*model, *cluster);
    o.warmup = std::min(5, iterations / 4);
    absl::StatusOr<sim::SimResult> r = sim::Simulate(*cluster, *model, source, iterations, o);
    if (!r.ok()) return Fail(err, r.status());
    const double ms = r->mean.total() * 1e3;
    if (name == "ep") ep_ms = ms;
    t.Add({name, absl::StrFormat("%.3f", ms), absl::StrFormat("%.3f", r->mean.attention * 1e3),
           absl::StrFormat("%.3f", r->mean.all_to_all * 1e3),
           absl::StrFormat("%.3f", r->mean.expert * 1e3),
           absl::StrFormat("%.3f", r->mean.exposed_sparse * 1e3),
           absl::StrFormat("%.3f", r->mean.migration * 1e3),
           absl::StrFormat("%.3f", r->balancedness),
           absl::StrFormat("%.1f", r->sparse_bytes_per_iter / 1e6),
           absl::StrFormat("%.2f", r->peak_memory_max / double(1 << 30)),
           ep_ms ? absl::StrFormat("%.2f", *ep_ms / ms) : "-"});
    absl::StrAppend(&json, json.size() > 1 ? "," : "",
                    absl::StrFormat("{\"policy\":\"%s\",\"iterationSeconds\":%g,\"attention\":%g,"
                                    "\"allToAll\":%g,\"expert\":%g,\"exposedSparse\":%g,"
                                    "\"migration\":%g,\"balancedness\":%g,"
                                    "\"sparseBytesPerIteration\":%d,\"peakMemoryBytes\":%d}",
                                    name, r->mean.total(), r->mean.attention, r->mean.all_to_all,
                                    r->mean.expert, r->mean.exposed_sparse, r->mean.migration,
                                    r->balancedness, r->sparse_bytes_per_iter, r->peak_memory_max));
  }
  if (format == Format::kTable) {
    out << "per-iteration means, ms (" << iterations << " iterations, " << cluster->num_devices()
        << " devices)\n"
        << t.Render();
  } else {
    out << json << "]\n";
  }
  return kOk;
}

int TraceCommand(const std::string& sub, Args& a, std::ostream& out, std::ostream& err) {
  const std::string path = a.rest().size() > 2 ? a.rest()[2] : "";
  if (path.empty()) return Bad(err, "usage: trace inspect|csv|fit|slice TRACE [...]");
  absl::StatusOr<wire::Trace> t = wire::ReadTrace(path);
  if (!t.ok()) return Fail(err, t.status());
  if (sub == "inspect") {
    out << "trace " << path << ": " << t->loads.size() << " iterations";
    if (!t->iterations.empty()) {
      out << " (" << t->iterations.front() << ".." << t->iterations.back() << ")";
    }
    absl::StatusOr<pl::Cluster> c = pl::Cluster::Create(t->cluster);
    out << ", " << (c.ok() ? c->num_devices() : 0) << " devices in " << t->cluster.nodes.size()
        << " node(s), model " << t->model.name << " with " << t->model.layers.size()
        << " MoE layers x " << (t->model.layers.empty() ? 0 : t->model.layers[0].num_experts)
        << " experts, top-" << t->model.top_k << "\n";
    sim::GeneratorFit fit = sim::Fit(t->loads);
    out << absl::StrFormat("fit: zipf_s=%.3f (r2 %.3f) drift=%.3f/iteration source_noise=%.3f\n",
                           fit.zipf_s, fit.r2, fit.drift_per_iteration, fit.source_noise);
    return kOk;
  }
  if (sub == "fit") {
    sim::GeneratorFit fit = sim::Fit(t->loads);
    out << absl::StrFormat(
        "{\"zipfS\":%g,\"r2\":%g,\"driftPerIteration\":%g,\"sourceNoise\":%g,"
        "\"layerZipf\":[",
        fit.zipf_s, fit.r2, fit.drift_per_iteration, fit.source_noise);
    for (size_t i = 0; i < fit.layer_zipf.size(); ++i) out << (i ? "," : "") << fit.layer_zipf[i];
    out << "]}\n";
    return kOk;
  }
  if (sub == "csv") {
    out << "iteration,layer,device,expert,tokens\n";
    for (size_t i = 0; i < t->loads.size(); ++i) {
      for (size_t l = 0; l < t->loads[i].size(); ++l) {
        const pl::LoadMatrix& m = t->loads[i][l];
        for (int d = 0; d < m.num_devices(); ++d) {
          for (int e = 0; e < m.num_experts(); ++e) {
            out << t->iterations[i] << "," << l << "," << d << "," << e << "," << m.at(d, e)
                << "\n";
          }
        }
      }
    }
    return kOk;
  }
  if (sub == "slice") {
    int64_t from = 0, to = INT64_MAX;
    (void)absl::SimpleAtoi(a.Get("--from", "0"), &from);
    (void)absl::SimpleAtoi(a.Get("--to", "9223372036854775807"), &to);
    const std::string output = a.Get("--out");
    if (output.empty()) return Bad(err, "usage: trace slice TRACE --from=I --to=J --out=FILE");
    wire::Trace s;
    s.cluster = t->cluster;
    s.model = t->model;
    for (size_t i = 0; i < t->loads.size(); ++i) {
      if (static_cast<int64_t>(t->iterations[i]) >= from &&
          static_cast<int64_t>(t->iterations[i]) < to) {
        s.iterations.push_back(t->iterations[i]);
        s.loads.push_back(t->loads[i]);
      }
    }
    if (absl::Status st = wire::WriteTrace(output, s); !st.ok()) return Fail(err, st);
    out << "wrote " << s.loads.size() << " iterations to " << output << "\n";
    return kOk;
  }
  return Bad(err, "unknown trace command '" + sub + "' (inspect, csv, fit, slice)");
}

}  // namespace

// Loads from a trace file (window mean of its last `window` iterations) or a CSV of
// layer,expert,tokens (global counts, spread evenly over the source devices).
absl::StatusOr<pl::ModelLoad> ReadLoads(const std::string& path, const pl::Cluster& cluster,
                                        const pl::ModelSpec& model, int window) {
  std::ifstream probe(path);
  if (!probe) return absl::NotFoundError(absl::StrCat("load file ", path, " not found"));
  std::string first;
  std::getline(probe, first);
  if (first == "hecate-trace v1") {
    absl::StatusOr<wire::Trace> t = wire::ReadTrace(path);
    if (!t.ok()) return t.status();
    if (t->loads.empty())
      return absl::InvalidArgumentError(absl::StrCat(path, " has no iterations"));
    pl::LoadWindow w(window);
    for (size_t i = t->loads.size() > static_cast<size_t>(window) ? t->loads.size() - window : 0;
         i < t->loads.size(); ++i) {
      if (absl::Status s = w.Push(t->loads[i]); !s.ok()) return s;
    }
    pl::ModelLoad est = w.Estimate();
    if (absl::Status s = pl::CheckShape(est, cluster, model); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path,
                                                     ": trace does not match the cluster "
                                                     "and model given: ",
                                                     s.message()));
    }
    return est;
  }
  std::vector<std::vector<int64_t>> totals(model.num_layers());
  for (int l = 0; l < model.num_layers(); ++l) totals[l].assign(model.layers[l].num_experts, 0);
  std::ifstream in(path);
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#' || line.rfind("layer", 0) == 0) continue;
    std::vector<std::string> f = absl::StrSplit(line, ',');
    int l = 0, e = 0;
    int64_t t = 0;
    if (f.size() != 3 || !absl::SimpleAtoi(f[0], &l) || !absl::SimpleAtoi(f[1], &e) ||
        !absl::SimpleAtoi(f[2], &t) || t < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": expected 'layer,expert,tokens'"));
    }
    if (l < 0 || l >= model.num_layers() || e < 0 || e >= model.layers[l].num_experts) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": layer ", l, " expert ", e, " is not in the model"));
    }
    totals[l][e] += t;
  }
  pl::ModelLoad load;
  for (int l = 0; l < model.num_layers(); ++l) {
    load.push_back(pl::SpreadOverSources(totals[l], cluster.num_devices()));
  }
  return load;
}

int RunOffline(const std::vector<std::string>& args, Format format, std::ostream& out,
               std::ostream& err, bool* handled) {
  *handled = true;
  Args a(args);
  const std::string cmd = args.empty() ? "" : args[0];
  const std::string sub = args.size() > 1 ? args[1] : "";
  if (cmd == "simulate") return Simulate(a, format, out, err);
  if (cmd == "plan" && sub == "compute") return PlanCompute(a, format, out, err);
  if (cmd == "plan" && sub == "evaluate") return PlanEvaluate(a, format, out, err);
  if (cmd == "trace") return TraceCommand(sub, a, out, err);
  *handled = false;
  return kOk;
}

}  // namespace hecate::ctl
