#include "clients/ctl/ctl.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "clients/ctl/offline.h"
#include "clients/ctl/output.h"
#include "common/grpc_credentials.h"
#include "hecate/v1/controller.grpc.pb.h"
#include "placement/plan.h"
#include "wire/convert.h"

namespace hecate::ctl {

namespace {

struct Options {
  std::string controller = "127.0.0.1:7450";
  Format format = Format::kTable;
  std::string job;
  std::optional<uint32_t> layer;
  uint64_t version = 0;
  bool watch = false;
  double timeout_s = 10;
  std::vector<std::string> positional;
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
};

int CodeFor(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::OK:
      return kOk;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kUnavailable;
    case grpc::StatusCode::NOT_FOUND:
      return kNotFound;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::ALREADY_EXISTS:
      return kRejected;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kDenied;
    default:
      return kError;
  }
}

const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "ERROR";
  }
}

class Ctl {
 public:
  Ctl(Options opts, std::ostream& out, std::ostream& err)
      : opts_(std::move(opts)), out_(out), err_(err) {
    // --watch outlives controller restarts: re-resolve quickly (gRPC's DNS resolver otherwise
    // waits up to 30 s between resolutions; see worker/agent/agent.cc).
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 100);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    channel_ = grpc::CreateCustomChannel(opts_.controller, opts_.credentials, args);
    stub_ = v1::Controller::NewStub(channel_);
  }

  int Dispatch() {
    const std::vector<std::string>& p = opts_.positional;
    const std::string cmd = p.empty() ? "" : p[0];
    const std::string sub = p.size() > 1 ? p[1] : "";
    if (cmd == "status") return Status();
    if (cmd == "get" && sub == "workers") return GetWorkers();
    if (cmd == "get" && sub == "plan") return opts_.watch ? WatchPlans() : GetPlan();
    if (cmd == "get" && sub == "load") return GetLoad();
    if (cmd == "plan" && sub == "diff") return PlanDiff();
    if (cmd == "plan" && sub == "rollback") return Rollback();
    if (cmd == "freeze") return Freeze(true);
    if (cmd == "unfreeze") return Freeze(false);
    if (cmd == "policy" && sub == "set") return SetPolicy();
    if (cmd == "version") {
      out_ << "hecatectl 0.1.0\n";
      return kOk;
    }
    err_ << "hecatectl: unknown command '" << absl::StrJoin(p, " ") << "'\n" << Usage();
    return kUsage;
  }

 private:
  std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!opts_.watch) {
      ctx->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(opts_.timeout_s * 1000)));
    }
    return ctx;
  }

  int Fail(const grpc::Status& s, const std::string& what) {
    err_ << "hecatectl: " << what << ": " << CodeName(s.error_code()) << ": " << s.error_message();
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      err_ << " (is the controller running at " << opts_.controller
           << "? set --controller or HECATE_CONTROLLER)";
    }
    err_ << "\n";
    return CodeFor(s);
  }

  void Print(const google::protobuf::Message& m) {
    if (opts_.format == Format::kYaml) {
      out_ << ToYaml(m);
    } else {
      out_ << wire::ToJson(m) << "\n";
    }
  }

  // The job to act on: --job, or the only job the controller knows.
  int ResolveJob(std::string* job) {
    if (!opts_.job.empty()) {
      *job = opts_.job;
      return kOk;
    }
    v1::GetStatusResponse status;
    grpc::Status s = stub_->GetStatus(Context().get(), v1::GetStatusRequest(), &status);
    if (!s.ok()) return Fail(s, "status");
    if (status.jobs_size() == 1) {
      *job = status.jobs(0).job_id();
      return kOk;
    }
    err_ << "hecatectl: "
         << (status.jobs_size() == 0 ? "the controller has no jobs yet"
                                     : "several jobs: pass --job")
         << "\n";
    return status.jobs_size() == 0 ? kNotFound : kUsage;
  }

  int Status() {
    v1::GetStatusResponse resp;
    grpc::Status s = stub_->GetStatus(Context().get(), v1::GetStatusRequest(), &resp);
    if (!s.ok()) return Fail(s, "status");
    if (opts_.format != Format::kTable) {
      Print(resp);
      return kOk;
    }
    out_ << absl::StrFormat("controller %s  epoch %d  %s  default policy %s  up %.0fs\n",
                            opts_.controller, resp.epoch(),
                            resp.serving() ? "serving" : "recovering", resp.default_policy(),
                            resp.uptime_seconds());
    Table t({"JOB", "WORLD", "LIVE", "STALE", "LOST", "PLAN", "ITERATION", "POLICY", "FROZEN",
             "PUBLISHED"});
    for (const v1::JobStatus& j : resp.jobs()) {
      t.Add({j.job_id(), absl::StrCat(j.world_size()), absl::StrCat(j.live_workers()),
             absl::StrCat(j.stale_workers()), absl::StrCat(j.lost_workers()),
             absl::StrCat(j.current_plan().epoch(), ".", j.current_plan().version()),
             absl::StrCat(j.last_planned_iteration()), j.policy(), j.frozen() ? "yes" : "no",
             absl::StrCat(j.plans_published())});
    }
    out_ << t.Render();
    return kOk;
  }

  int GetWorkers() {
    v1::ListWorkersRequest req;
    req.set_job_id(opts_.job);
    v1::ListWorkersResponse resp;
    grpc::Status s = stub_->ListWorkers(Context().get(), req, &resp);
    if (!s.ok()) return Fail(s, "get workers");
    if (opts_.format != Format::kTable) {
      Print(resp);
      return kOk;
    }
    Table t({"JOB", "RANK", "NODE", "LOCAL", "DEVICE", "STATE", "ITERATION", "PLAN", "SEEN",
             "INCARNATION"});
    for (const v1::WorkerInfo& w : resp.workers()) {
      std::string state = v1::WorkerState_Name(w.state());
      state = state.substr(std::string("WORKER_STATE_").size());
      t.Add({w.job_id(), absl::StrCat(w.rank()), w.node(), absl::StrCat(w.local_rank()),
             w.device_kind(), absl::AsciiStrToLower(state), absl::StrCat(w.last_iteration()),
             absl::StrCat(w.last_plan().epoch(), ".", w.last_plan().version()),
             absl::StrFormat("%.1fs ago", w.seconds_since_seen()), absl::StrCat(w.incarnation())});
    }
    out_ << t.Render();
    return kOk;
  }

  void PrintPlanTable(const v1::Plan& plan) {
    out_ << absl::StrFormat(
        "plan %d.%d  job %s  policy %s  effective from iteration %d (computed from %d)\n"
        "sharding v%d  dispatch %s  predicted MoE %.3f ms/iter  balancedness %.3f  "
        "sparse bytes %d/iter  migration %d bytes\n",
        plan.id().epoch(), plan.id().version(), plan.job_id(), plan.policy(),
        plan.effective_iteration(), plan.computed_from_iteration(), plan.sharding_version(),
        placement::DispatchRuleName(wire::FromProto(plan).dispatch_rule),
        plan.predicted_moe_seconds() * 1e3, plan.predicted_balancedness(),
        plan.predicted_sparse_bytes(), plan.migration_bytes());
    Table t({"LAYER", "EXPERT", "OWNER", "HOLDERS", "REMAT"});
    for (const v1::LayerPlan& l : plan.layers()) {
      for (int e = 0; e < l.owner_size(); ++e) {
        const auto& devices = l.replicas(e).devices();
        if (devices.size() <= 1 && plan.layers_size() > 1 && !opts_.layer.has_value()) continue;
        t.Add({absl::StrCat(l.layer()), absl::StrCat(e), absl::StrCat(l.owner(e)),
               absl::StrJoin(devices, ","),
               l.remat() == v1::REMAT_MODE_REGATHER ? "regather" : "keep"});
      }
    }
    out_ << t.Render();
    if (plan.layers_size() > 1 && !opts_.layer.has_value()) {
      out_ << "(experts with a single holder omitted; pass --layer L for every expert)\n";
    }
  }

  int GetPlan() {
    std::string job;
    if (int rc = ResolveJob(&job); rc != kOk) return rc;
    v1::GetPlanRequest req;
    req.set_job_id(job);
    req.set_version(opts_.version);
    if (opts_.layer.has_value()) req.set_layer(*opts_.layer);
    v1::Plan plan;
    grpc::Status s = stub_->GetPlan(Context().get(), req, &plan);
    if (!s.ok()) return Fail(s, "get plan");
    if (opts_.format == Format::kTable) {
      PrintPlanTable(plan);
    } else {
      Print(plan);
    }
    return kOk;
  }

  int WatchPlans() {
    std::string job;
    if (int rc = ResolveJob(&job); rc != kOk) return rc;
    v1::WatchPlansRequest req;
    req.set_job_id(job);
    // The table shows summaries; json and yaml print the whole plan, as `get plan` does.
    req.set_device_detail(opts_.format != Format::kTable);
    req.set_acknowledge(true);
    auto ctx = Context();
    auto reader = stub_->WatchPlans(ctx.get(), req);
    v1::Plan plan;
    while (reader->Read(&plan)) {
      if (!plan.has_id()) {
        // The acknowledgement: the watch is open and no plan is due yet. Only the table says so;
        // json and yaml stay a stream of plans.
        if (opts_.format == Format::kTable) out_ << "watching job " << job << ": no new plan yet\n";
        out_.flush();
        continue;
      }
      if (opts_.format == Format::kTable) {
        out_ << absl::StrFormat(
            "plan %d.%d  effective %d  policy %s  predicted %.3f ms  balancedness %.3f  "
            "migration %d bytes\n",
            plan.id().epoch(), plan.id().version(), plan.effective_iteration(), plan.policy(),
            plan.predicted_moe_seconds() * 1e3, plan.predicted_balancedness(),
            plan.migration_bytes());
      } else if (opts_.format == Format::kJson) {
        out_ << wire::ToJson(plan, /*pretty=*/false) << "\n";
      } else {
        out_ << "---\n" << ToYaml(plan);
      }
      out_.flush();
    }
    grpc::Status s = reader->Finish();
    return s.ok() ? kOk : Fail(s, "watch");
  }

  int GetLoad() {
    std::string job;
    if (int rc = ResolveJob(&job); rc != kOk) return rc;
    v1::GetLoadRequest req;
    req.set_job_id(job);
    if (opts_.layer.has_value()) req.set_layer(*opts_.layer);
    v1::GetLoadResponse resp;
    grpc::Status s = stub_->GetLoad(Context().get(), req, &resp);
    if (!s.ok()) return Fail(s, "get load");
    if (opts_.format != Format::kTable) {
      Print(resp);
      return kOk;
    }
    Table t({"LAYER", "WINDOW", "MAX/MEAN", "BALANCEDNESS", "TOKENS PER EXPERT (window mean)"});
    for (const v1::LayerLoadWindow& l : resp.layers()) {
      std::vector<std::string> tokens;
      for (double v : l.expert_tokens()) tokens.push_back(absl::StrFormat("%.0f", v));
      t.Add({absl::StrCat(l.layer()), absl::StrCat(l.window_iterations()),
             absl::StrFormat("%.2f", l.max_over_mean()),
             absl::StrFormat("%.3f", l.observed_balancedness()), absl::StrJoin(tokens, " ")});
    }
    out_ << t.Render();
    return kOk;
  }

  int PlanDiff() {
    const std::vector<std::string>& p = opts_.positional;
    uint64_t a = 0, b = 0;
    if (p.size() != 4 || !absl::SimpleAtoi(p[2], &a) || !absl::SimpleAtoi(p[3], &b)) {
      err_ << "hecatectl: usage: plan diff VERSION_A VERSION_B\n";
      return kUsage;
    }
    std::string job;
    if (int rc = ResolveJob(&job); rc != kOk) return rc;
    v1::Plan plans[2];
    for (int i = 0; i < 2; ++i) {
      v1::GetPlanRequest req;
      req.set_job_id(job);
      req.set_version(i == 0 ? a : b);
      grpc::Status s = stub_->GetPlan(Context().get(), req, &plans[i]);
      if (!s.ok()) return Fail(s, absl::StrCat("get plan ", i == 0 ? a : b));
    }
    placement::Plan pa = wire::FromProto(plans[0]), pb = wire::FromProto(plans[1]);
    // Expert sizes come from the job's model; the plans carry no model, so use the migration
    // bytes recorded per move when available.
    placement::ModelSpec model;
    for (size_t l = 0; l < pa.layers.size(); ++l) {
      model.layers.push_back(placement::LayerSpec{pa.layers[l].num_experts(), 0, 0, 0});
    }
    placement::PlanDiff diff;
    absl::Status s = placement::Diff(pa, pb, model, &diff);
    if (!s.ok()) {
      err_ << "hecatectl: plan diff: " << s.message() << "\n";
      return kRejected;
    }
    int added = 0, removed = 0;
    for (const auto& c : diff.replica_changes) (c.added ? added : removed)++;
    if (opts_.format != Format::kTable) {
      out_ << "{\"from\":" << a << ",\"to\":" << b << ",\"layersChanged\":" << diff.layers_changed
           << ",\"ownerChanges\":[";
      for (size_t i = 0; i < diff.owner_changes.size(); ++i) {
        const auto& m = diff.owner_changes[i];
        out_ << (i ? "," : "") << "{\"layer\":" << m.layer << ",\"expert\":" << m.expert
             << ",\"from\":" << m.from << ",\"to\":" << m.to << "}";
      }
      out_ << "],\"replicaChanges\":[";
      for (size_t i = 0; i < diff.replica_changes.size(); ++i) {
        const auto& c = diff.replica_changes[i];
        out_ << (i ? "," : "") << "{\"layer\":" << c.layer << ",\"expert\":" << c.expert
             << ",\"device\":" << c.device << ",\"added\":" << (c.added ? "true" : "false") << "}";
      }
      out_ << "],\"migrationBytes\":\"" << plans[1].migration_bytes() << "\"}\n";
      return kOk;
    }
    out_ << absl::StrFormat(
        "plan %d -> %d: %d layer(s) changed, %d owner move(s), %d cop(y/ies) added, %d removed, "
        "migration %d bytes\n",
        a, b, diff.layers_changed, diff.owner_changes.size(), added, removed,
        plans[1].migration_bytes());
    Table t({"LAYER", "EXPERT", "CHANGE", "DEVICE"});
    for (const auto& m : diff.owner_changes) {
      t.Add({absl::StrCat(m.layer), absl::StrCat(m.expert), "owner",
             absl::StrCat(m.from, " -> ", m.to)});
    }
    for (const auto& c : diff.replica_changes) {
      t.Add({absl::StrCat(c.layer), absl::StrCat(c.expert), c.added ? "+copy" : "-copy",
             absl::StrCat(c.device)});
    }
    out_ << t.Render();
    return kOk;
  }

  int Rollback() {
    if (opts_.version == 0) {
      err_ << "hecatectl: usage: plan rollback --version=V\n";
      return kUsage;
    }
    std::string job;
    if (int rc = ResolveJob(&job); rc != kOk) return rc;
    v1::RollbackPlanRequest req;
    req.set_job_id(job);
    req.set_to_version(opts_.version);
    v1::Plan plan;
    grpc::Status s = stub_->RollbackPlan(Context().get(), req, &plan);
    if (!s.ok()) return Fail(s, "rollback");
    if (opts_.format == Format::kTable) {
      out_ << "published plan " << plan.id().epoch() << "." << plan.id().version()
           << " with the placement of version " << opts_.version << "\n";
    } else {
      Print(plan);
    }
    return kOk;
  }

  int Freeze(bool freeze) {
    google::protobuf::RepeatedPtrField<std::string> frozen;
    grpc::Status s;
    if (freeze) {
      v1::FreezeRequest req;
      req.set_job_id(opts_.job);
      v1::FreezeResponse resp;
      s = stub_->Freeze(Context().get(), req, &resp);
      frozen = resp.frozen_jobs();
    } else {
      v1::UnfreezeRequest req;
      req.set_job_id(opts_.job);
      v1::UnfreezeResponse resp;
      s = stub_->Unfreeze(Context().get(), req, &resp);
      frozen = resp.frozen_jobs();
    }
    if (!s.ok()) return Fail(s, freeze ? "freeze" : "unfreeze");
    if (opts_.format == Format::kTable) {
      out_ << (freeze ? "frozen" : "unfrozen")
           << "; frozen jobs now: " << (frozen.empty() ? "none" : absl::StrJoin(frozen, ", "))
           << "\n";
    } else {
      out_ << "{\"frozenJobs\":[";
      for (int i = 0; i < frozen.size(); ++i) out_ << (i ? "," : "") << "\"" << frozen[i] << "\"";
      out_ << "]}\n";
    }
    return kOk;
  }

  int SetPolicy() {
    if (opts_.positional.size() != 3) {
      err_ << "hecatectl: usage: policy set NAME [--job=ID]\n";
      return kUsage;
    }
    v1::SetPolicyRequest req;
    req.set_job_id(opts_.job);
    req.set_policy(opts_.positional[2]);
    v1::SetPolicyResponse resp;
    grpc::Status s = stub_->SetPolicy(Context().get(), req, &resp);
    if (!s.ok()) return Fail(s, "policy set");
    if (opts_.format == Format::kTable) {
      out_ << "policy " << resp.previous_policy() << " -> " << resp.policy()
           << (opts_.job.empty() ? " (default and every job)" : " (job " + opts_.job + ")") << "\n";
    } else {
      Print(resp);
    }
    return kOk;
  }

  Options opts_;
  std::ostream& out_;
  std::ostream& err_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Controller::Stub> stub_;
};

}  // namespace

std::string Usage() {
  return R"(usage: hecatectl [flags] COMMAND

commands:
  status                          controller epoch, jobs, workers, current plans
  get workers                     registered workers and their liveness
  get plan [--layer=L] [--version=V] [--watch]
                                  a plan (current by default); --watch streams new plans
  get load [--layer=L]            sliding-window expert loads per layer
  plan diff A B                   what changes from plan version A to B
  plan rollback --version=V       publish a new version with version V's placement
  freeze | unfreeze               stop / resume automatic re-planning (--job or all jobs)
  policy set NAME                 hecate, hecate-paper, hecate-rm, ep, fastermoe, flexmoe,
                                  smartmoe, eplb (--job, or the default and every job)
  version

offline (no controller):
  simulate (--trace=T | --cluster=C.json --model=M.json [--workload=W | --zipf=S --drift=D
           --noise=N])    W: balanced, mild, heavy, rotating, bursts (docs/benchmarks.md)
           [--policy=P[,P...]] [--iterations=N] [--reshard-period=R] [--extra-slots=N]
  plan compute --loads=FILE --cluster=C.json --model=M.json [--policy=P[,P...]|all]
               [--extra-slots=N]  FILE: a trace, or CSV layer,expert,tokens; several policies:
                                  one row each, under its own dispatch rule and memory
  plan evaluate --placement=FILE --loads=FILE --cluster=C.json --model=M.json
               [--dispatch=replica-even|even|load-aware] [--semantics=persistent|ephemeral|shadow]
                                  judge a placement made elsewhere: CSV layer,expert,devices
                                  (first device the owner) or EPLB's {"phy2log": [[...]]}
  trace inspect|fit|csv TRACE     summarize / fit the generator / dump a trace
  trace slice TRACE --from=I --to=J --out=FILE

flags:
  --controller=HOST:PORT   controller address (env HECATE_CONTROLLER; default 127.0.0.1:7450)
  -o, --output=FORMAT      table (default), json (proto3 canonical JSON), yaml
  --job=ID                 job to act on (default: the only job)
  --timeout=SECONDS        per-call deadline (default 10)
  --tls_ca_file=PEM        TLS: the CA the controller's certificate chains to (HECATE_TLS_CA_FILE)
  --tls_cert_file=PEM      mTLS: this client's certificate (HECATE_TLS_CERT_FILE)
  --tls_key_file=PEM       mTLS: its key (HECATE_TLS_KEY_FILE)
  --token_file=FILE        a bearer token, sent over TLS (HECATE_TOKEN_FILE)

exit codes: 0 ok, 1 error, 2 usage, 3 controller unavailable, 4 not found, 5 rejected,
6 refused (UNAUTHENTICATED, PERMISSION_DENIED)
)";
}

int Run(const std::vector<std::string>& args, const std::string& env_controller, std::ostream& out,
        std::ostream& err) {
  // Offline commands take their own flags; only -o/--output is shared.
  {
    std::vector<std::string> rest;
    Format format = Format::kTable;
    for (size_t i = 0; i < args.size(); ++i) {
      if ((args[i] == "-o" || args[i] == "--output") && i + 1 < args.size()) {
        if (!ParseFormat(args[++i], &format)) {
          err << "hecatectl: unknown output format '" << args[i] << "' (table, json, yaml)\n";
          return kUsage;
        }
      } else if (args[i].rfind("--output=", 0) == 0) {
        if (!ParseFormat(args[i].substr(9), &format)) return kUsage;
      } else {
        rest.push_back(args[i]);
      }
    }
    if (!rest.empty() && (rest[0] == "simulate" || rest[0] == "trace" ||
                          (rest[0] == "plan" && rest.size() > 1 &&
                           (rest[1] == "compute" || rest[1] == "evaluate")))) {
      bool handled = false;
      const int rc = RunOffline(rest, format, out, err, &handled);
      if (handled) return rc;
    }
  }
  Options opts;
  if (!env_controller.empty()) opts.controller = env_controller;
  ClientTls tls;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    std::string value;
    auto take = [&](const std::string& name, std::string* v) {
      if (a == name) {
        if (i + 1 >= args.size()) return false;
        *v = args[++i];
        return true;
      }
      if (a.rfind(name + "=", 0) == 0) {
        *v = a.substr(name.size() + 1);
        return true;
      }
      return false;
    };
    if (a == "-h" || a == "--help" || a == "help") {
      out << Usage();
      return kOk;
    }
    if (take("--controller", &value)) {
      opts.controller = value;
    } else if (take("-o", &value) || take("--output", &value)) {
      if (!ParseFormat(value, &opts.format)) {
        err << "hecatectl: unknown output format '" << value << "' (table, json, yaml)\n";
        return kUsage;
      }
    } else if (take("--job", &value)) {
      opts.job = value;
    } else if (take("--layer", &value)) {
      uint32_t layer = 0;
      if (!absl::SimpleAtoi(value, &layer)) {
        err << "hecatectl: --layer needs a non-negative integer\n";
        return kUsage;
      }
      opts.layer = layer;
    } else if (take("--version", &value)) {
      if (!absl::SimpleAtoi(value, &opts.version)) {
        err << "hecatectl: --version needs a non-negative integer\n";
        return kUsage;
      }
    } else if (take("--timeout", &value)) {
      if (!absl::SimpleAtod(value, &opts.timeout_s) || opts.timeout_s <= 0) {
        err << "hecatectl: --timeout needs a positive number of seconds\n";
        return kUsage;
      }
    } else if (take("--tls_ca_file", &value) || take("--tls-ca-file", &value)) {
      tls.ca_file = value;
    } else if (take("--tls_cert_file", &value) || take("--tls-cert-file", &value)) {
      tls.cert_file = value;
    } else if (take("--tls_key_file", &value) || take("--tls-key-file", &value)) {
      tls.key_file = value;
    } else if (take("--token_file", &value) || take("--token-file", &value)) {
      tls.token_file = value;
    } else if (a == "--watch" || a == "-w") {
      opts.watch = true;
    } else if (!a.empty() && a[0] == '-') {
      err << "hecatectl: unknown flag '" << a << "'\n" << Usage();
      return kUsage;
    } else {
      opts.positional.push_back(a);
    }
  }
  if (opts.positional.empty()) {
    err << Usage();
    return kUsage;
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
      ChannelCredentialsFor(WithEnvironment(tls));
  if (!creds.ok()) {
    err << "hecatectl: " << creds.status().message() << "\n";
    return kUsage;
  }
  opts.credentials = *creds;
  Ctl ctl(std::move(opts), out, err);
  return ctl.Dispatch();
}

}  // namespace hecate::ctl
