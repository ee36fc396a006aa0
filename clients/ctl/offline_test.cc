// hecatectl's offline plan commands on small hand-checked inputs.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "clients/ctl/ctl.h"
#include "clients/ctl/placement_file.h"

namespace hecate::ctl {
namespace {

// One node of 2 devices; 1 layer of 2 experts (1,000 parameter bytes each), top-1. Loads: expert
// 0 300 tokens, expert 1 100, each spread evenly over the 2 sources (150 + 50 per source).
class PlanEvaluateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir();
    cluster_ = Write("cluster.json", R"({"name": "t", "nodes": [{"name": "n0", "numDevices": 2,
        "deviceMemoryBytes": "1073741824", "deviceFlopsPerSecond": 1e12}],
        "intraNodeBandwidthBytesPerSecond": 1e11, "interNodeBandwidthBytesPerSecond": 1e10,
        "linkLatencySeconds": 1e-6})");
    model_ = Write("model.json", R"({"name": "m", "topK": 1, "dModel": 16, "tokenBytes": "32",
        "tokensPerDevice": "200", "attentionForwardSeconds": 0.001, "layers": [{"numExperts": 2,
        "expertParamBytes": "1000", "expertOptimizerBytes": "6000",
        "expertFlopsPerToken": 1000, "dFfn": 32}]})");
    loads_ = Write("loads.csv", "layer,expert,tokens\n0,0,300\n0,1,100\n");
  }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  int Evaluate(const std::string& placement, std::vector<std::string> extra, std::string* out,
               std::string* err = nullptr) {
    std::vector<std::string> args = {"plan",
                                     "evaluate",
                                     "--placement=" + placement,
                                     "--loads=" + loads_,
                                     "--cluster=" + cluster_,
                                     "--model=" + model_};
    args.insert(args.end(), extra.begin(), extra.end());
    std::ostringstream o, e;
    const int rc = ctl::Run(args, "", o, e);
    *out = o.str();
    if (err != nullptr) *err = e.str();
    return rc;
  }

  std::string dir_, cluster_, model_, loads_;
};

TEST_F(PlanEvaluateTest, CsvPlacementUnderEachDispatchRule) {
  // Expert 0 on both devices (owner 0), expert 1 on device 1.
  const std::string p = Write("p.csv",
                              "# a hand-made placement\nlayer,expert,devices\n"
                              "0,0,0;1\n0,1,1\n");
  std::string out;
  // replica-even: each source sends 75 of expert 0's tokens to each holder: devices 150 and
  // 150 + 100 = 250; max/mean 250/200. One 2-member replica group: a ring AllReduce moves 2 x
  // (2-1)/2 x 1,000 bytes per member, 2,000 in all.
  ASSERT_EQ(Evaluate(p, {}, &out), kOk) << out;
  EXPECT_NE(out.find("dispatch replica-even, persistent copies"), std::string::npos) << out;
  EXPECT_NE(out.find("balancedness 0.800"), std::string::npos) << out;
  EXPECT_NE(out.find("2000 bytes/iter sparse"), std::string::npos) << out;
  EXPECT_NE(out.find("1.250"), std::string::npos) << out;  // MAX/MEAN column
  // load-aware: expert 0's pool is water-filled, 200 and 200.
  ASSERT_EQ(Evaluate(p, {"--dispatch=load-aware"}, &out), kOk) << out;
  EXPECT_NE(out.find("balancedness 1.000"), std::string::npos) << out;
  // FSSDP copies: spAG gathers 1,000 bytes to device 1, spRS returns as many.
  ASSERT_EQ(Evaluate(p, {"--dispatch=load-aware", "--semantics=ephemeral"}, &out), kOk) << out;
  EXPECT_NE(out.find("ephemeral copies"), std::string::npos) << out;
  EXPECT_NE(out.find("2000 bytes/iter sparse"), std::string::npos) << out;
}

TEST_F(PlanEvaluateTest, EplbPhy2LogTable) {
  // 4 slots, 2 per device: device 0 holds experts 0 and 1, device 1 two slots of expert 0 (one
  // copy). Expert 0 on {0, 1}, expert 1 on {0}: devices 150 + 100 = 250 and 150.
  const std::string p = Write("p.json", R"({"num_gpus": 2, "phy2log": [[0, 1, 0, 0]]})");
  std::string out;
  ASSERT_EQ(Evaluate(p, {}, &out), kOk) << out;
  EXPECT_NE(out.find("balancedness 0.800"), std::string::npos) << out;
  const placement::Cluster c = placement::Cluster::Uniform(1, 2, 1 << 30, 1e12, 1e11, 1e10);
  placement::ModelSpec m;
  m.layers.push_back(placement::LayerSpec{2, 1000, 6000, 1000});
  absl::StatusOr<std::vector<placement::LayerPlan>> layers =
      ParsePlacement(R"({"phy2log": [[0, 1, 0, 0]]})", "x", c, m);
  ASSERT_TRUE(layers.ok()) << layers.status();
  EXPECT_EQ((*layers)[0].replicas[0], (std::vector<placement::DeviceId>{0, 1}));
  EXPECT_EQ((*layers)[0].replicas[1], (std::vector<placement::DeviceId>{0}));
  EXPECT_EQ((*layers)[0].owner[0], 0);
}

TEST_F(PlanEvaluateTest, BadInputIsAClearErrorAndNamesTheLine) {
  std::string out, err;
  EXPECT_EQ(Evaluate(Write("missing.csv", "0,0,0\n"), {}, &out, &err), kRejected);
  EXPECT_NE(err.find("layer 0 expert 1 has no line"), std::string::npos) << err;
  EXPECT_EQ(Evaluate(Write("dup.csv", "0,0,0\n0,1,1\n0,1,0\n"), {}, &out, &err), kRejected);
  EXPECT_NE(err.find("dup.csv:3: layer 0 expert 1 is listed twice"), std::string::npos) << err;
  EXPECT_EQ(Evaluate(Write("dev.csv", "0,0,0;7\n0,1,1\n"), {}, &out, &err), kRejected);
  EXPECT_NE(err.find("dev.csv:1: device '7' is not in the cluster"), std::string::npos) << err;
  EXPECT_EQ(Evaluate(Write("slots.json", R"({"phy2log": [[0, 1, 0]]})"), {}, &out, &err),
            kRejected);
  EXPECT_NE(err.find("3 slots, not a positive multiple of the 2 devices"), std::string::npos)
      << err;
  EXPECT_EQ(Evaluate(Write("gpus.json", R"({"num_gpus": 4, "phy2log": [[0, 1]]})"), {}, &out, &err),
            kRejected);
  EXPECT_EQ(Evaluate(Write("cover.json", R"({"phy2log": [[0, 0]]})"), {}, &out, &err), kRejected);
  EXPECT_NE(err.find("no slot for expert 1"), std::string::npos) << err;
  EXPECT_EQ(Evaluate(dir_ + "/nope.csv", {}, &out, &err), kNotFound);
  const std::string ok = Write("ok.csv", "0,0,0\n0,1,1\n");
  EXPECT_EQ(Evaluate(ok, {"--dispatch=nearest"}, &out, &err), kUsage);
  EXPECT_NE(err.find("--dispatch must be"), std::string::npos) << err;
  EXPECT_EQ(Evaluate(ok, {"--semantics=forever"}, &out, &err), kUsage);
  std::ostringstream o, e;
  EXPECT_EQ(ctl::Run({"plan", "evaluate"}, "", o, e), kUsage);
  EXPECT_NE(e.str().find("usage: plan evaluate --placement=FILE"), std::string::npos) << e.str();
}

TEST_F(PlanEvaluateTest, PlanComputeComparesPoliciesEachUnderItsOwnRules) {
  std::ostringstream o, e;
  ASSERT_EQ(ctl::Run({"plan", "compute", "--policy=all", "--loads=" + loads_,
                      "--cluster=" + cluster_, "--model=" + model_},
                     "", o, e),
            kOk)
      << e.str();
  const std::string out = o.str();
  for (const char* row : {"eplb", "flexmoe", "fastermoe", "smartmoe", "hecate-paper"}) {
    EXPECT_NE(out.find(row), std::string::npos) << row << "\n" << out;
  }
  // EPLB's and FlexMoE's rows are under their own dispatch rule.
  const size_t eplb = out.find("\neplb");
  ASSERT_NE(eplb, std::string::npos) << out;
  EXPECT_EQ(out.substr(eplb + 1, out.find('\n', eplb + 1) - eplb - 1).find("replica-even") ==
                std::string::npos,
            false)
      << out;
  std::ostringstream o2, e2;
  EXPECT_EQ(ctl::Run({"plan", "compute", "--policy=hecate,nope", "--loads=" + loads_,
                      "--cluster=" + cluster_, "--model=" + model_},
                     "", o2, e2),
            kNotFound);
  EXPECT_EQ(ctl::Run({"plan", "compute", "--extra-slots=x", "--loads=" + loads_,
                      "--cluster=" + cluster_, "--model=" + model_},
                     "", o2, e2),
            kUsage);
}

}  // namespace
}  // namespace hecate::ctl
