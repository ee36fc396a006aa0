// Calibration check of the simulator against measured CPU runs.
//
//   bazel run //bench:calibration [-- --iterations=30]
//
// Runs two CPU worker processes (one core and one thread each) eight ways -- EP and FSSDP, balanced
// and skewed routing, and the baselines' policies (EPLB, FlexMoE, SmartMoE, FasterMoE) on skewed
// routing -- recording each run's load trace. Fits the CPU "cluster" (expert FLOP rate,
// All-to-All bandwidth, a fixed per-layer cost for everything outside the MoE layer) from the
// balanced EP run alone, then simulates every run on their own recorded traces and reports the
// error of the predicted iteration time against the measured one (target: within 15%). Also
// measures the fixed cost of an expert copy (balanced FSSDP with one copy against none), which
// the simulation charges and BenchModelFlags passes to the workers as --copy_overhead_ms.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/worker_group.h"
#include "common/flags.h"
#include "common/subprocess.h"
#include "placement/dispatch.h"
#include "placement/planning_loop.h"
#include "placement/synthetic.h"
#include "sim/simulator.h"
#include "wire/trace.h"

ABSL_FLAG(int, iterations, 30, "Iterations per measured run");
ABSL_FLAG(int, warmup, 6, "Iterations excluded from the means");
ABSL_FLAG(bool, serial_transfers, false,
          "Time every run on a fitted cluster whose transfers take the step's time, as if the "
          "workers had no lane (shows what the schedule's overlap term is worth to the fit)");

namespace hecate::bench {
namespace {

namespace pl = placement;

int Main(int argc, char** argv) {
  ParseFlags(argc, argv, "Simulator calibration against measured 2-rank CPU runs.");
  const std::string worker = FindBinary("worker/hecate-worker");
  const int iters = absl::GetFlag(FLAGS_iterations);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  char tmpl[] = "/tmp/hecate-calib-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::vector<std::string> model_flags = BenchModelFlags(iters);
  struct Case {
    std::string name, mode, policy;
    double bias;
    GroupResult measured;
    wire::Trace trace;
  };
  // The persistent-replica baselines run on the same data plane as their systems run them
  // (replicas holding state, AllReduce among the holders on the lane); FasterMoE's shadows are
  // decided after the gate on counts the trace records.
  std::vector<Case> cases = {{"ep-balanced", "ep", "ep", 0, {}, {}},
                             {"ep-skewed", "ep", "ep", 6, {}, {}},
                             {"fssdp-skewed", "fssdp", "hecate", 6, {}, {}},
                             {"fssdp-balanced", "fssdp", "hecate", 0, {}, {}},
                             {"eplb-skewed", "fssdp", "eplb", 6, {}, {}},
                             {"flexmoe-skewed", "fssdp", "flexmoe", 6, {}, {}},
                             {"smartmoe-skewed", "fssdp", "smartmoe", 6, {}, {}},
                             {"fastermoe-skewed", "fssdp", "fastermoe", 6, {}, {}}};
  for (Case& c : cases) {
    std::vector<std::string> flags = model_flags;
    flags.push_back("--mode=" + c.mode);
    if (c.mode == "fssdp") flags.push_back("--policy=" + c.policy);
    flags.push_back(absl::StrCat("--gate_bias=", c.bias));
    flags.push_back(absl::StrCat("--trace_out=", dir, "/", c.name, ".trace"));
    c.measured = RunWorkers(worker, 2, flags, {}, warmup, dir + "/" + c.name);
    if (!c.measured.ok) {
      std::fprintf(stderr, "%s: %s\n", c.name.c_str(), c.measured.error.c_str());
      return 1;
    }
    absl::StatusOr<wire::Trace> t = wire::ReadTrace(absl::StrCat(dir, "/", c.name, ".trace"));
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      return 1;
    }
    c.trace = std::move(*t);
  }
  // Fit on the balanced EP run: expert compute -> FLOP rate, dispatch + combine -> bandwidth.
  const Case& base = cases[0];
  pl::ClusterSpec spec = base.trace.cluster;
  const pl::ModelSpec& model = base.trace.model;
  absl::StatusOr<pl::Cluster> c0 = pl::Cluster::Create(spec);
  if (!c0.ok()) return 1;
  pl::Dispatcher dispatcher(*c0);
  double max_tokens = 0, moved_bytes = 0;
  int n = 0;
  for (size_t i = warmup; i < base.trace.loads.size(); ++i) {
    for (size_t l = 0; l < base.trace.loads[i].size(); ++l) {
      pl::LayerPlan ep;
      for (int e = 0; e < model.layers[l].num_experts; ++e) {
        ep.owner.push_back(e * c0->num_devices() / model.layers[l].num_experts);
        ep.replicas.push_back({ep.owner.back()});
      }
      pl::DispatchSummary s;
      dispatcher.Summarize(ep, base.trace.loads[i][l], pl::DispatchRule::kEven, &s);
      max_tokens += *std::max_element(s.device_tokens.begin(), s.device_tokens.end());
      moved_bytes += static_cast<double>(
                         std::max(s.out_intra[0] + s.out_inter[0], s.in_intra[0] + s.in_inter[0])) *
                     model.token_bytes;
      ++n;
    }
  }
  const double layers = model.num_layers();
  const double expert_s = base.measured.mean_ms.at("expert") / 1e3 / layers;  // per layer
  const double a2a_s =
      (base.measured.mean_ms.at("dispatch") + base.measured.mean_ms.at("combine")) / 1e3 / layers;
  const double flops = 3.0 * (max_tokens / n) * model.layers[0].expert_flops_per_token / expert_s;
  // Link bandwidth from an independent measurement (point-to-point throughput over Gloo, as the
  // sparse collectives use it); what the balanced All-to-All takes beyond moving its bytes at
  // that rate is a fixed per-collective latency (packing, synchronization).
  double bandwidth = 2e9;
  {
    proc::Subprocess spag;
    if (spag.Start({FindBinary("bench/spag_bench"), "--repeats=10"}, {}, dir + "/spag.log")) {
      std::string rest;
      if (spag.WaitForLine("sparse_allgather: ", absl::Minutes(2), &rest)) {
        const size_t eq = rest.rfind("= ");
        double gbs = 0;
        if (eq != std::string::npos &&
            absl::SimpleAtod(rest.substr(eq + 2, rest.find(' ', eq + 2) - eq - 2), &gbs)) {
          bandwidth = gbs * 1e9;
        }
      }
      spag.Wait(absl::Minutes(1));
    }
  }
  const double latency = std::max(0.0, (a2a_s - 4.0 * (moved_bytes / n) / bandwidth) / 4.0);
  // The fixed cost of an expert copy: balanced routing, FSSDP with the planner told copies are
  // free (it places one to even out the last few percent), against FSSDP with no copies (the
  // local planner's ep policy). With perfect balance and no fixed cost the expert phase would
  // shrink to the no-copy phase x (its balancedness / the copy run's); what it takes beyond that,
  // per copy and iteration, is the copy's fixed cost.
  double copy_seconds = 0;
  {
    std::vector<std::string> flags = model_flags;
    flags.insert(flags.end(), {"--mode=fssdp", "--gate_bias=0"});
    std::vector<std::string> with = flags, without = flags;
    with.push_back("--copy_overhead_ms=0");
    without.push_back("--policy=ep");
    const GroupResult a = RunWorkers(worker, 2, with, {}, warmup, dir + "/copy");
    const GroupResult b = RunWorkers(worker, 2, without, {}, warmup, dir + "/nocopy");
    // Rank 0's sent spAG bytes are its experts' copies on rank 1; its sent spRS bytes are the
    // gradients of the copies it holds of rank 1's experts (fp32 gradients = parameter bytes).
    // With two ranks the two together count every copy.
    double spag_bytes = 0, sprs_bytes = 0;
    auto summary = [&](const char* key, double* out) {
      return a.summary.count(key) > 0 && absl::SimpleAtod(a.summary.at(key), out);
    };
    if (!a.ok || !b.ok || !summary("spag_bytes", &spag_bytes) ||
        !summary("sprs_bytes", &sprs_bytes)) {
      std::fprintf(stderr, "copy-overhead runs failed (%s%s)\n", a.error.c_str(), b.error.c_str());
      return 1;
    }
    const double copies =
        (spag_bytes + sprs_bytes) / iters / static_cast<double>(model.layers[0].expert_param_bytes);
    const double ideal_ms = b.mean_ms.at("expert") * b.balancedness / a.balancedness;
    if (copies > 0.5) {
      copy_seconds = std::max(0.0, (a.mean_ms.at("expert") - ideal_ms) / 1e3 / copies);
    }
    std::printf(
        "copy overhead: balanced FSSDP with %.2f copies/iteration: expert %.2f ms (balancedness "
        "%.3f), without copies %.2f ms (%.3f), perfectly balanced at no cost %.2f ms -> %.2f ms "
        "per copy and iteration\n",
        copies, a.mean_ms.at("expert"), a.balancedness, b.mean_ms.at("expert"), b.balancedness,
        ideal_ms, copy_seconds * 1e3);
  }
  const double attention = base.measured.mean_ms.at("attention") / 1e3 / layers;
  const double other =
      base.measured.mean_ms.at("step") / 1e3 / layers - expert_s - a2a_s - 3 * attention;
  for (pl::NodeSpec& node : spec.nodes) node.device_flops_per_second = flops;
  spec.intra_node_bandwidth_bytes_per_second = bandwidth;
  spec.inter_node_bandwidth_bytes_per_second = bandwidth;
  spec.link_latency_seconds = latency;
  if (absl::GetFlag(FLAGS_serial_transfers)) spec.transfers_overlap_compute = false;
  absl::StatusOr<pl::Cluster> fitted = pl::Cluster::Create(spec);
  std::printf(
      "fitted CPU cluster: %.2f GFLOP/s per device (expert phase, balanced EP), "
      "%.2f GB/s links (Gloo point-to-point, //bench:spag_bench), %.3f ms latency per "
      "collective, attention %.3f ms/layer, other %.3f ms/layer; a balanced-case copy costs %.2f "
      "ms "
      "(the workers plan with --copy_overhead_ms; times charge none)\n\n",
      flops / 1e9, bandwidth / 1e9, latency * 1e3, attention * 1e3, other * 1e3,
      copy_seconds * 1e3);
  // Plans are replayed with the copy cost the workers assumed (the trace's model); times charge
  // none: the skewed runs' copies, which carry many tokens, show no fixed cost (charging the
  // balanced A/B's figure over-predicts fssdp-skewed by ~18%), so it is a planning threshold
  // here, not a timing term.
  pl::ModelSpec timed = model;
  for (pl::LayerSpec& l : timed.layers) l.copy_seconds = 0;
  std::printf("run,measured_ms,simulated_ms,error\n");
  double worst = 0;
  for (const Case& c : cases) {
    sim::SimOptions o;
    o.policy = c.policy;
    // Replay what the workers did: plan with the rates they assumed (the trace's cluster, the
    // model's attention window, the local planner's damping), time on the fitted cluster.
    const pl::PlanningConfig local;  // what the workers' local planner used
    o.planning_cluster = &*c0;
    o.planning_model = &model;
    o.window = local.window;
    o.damping = local.damping;
    o.reshard_period = kBenchReshardPeriod;  // BenchModelFlags' --reshard_period
    o.attention_seconds = attention;
    o.other_seconds_per_layer = other;
    o.warmup = warmup;
    auto loads = [&](int i) {
      return c.trace.loads[std::min<size_t>(i, c.trace.loads.size() - 1)];
    };
    absl::StatusOr<sim::SimResult> r =
        sim::Simulate(*fitted, timed, loads, static_cast<int>(c.trace.loads.size()), o);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return 1;
    }
    const double meas = c.measured.mean_ms.at("step");
    const double pred = r->mean.total() * 1e3;
    const double err = (pred - meas) / meas;
    worst = std::max(worst, std::abs(err));
    std::printf("%s,%.2f,%.2f,%+.1f%%\n", c.name.c_str(), meas, pred, 100 * err);
    std::string phases;
    for (const auto& [k, v] : c.measured.mean_ms) absl::StrAppend(&phases, " ", k, "=", v);
    std::printf(
        "  measured:%s\n  simulated: attention=%.2f all_to_all=%.2f expert=%.2f "
        "sparse=%.2f other=%.2f\n",
        phases.c_str(), r->mean.attention * 1e3, r->mean.all_to_all * 1e3, r->mean.expert * 1e3,
        r->mean.exposed_sparse * 1e3, r->mean.other * 1e3);
  }
  std::printf("\nworst error %.1f%% (target 15%%)\n", 100 * worst);
  std::error_code ignored;  // a clean run leaves nothing behind; failures keep their logs
  std::filesystem::remove_all(dir, ignored);
  return 0;
}

}  // namespace
}  // namespace hecate::bench

int main(int argc, char** argv) { return hecate::bench::Main(argc, argv); }
