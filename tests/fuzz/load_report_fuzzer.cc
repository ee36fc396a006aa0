// The controller's report path: bytes as a LoadReport, converted (wire::FromProto) and ingested by
// a controller core with a registered 4-rank job (validation, the pending iteration, finalization).
// A fresh core every 4,096 inputs keeps memory bounded over long runs.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "controller/core/controller_core.h"
#include "tests/fuzz/fuzz_inputs.h"
#include "wire/convert.h"

namespace {

std::unique_ptr<hecate::controller::ControllerCore> FreshCore() {
  auto core =
      std::make_unique<hecate::controller::ControllerCore>(hecate::controller::CoreConfig(), 1);
  for (int r = 0; r < 4; ++r) {
    hecate::wire::WorkerRegistration reg;
    reg.job_id = "job";
    reg.rank = r;
    reg.world_size = 4;
    reg.node = r < 2 ? "n0" : "n1";
    reg.device_memory_bytes = int64_t{1} << 30;
    reg.incarnation = 1;
    reg.model = hecate::fuzz::TestModel();
    reg.links = hecate::fuzz::TestCluster().spec();
    if (!core->Register(reg, absl::UnixEpoch()).ok()) std::abort();
  }
  return core;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<hecate::controller::ControllerCore> core = FreshCore();
  static int n = 0;
  if (++n % 4096 == 0) core = FreshCore();
  hecate::v1::LoadReport p;
  if (!p.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<hecate::wire::LoadReport> r = hecate::wire::FromProto(p);
  if (!r.ok()) return 0;
  (void)core->Ingest(*r, absl::UnixEpoch() + absl::Seconds(n));
  return 0;
}
