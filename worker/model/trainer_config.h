// What the GPT-MoE trainer builds and where it runs (worker/model/trainer.h). Torch-free, so the
// worker's composition root and its flags can include it cheaply.
#ifndef HECATE_WORKER_MODEL_TRAINER_CONFIG_H_
#define HECATE_WORKER_MODEL_TRAINER_CONFIG_H_

#include <cstdint>
#include <string>

#include "placement/calibration.h"
#include "placement/plan.h"

namespace hecate::worker {

// Where a rank's model, optimizer state and token buffers live.
enum class DeviceKind { kCpu, kCuda };
inline const char* DeviceKindName(DeviceKind device) {
  return device == DeviceKind::kCuda ? "cuda" : "cpu";
}

struct TrainerConfig {
  int layers = 2;
  int d_model = 64;
  int heads = 4;
  int experts = 8;
  int top_k = 2;
  int d_ffn = 128;
  int seq_len = 32;
  int batch = 8;  // sequences per rank per iteration
  double lr = 3e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double aux_loss = 0.0;  // auxiliary balance-loss coefficient (0: off)
  // Adds this to the gate logits of experts 0..skew_experts-1 in every layer: a steady imbalance
  // toward the experts rank 0 owns under even sharding, for benchmarks and tests (0: off).
  double gate_bias = 0.0;
  int skew_experts = 1;
  uint64_t seed = 1;
  bool float64 = false;
  // The whole model (dense part, MoE layers, Adam state) lives on this device; on CUDA, the
  // communicator must take device memory (Communicator::device_memory()).
  DeviceKind device = DeviceKind::kCpu;
  int device_index = 0;  // the CUDA device (several ranks may share one)
  // spAG of layer l starts this many layers ahead (at the start of layer l - prefetch_layers's
  // attention) when the trainer has a lane; the memory model assumes placement::kPrefetchLayers.
  int prefetch_layers = placement::kPrefetchLayers;
  // Calibrate the plans of policies that calibrate (placement::PolicyCalibrates) on each
  // iteration's actual counts under this rule; see MoEConfig. Off by default.
  placement::CalibrationRule calibration{/*enabled=*/false};
  std::string data_path = "/usr/share/games/fortunes/fortunes";
};

}  // namespace hecate::worker

#endif  // HECATE_WORKER_MODEL_TRAINER_CONFIG_H_
