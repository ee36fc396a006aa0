// Writes the fuzz harnesses' seed corpora (real plans, deltas, reports, traces and CSV loads of
// the fuzz job) under DIR/<harness>/. The checked-in corpora in tests/fuzz/corpus come from
//   bazel run //tests/fuzz:make_seeds -- $PWD/tests/fuzz/corpus
// and the cluster/model configs in sim/configs.
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/fuzz/fuzz_inputs.h"
#include "wire/convert.h"
#include "wire/plan_codec.h"
#include "wire/trace.h"

namespace {

void Put(const std::string& dir, const std::string& name, const std::string& bytes) {
  mkdir(dir.c_str(), 0755);
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  namespace fz = hecate::fuzz;
  namespace wire = hecate::wire;
  const std::string dir = argv[1];
  mkdir(dir.c_str(), 0755);
  const hecate::v1::Plan p1 = fz::TestPlan(0, 1), p2 = fz::TestPlan(7, 2),
                         p3 = fz::TestPlan(3, 3, "hecate-rm");
  const std::string plans = dir + "/plan_delta";
  Put(plans, "full", wire::Lean(p2).SerializeAsString());
  Put(plans, "delta", wire::MakeDelta(p1, p2).SerializeAsString());
  Put(plans, "delta_remat", wire::MakeDelta(p1, p3).SerializeAsString());
  Put(plans, "compact_full", wire::CompactHolders(wire::Lean(p2), p2).SerializeAsString());
  Put(plans, "compact_delta",
      wire::CompactHolders(wire::MakeDelta(p1, p2), p2).SerializeAsString());

  const std::string reports = dir + "/load_report";
  hecate::placement::SkewOptions o;
  o.zipf_s = 1.2;
  for (uint64_t it = 0; it < 3; ++it) {
    const hecate::placement::ModelLoad load =
        hecate::placement::SkewedLoad(fz::TestCluster(), fz::TestModel(), o, it);
    for (int r = 0; r < 4; ++r) {
      hecate::wire::LoadReport rep;
      rep.job_id = "job";
      rep.rank = r;
      rep.incarnation = 1;
      rep.iteration = it;
      rep.tokens = 128;
      for (const hecate::placement::LoadMatrix& m : load) {
        const int64_t* row = m.row(r);
        rep.layers.emplace_back(row, row + m.num_experts());
      }
      Put(reports, absl::StrCat("it", it, "_rank", r), wire::ToProto(rep).SerializeAsString());
    }
  }

  const std::string traces = dir + "/trace", csv = dir + "/loads_csv";
  mkdir(traces.c_str(), 0755);
  mkdir(csv.c_str(), 0755);
  {
    auto w = hecate::wire::TraceWriter::Open(traces + "/three_iterations", fz::TestCluster().spec(),
                                             fz::TestModel());
    if (!w.ok()) return 1;
    for (uint64_t it = 0; it < 3; ++it) {
      if (!(*w)->Append(it,
                        hecate::placement::SkewedLoad(fz::TestCluster(), fz::TestModel(), o, it))
               .ok()) {
        return 1;
      }
    }
  }
  std::ifstream t(traces + "/three_iterations", std::ios::binary);
  Put(csv, "trace", std::string((std::istreambuf_iterator<char>(t)), {}));
  std::string lines = "layer,expert,tokens\n";
  for (int l = 0; l < 2; ++l) {
    for (int e = 0; e < 8; ++e) absl::StrAppend(&lines, l, ",", e, ",", e == 3 ? 400 : 20, "\n");
  }
  Put(csv, "csv", lines);
  std::printf("seeds written under %s\n", dir.c_str());
  return 0;
}
