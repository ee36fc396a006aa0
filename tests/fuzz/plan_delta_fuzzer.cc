// WatchPlans' decoder: bytes as a Plan (a delta, a compact plan or a full one) applied to the plan
// a worker holds (wire::ApplyDelta: holder codes, owner runs, shapes). A decoded plan must
// convert to the planner's form.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_inputs.h"
#include "wire/convert.h"
#include "wire/plan_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const hecate::v1::Plan base = hecate::fuzz::TestPlan(0, 1);
  hecate::v1::Plan delta;
  if (!delta.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<hecate::v1::Plan> next = hecate::wire::ApplyDelta(base, delta);
  if (next.ok()) (void)hecate::wire::FromProto(*next);
  return 0;
}
