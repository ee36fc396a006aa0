// Wire messages of a small simulated job ("job": 2 layers x 8 experts, ranks split over nodes n0
// and n1), for tests that drive a controller over gRPC.
#ifndef HECATE_CONTROLLER_TEST_JOB_H_
#define HECATE_CONTROLLER_TEST_JOB_H_

#include <cstdint>

#include "hecate/v1/controller.pb.h"
#include "placement/cluster.h"
#include "wire/convert.h"

namespace hecate::controller::testing {

inline v1::RegisterWorkerRequest Registration(int rank, int world) {
  v1::RegisterWorkerRequest r;
  r.set_job_id("job");
  r.set_rank(rank);
  r.set_world_size(world);
  r.set_node(rank < world / 2 ? "n0" : "n1");
  r.set_local_rank(rank % (world / 2));
  r.set_device_kind("cpu");
  r.set_device_memory_bytes(int64_t{1} << 30);
  r.set_incarnation(1);
  *r.mutable_model() = wire::ToProto(placement::UniformModel("m", 2, 8, 2, 32, 64, 4, 128, 1e-3));
  r.mutable_links()->set_intra_node_bandwidth_bytes_per_second(1e10);
  r.mutable_links()->set_inter_node_bandwidth_bytes_per_second(1e9);
  r.mutable_links()->add_nodes()->set_device_flops_per_second(1e10);
  return r;
}

// One rank's report: 128 tokens, top-2; the hot expert takes 144 of 256 choices and moves every
// `hot_period` iterations.
inline v1::LoadReport Report(int rank, uint64_t iteration, v1::PlanId plan, int hot_period) {
  v1::LoadReport r;
  r.set_job_id("job");
  r.set_rank(rank);
  r.set_incarnation(1);
  r.set_iteration(iteration);
  *r.mutable_plan() = plan;
  const int hot = static_cast<int>(iteration / hot_period) % 8;
  for (int l = 0; l < 2; ++l) {
    v1::LayerLoad* layer = r.add_layers();
    layer->set_layer(l);
    for (int e = 0; e < 8; ++e) layer->add_expert_tokens(e == hot ? 144 : 16);
  }
  r.mutable_timings()->set_attention_seconds(1e-3);
  r.set_tokens(128);
  return r;
}

}  // namespace hecate::controller::testing

#endif  // HECATE_CONTROLLER_TEST_JOB_H_
