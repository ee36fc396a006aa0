// Conversions between the hecate.v1 wire messages and placement's domain types, plus proto3 JSON
// file helpers. The only place that knows both shapes; used by controller/service, the worker
// agent, clients and sim. Pure functions; thread-safe.
#ifndef HECATE_COMMON_WIRE_H_
#define HECATE_COMMON_WIRE_H_

#include <string>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "hecate/v1/types.pb.h"
#include "placement/calibration.h"
#include "placement/cluster.h"
#include "placement/plan.h"

namespace hecate::wire {

placement::ClusterSpec FromProto(const v1::ClusterSpec& p);
v1::ClusterSpec ToProto(const placement::ClusterSpec& c);
placement::ModelSpec FromProto(const v1::ModelSpec& p);
v1::ModelSpec ToProto(const placement::ModelSpec& m);

placement::CalibrationRule FromProto(const v1::CalibrationRule& p);
v1::CalibrationRule ToProto(const placement::CalibrationRule& r);

placement::PlanId FromProto(const v1::PlanId& p);
v1::PlanId ToProto(const placement::PlanId& id);

// Structural conversion only; validate the result with placement::Validate.
placement::Plan FromProto(const v1::Plan& p);
v1::Plan ToProto(const placement::Plan& plan);

// The plan as WatchPlans sends it unless asked for device detail: without the per-device
// predictions (LayerPrediction.device_tokens, Plan.predicted_device_memory_bytes).
v1::Plan Lean(v1::Plan plan);

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

// proto3 canonical JSON (what hecatectl -o json prints and what grpcurl speaks).
std::string ToJson(const google::protobuf::Message& m, bool pretty = true);
absl::Status FromJson(const std::string& json, google::protobuf::Message* m);
// Reads a proto3 JSON file into `m`: NOT_FOUND if missing, INVALID_ARGUMENT if it does not parse.
absl::Status ReadJsonFile(const std::string& path, google::protobuf::Message* m);

}  // namespace hecate::wire

#endif  // HECATE_COMMON_WIRE_H_
