// WorkerRegistration <-> hecate.v1.RegisterWorkerRequest, shared by the gRPC service (ingest) and
// the state store (the registry is persisted as the request it came from). Kept out of :core so the
// state machine stays free of protobuf.
#ifndef HECATE_CONTROLLER_CORE_REGISTRATION_PROTO_H_
#define HECATE_CONTROLLER_CORE_REGISTRATION_PROTO_H_

#include "controller/core/controller_core.h"
#include "hecate/v1/controller.pb.h"

namespace hecate::controller {

v1::RegisterWorkerRequest WorkerToProto(const WorkerRegistration& w);
WorkerRegistration WorkerFromProto(const v1::RegisterWorkerRequest& p);

}  // namespace hecate::controller

#endif  // HECATE_CONTROLLER_CORE_REGISTRATION_PROTO_H_
