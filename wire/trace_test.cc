#include "wire/trace.h"

#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

#include "placement/synthetic.h"

namespace hecate::wire {
namespace {

std::string Tmp(const std::string& n) {
  const char* t = std::getenv("TEST_TMPDIR");
  return std::string(t ? t : "/tmp") + "/" + n;
}

TEST(TraceTest, RoundTripAndTruncation) {
  placement::Cluster c = placement::Cluster::Uniform(2, 2, 1 << 30, 1e12, 1e11, 1e10);
  placement::ModelSpec m = placement::UniformModel("m", 2, 4, 2, 8, 16, 4, 32, 1e-3);
  Trace t;
  t.cluster = c.spec();
  t.model = m;
  for (uint64_t i = 0; i < 3; ++i) {
    t.iterations.push_back(i);
    t.loads.push_back(placement::SkewedLoad(c, m, placement::SkewOptions{}, i));
  }
  const std::string path = Tmp("t.trace");
  ASSERT_TRUE(WriteTrace(path, t).ok());
  absl::StatusOr<Trace> back = ReadTrace(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->loads.size(), 3u);
  EXPECT_EQ(back->loads[2][1], t.loads[2][1]);
  EXPECT_EQ(back->model.layers.size(), 2u);
  EXPECT_EQ(back->cluster.nodes.size(), 2u);
  // A crashed recorder leaves half an iteration: it is dropped.
  std::ofstream(path, std::ios::app) << "iteration 3\n1 2 3\n";
  back = ReadTrace(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->loads.size(), 3u);
  EXPECT_EQ(ReadTrace(Tmp("missing")).status().code(), absl::StatusCode::kNotFound);
  std::ofstream(Tmp("bad")) << "hello\n";
  EXPECT_EQ(ReadTrace(Tmp("bad")).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace hecate::wire
