// Shared fixtures of the fuzz harnesses and their seed maker: a small job (4 ranks on 2 nodes,
// 2 layers x 8 experts), plans for it, and a scratch file for harnesses whose parser reads a path.
#ifndef HECATE_TESTS_FUZZ_FUZZ_INPUTS_H_
#define HECATE_TESTS_FUZZ_FUZZ_INPUTS_H_

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "hecate/v1/types.pb.h"
#include "placement/cluster.h"
#include "placement/policy.h"
#include "placement/synthetic.h"
#include "wire/convert.h"

namespace hecate::fuzz {

inline const placement::Cluster& TestCluster() {
  static const placement::Cluster c =
      placement::Cluster::Uniform(2, 2, int64_t{1} << 30, 1e12, 1e11, 1e10, 1e-5);
  return c;
}

inline const placement::ModelSpec& TestModel() {
  static const placement::ModelSpec m =
      placement::UniformModel("fuzz", 2, 8, 2, 32, 64, 4, 128, 1e-3);
  return m;
}

// The plan `policy` makes for skewed loads of iteration `it`, as it goes over the wire.
inline v1::Plan TestPlan(uint64_t it, uint64_t version, const std::string& policy = "hecate") {
  placement::SkewOptions o;
  o.zipf_s = 1.2;
  const placement::ModelLoad load = placement::SkewedLoad(TestCluster(), TestModel(), o, it);
  placement::PlanRequest r{&TestCluster(), &TestModel(), &load};
  placement::Plan p = (*placement::MakePolicy(policy))->Compute(r);
  p.job_id = "job";
  p.id = {1, version};
  return wire::ToProto(p);
}

// Writes `data` to this process's scratch file and returns its path.
inline std::string ScratchFile(const uint8_t* data, size_t size) {
  static const std::string path = [] {
    const char* t = std::getenv("TEST_TMPDIR");
    return std::string(t ? t : "/tmp") + "/hecate_fuzz_" + std::to_string(getpid());
  }();
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

}  // namespace hecate::fuzz

#endif  // HECATE_TESTS_FUZZ_FUZZ_INPUTS_H_
