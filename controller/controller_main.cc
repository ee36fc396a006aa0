// hecate-controller: the placement controller service.
//
//   hecate-controller --listen=127.0.0.1:7450 --state-dir=/var/lib/hecate --metrics-listen=:7451
//
// Prints "listening on HOST:PORT" (and "metrics on HOST:PORT") on stdout once serving; logs go to
// stderr. SIGTERM/SIGINT shut down gracefully.
#include <pthread.h>
#include <signal.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/log.h"
#include "controller/server.h"
#include "placement/policy.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7450", "gRPC address (host:port; port 0 = any free)");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:7451",
          "Prometheus /metrics address (host:port; empty disables)");
ABSL_FLAG(std::string, state_dir, "hecate-state",
          "Directory for durable state (epoch, jobs, plan history, settings)");
ABSL_FLAG(std::string, policy, "hecate",
          "Default placement policy: hecate, hecate-paper, hecate-rm, ep, fastermoe, flexmoe, "
          "smartmoe, eplb");
ABSL_FLAG(int, window, 5, "Load window length, iterations (paper: 5)");
ABSL_FLAG(int, lead, 2, "A plan from iteration i takes effect at i + lead (>= 2)");
ABSL_FLAG(int, reshard_period, 100,
          "Re-shard every this many iterations when worth it (0 = never)");
ABSL_FLAG(double, damping, 0.02, "Minimum predicted relative gain to publish a new plan");
ABSL_FLAG(bool, warm_start, true,
          "hecate: start each iteration's placement from the plan in force and revise it "
          "(false: plan every iteration from scratch)");
ABSL_FLAG(int, revise_period, 4,
          "hecate, warm start: every this many iterations each layer also drops copies worth "
          "less than --revise_gain and regrows (>= 1)");
ABSL_FLAG(double, revise_gain, 0.01,
          "hecate, warm start: the share of a layer's predicted time below which a copy is dropped "
          "on a revision (0 <= x < 1)");
ABSL_FLAG(double, replan_threshold, 0.02,
          "hecate, warm start: keep the plan and prediction of a settled layer whose expert "
          "shares moved less than this (L1, 0 <= x < 2) since it was planned; 0 re-plans every "
          "layer every iteration");
ABSL_FLAG(int, repair_moves, 4,
          "hecate: moves of the exact repair per planned layer and plan (judged by the real "
          "dispatch; docs/placement.md); 0 turns it off");
ABSL_FLAG(int, repair_candidates, 16,
          "hecate: receivers the exact repair tries per expert of the busiest device (>= 1)");
ABSL_FLAG(int64_t, repair_device_budget, int64_t{4} * 16 * 256,
          "hecate: where moves x candidates x devices exceeds this, both are scaled down by the "
          "same factor (4 x 16 up to 256 devices, 2 x 8 at 1,024, 1 x 4 at 4,096); 0 = no cap");
ABSL_FLAG(double, balance_target, 1.08,
          "hecate: bound on a planned layer's predicted max/mean device tokens that the balance "
          "pass works toward, trading predicted time (docs/placement.md); 0 = off (time alone), "
          "else >= 1");
ABSL_FLAG(double, balance_budget, 0.04,
          "hecate: predicted time the balance pass may add to a layer, and a plan published for "
          "balance may cost, as a share (0 <= x < 1)");
ABSL_FLAG(int, balance_moves, 16, "hecate: moves of the balance pass per planned layer (>= 0)");
ABSL_FLAG(int64_t, balance_cell_budget, int64_t{12} * 32 * 64 * 1024,
          "hecate: device x expert cells the balance pass may evaluate per plan, split evenly "
          "over the layers (a layer evaluation is O(devices x experts)); a layer whose share buys "
          "fewer than 8 evaluations gets no pass; 0 = no cap");
ABSL_FLAG(int, report_deadline_ms, 5000,
          "Finalize an iteration this long after its first report even if ranks are missing");
ABSL_FLAG(int, stale_after_s, 10, "A rank silent this long is stale");
ABSL_FLAG(int, lost_after_s, 60, "A rank silent this long is lost (planning stops waiting)");
ABSL_FLAG(int, max_message_bytes, 16 << 20, "Largest accepted gRPC message (load report), bytes");
ABSL_FLAG(std::string, metrics_expert_detail, "auto",
          "Per-expert token counters (hecate_expert_tokens_total{job_id,layer,expert}): auto (for "
          "jobs of at most 16,384 layer x expert cells, one series each), on, off");
ABSL_FLAG(bool, grpc_reflection, true, "Serve gRPC server reflection (for grpcurl)");
ABSL_FLAG(std::string, tls_cert_file, "",
          "TLS: the server's certificate chain (PEM); re-read when it changes");
ABSL_FLAG(std::string, tls_key_file, "", "TLS: the server's private key (PEM)");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "mTLS: CA bundle (PEM) that client certificates must chain to; clients must present one");
ABSL_FLAG(std::string, tls_client_roles_file, "",
          "Roles by client-certificate common name: one 'ROLE COMMON_NAME' per line (ROLE operator "
          "or worker)");
ABSL_FLAG(std::string, tokens_file, "",
          "Bearer tokens: one 'ROLE SHA256HEX' per line (the hex SHA-256 of the token; ROLE "
          "operator or worker); needs TLS");
ABSL_FLAG(int, max_streams_per_peer, 1024,
          "ReportLoad and WatchPlans streams one peer address may hold open at once (0: no "
          "limit)");
ABSL_FLAG(int, max_watchers, 65536, "WatchPlans streams in all");
ABSL_FLAG(int, max_watcher_queue, 64,
          "Plans queued for one watcher before it is dropped (it reconnects and resumes)");
ABSL_FLAG(double, max_reports_per_second, 100,
          "Load reports per second of one rank (bursts of two seconds' worth; 0: no limit)");
ABSL_FLAG(bool, insecure, false,
          "Allow plaintext gRPC on a non-loopback --listen address (anyone who reaches the port "
          "can steer placement)");

int main(int argc, char** argv) {
  const std::vector<std::string> args = hecate::ParseFlags(
      argc, argv,
      "The Hecate placement controller: gathers expert loads from workers, computes placement "
      "plans and pushes them over gRPC.\nUsage: hecate-controller [flags]");
  if (!args.empty()) {
    std::fprintf(stderr, "hecate-controller: unexpected argument '%s' (see --help)\n",
                 args[0].c_str());
    return 2;
  }
  hecate::SetLogComponent("controller");

  const std::string policy = absl::GetFlag(FLAGS_policy);
  if (!hecate::placement::MakePolicy(policy).ok()) {
    std::fprintf(stderr, "hecate-controller: unknown --policy '%s'\n", policy.c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_window) < 1 || absl::GetFlag(FLAGS_lead) < 2 ||
      absl::GetFlag(FLAGS_max_message_bytes) < 1024 || absl::GetFlag(FLAGS_revise_period) < 1 ||
      !(absl::GetFlag(FLAGS_revise_gain) >= 0 && absl::GetFlag(FLAGS_revise_gain) < 1) ||
      !(absl::GetFlag(FLAGS_replan_threshold) >= 0 && absl::GetFlag(FLAGS_replan_threshold) < 2) ||
      absl::GetFlag(FLAGS_repair_moves) < 0 || absl::GetFlag(FLAGS_repair_candidates) < 1 ||
      absl::GetFlag(FLAGS_repair_device_budget) < 0 ||
      !(absl::GetFlag(FLAGS_balance_target) == 0 || absl::GetFlag(FLAGS_balance_target) >= 1) ||
      !(absl::GetFlag(FLAGS_balance_budget) >= 0 && absl::GetFlag(FLAGS_balance_budget) < 1) ||
      absl::GetFlag(FLAGS_balance_moves) < 0 || absl::GetFlag(FLAGS_balance_cell_budget) < 0) {
    std::fprintf(stderr,
                 "hecate-controller: need --window >= 1, --lead >= 2, "
                 "--max_message_bytes >= 1024, --revise_period >= 1, 0 <= --revise_gain < 1, "
                 "0 <= --replan_threshold < 2, --repair_moves >= 0, --repair_candidates >= 1, "
                 "--repair_device_budget >= 0, --balance_target 0 or >= 1, "
                 "0 <= --balance_budget < 1, --balance_moves >= 0, --balance_cell_budget >= 0\n");
    return 2;
  }
  hecate::controller::ServerConfig config;
  config.listen = absl::GetFlag(FLAGS_listen);
  config.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  config.state_dir = absl::GetFlag(FLAGS_state_dir);
  config.reflection = absl::GetFlag(FLAGS_grpc_reflection);
  config.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  config.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  config.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  config.tls_client_roles_file = absl::GetFlag(FLAGS_tls_client_roles_file);
  config.tokens_file = absl::GetFlag(FLAGS_tokens_file);
  config.insecure = absl::GetFlag(FLAGS_insecure);
  config.service.max_streams_per_peer = absl::GetFlag(FLAGS_max_streams_per_peer);
  config.service.max_watchers = absl::GetFlag(FLAGS_max_watchers);
  config.service.max_watcher_queue = absl::GetFlag(FLAGS_max_watcher_queue);
  config.service.max_reports_per_second = absl::GetFlag(FLAGS_max_reports_per_second);
  if (config.service.max_streams_per_peer < 0 || config.service.max_watchers < 1 ||
      config.service.max_watcher_queue < 1 || !(config.service.max_reports_per_second >= 0)) {
    std::fprintf(stderr,
                 "hecate-controller: need --max_streams_per_peer >= 0, --max_watchers >= 1, "
                 "--max_watcher_queue >= 1, --max_reports_per_second >= 0\n");
    return 2;
  }
  if (!hecate::controller::ParseExpertDetail(absl::GetFlag(FLAGS_metrics_expert_detail),
                                             &config.expert_detail_metrics)) {
    std::fprintf(stderr, "hecate-controller: --metrics_expert_detail must be auto, on or off\n");
    return 2;
  }
  hecate::controller::CoreConfig& core = config.service.core;
  core.default_policy = policy;
  core.window = absl::GetFlag(FLAGS_window);
  core.lead = absl::GetFlag(FLAGS_lead);
  core.reshard_period = absl::GetFlag(FLAGS_reshard_period);
  core.damping = absl::GetFlag(FLAGS_damping);
  core.planner.warm_start = absl::GetFlag(FLAGS_warm_start);
  core.planner.revise_period = absl::GetFlag(FLAGS_revise_period);
  core.planner.revise_gain = absl::GetFlag(FLAGS_revise_gain);
  core.planner.replan_threshold = absl::GetFlag(FLAGS_replan_threshold);
  core.planner.repair_moves = absl::GetFlag(FLAGS_repair_moves);
  core.planner.repair_candidates = absl::GetFlag(FLAGS_repair_candidates);
  core.planner.repair_device_budget = absl::GetFlag(FLAGS_repair_device_budget);
  core.planner.balance_target = absl::GetFlag(FLAGS_balance_target);
  core.planner.balance_budget = absl::GetFlag(FLAGS_balance_budget);
  core.planner.balance_moves = absl::GetFlag(FLAGS_balance_moves);
  core.planner.balance_cell_budget = absl::GetFlag(FLAGS_balance_cell_budget);
  core.report_deadline = absl::Milliseconds(absl::GetFlag(FLAGS_report_deadline_ms));
  core.stale_after = absl::Seconds(absl::GetFlag(FLAGS_stale_after_s));
  core.lost_after = absl::Seconds(absl::GetFlag(FLAGS_lost_after_s));
  config.service.max_report_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  config.service.version = hecate::kVersion;

  // Block SIGTERM/SIGINT in every thread (gRPC's inherit this mask) and take them in main.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  hecate::controller::ControllerServer server(config);
  if (absl::Status s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "hecate-controller: %s\n", s.ToString().c_str());
    if (s.code() == absl::StatusCode::kInvalidArgument) return 2;
    return s.code() == absl::StatusCode::kFailedPrecondition ? 3 : 1;
  }
  std::printf("listening on %s\n", server.address().c_str());
  if (!server.metrics_address().empty()) {
    std::printf("metrics on %s\n", server.metrics_address().c_str());
  }
  std::fflush(stdout);
  int signal = 0;
  sigwait(&stop_signals, &signal);
  hecate::LogInfo("shutting down", hecate::LogFields()("signal", signal));
  server.Shutdown();
  return 0;
}
