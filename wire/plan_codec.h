// The plan codec of WatchPlans: deltas against the plan a stream delivered last, and compact
// holder lists (gamma and Golomb-Rice codes, see types.proto). Pure functions; thread-safe.
#ifndef HECATE_WIRE_PLAN_CODEC_H_
#define HECATE_WIRE_PLAN_CODEC_H_

#include "absl/status/statusor.h"
#include "hecate/v1/types.pb.h"

namespace hecate::wire {

// Plan deltas (WatchPlansRequest.accept_deltas). MakeDelta(base, next) carries next's top-level
// fields and, per layer that differs, its remat, prediction, owners (only if changed) and the
// holders of the experts whose holders changed. ApplyDelta(base, delta) rebuilds next exactly:
// FAILED_PRECONDITION when `base` is not the delta's base, INVALID_ARGUMENT when the delta does not
// fit the base's shape. MakeDelta requires both plans to have the same layers and experts (it
// returns next itself otherwise).
v1::Plan MakeDelta(const v1::Plan& base, const v1::Plan& next);
absl::StatusOr<v1::Plan> ApplyDelta(const v1::Plan& base, const v1::Plan& delta);

// Compact holder lists (WatchPlansRequest.compact_holders). CompactHolders(plan, full) takes `full`
// itself or MakeDelta(base, full) and replaces every layer's `replicas` by holders_coded (gamma
// and Golomb-Rice codes, see types.proto), reading the owners from `full`, and every `owner` list
// it carries by owner_runs (run-length coded steps); it returns `plan` unchanged when some holder
// list is not ascending or lacks its owner (never the case for a valid plan). ApplyDelta accepts
// compact plans and deltas and returns `replicas` and `owner` form: INVALID_ARGUMENT when the
// compact lists do not decode (a code that ends early or has bits left over, more holders than
// devices, a holder past the coded device range, the owner listed, owner runs that are not pairs,
// empty or leave the device range, both forms in one layer) or, for a whole plan, when a layer
// lacks holder lists.
v1::Plan CompactHolders(v1::Plan plan, const v1::Plan& full);

}  // namespace hecate::wire

#endif  // HECATE_WIRE_PLAN_CODEC_H_
