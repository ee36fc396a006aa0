#include "controller/core/registration_proto.h"

#include "common/wire.h"

namespace hecate::controller {

v1::RegisterWorkerRequest WorkerToProto(const WorkerRegistration& w) {
  v1::RegisterWorkerRequest p;
  p.set_job_id(w.job_id);
  p.set_rank(w.rank);
  p.set_world_size(w.world_size);
  p.set_node(w.node);
  p.set_local_rank(w.local_rank);
  p.set_device_kind(w.device_kind);
  p.set_device_memory_bytes(w.device_memory_bytes);
  p.set_incarnation(w.incarnation);
  *p.mutable_model() = wire::ToProto(w.model);
  *p.mutable_links() = wire::ToProto(w.links);
  *p.mutable_calibration() = wire::ToProto(w.calibration);
  return p;
}

WorkerRegistration WorkerFromProto(const v1::RegisterWorkerRequest& p) {
  WorkerRegistration w;
  w.job_id = p.job_id();
  w.rank = static_cast<int>(p.rank());
  w.world_size = static_cast<int>(p.world_size());
  w.node = p.node();
  w.local_rank = static_cast<int>(p.local_rank());
  w.device_kind = p.device_kind();
  w.device_memory_bytes = static_cast<int64_t>(p.device_memory_bytes());
  w.incarnation = p.incarnation();
  w.model = wire::FromProto(p.model());
  w.links = wire::FromProto(p.links());
  if (p.has_calibration()) w.calibration = wire::FromProto(p.calibration());
  return w;
}

}  // namespace hecate::controller
