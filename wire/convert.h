// Conversions between the hecate.v1 wire messages and the domain types (placement's, and the
// registration and report records of wire/types.h), plus proto3 JSON file helpers. The one place
// that knows both shapes; used by controller/service and store, the worker, clients and sim.
// The plan codec (deltas, compact holder lists) is wire/plan_codec.h. Pure functions;
// thread-safe.
#ifndef HECATE_WIRE_CONVERT_H_
#define HECATE_WIRE_CONVERT_H_

#include <string>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "hecate/v1/controller.pb.h"
#include "hecate/v1/types.pb.h"
#include "placement/calibration.h"
#include "placement/cluster.h"
#include "placement/plan.h"
#include "wire/types.h"

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

// A worker's registration. FromProto: an absent calibration rule is the default one.
v1::RegisterWorkerRequest ToProto(const WorkerRegistration& w);
WorkerRegistration FromProto(const v1::RegisterWorkerRequest& p);

// A load report. FromProto: INVALID_ARGUMENT when the layers are not listed in layer order (a
// count too large for int64 becomes -1, for the core to reject as absurd).
v1::LoadReport ToProto(const LoadReport& r);
absl::StatusOr<LoadReport> FromProto(const v1::LoadReport& p);

// proto3 canonical JSON (what hecatectl -o json prints and what grpcurl speaks).
std::string ToJson(const google::protobuf::Message& m, bool pretty = true);
absl::Status FromJson(const std::string& json, google::protobuf::Message* m);
// Reads a proto3 JSON file into `m`: NOT_FOUND if missing, INVALID_ARGUMENT if it does not parse.
absl::Status ReadJsonFile(const std::string& path, google::protobuf::Message* m);

}  // namespace hecate::wire

#endif  // HECATE_WIRE_CONVERT_H_
