// Cluster and model scales shared by the placement benchmarks.
#ifndef HECATE_BENCH_SCALES_H_
#define HECATE_BENCH_SCALES_H_

#include "placement/cluster.h"

namespace hecate::bench {

// Paper scale: 4 nodes x 8 V100-32G (NVLink 300 GB/s; one 100 Gb/s NIC per node), GPT-MoE-S (12
// layers x 64 experts, top-2, d_model 768, d_ffn 1536, fp16), 4096 tokens per device per layer, 1.5
// ms attention forward per block.
inline placement::Cluster PaperCluster() {
  return placement::Cluster::Uniform(4, 8, int64_t{32} << 30, 62.5e12, 300e9, 12.5e9, 5e-6);
}
inline placement::ModelSpec PaperModel() {
  return placement::UniformModel("gpt-moe-s", 12, 64, 2, 768, 1536, 2, 4096, 1.5e-3);
}

// DeepSeek-V3-like scale: 32 nodes x 8 H100-80G (NVLink 450 GB/s; 8 x 400 Gb/s NICs per node),
// 58 MoE layers x 256 experts, top-8, d_model 7168, expert hidden 2048, bf16.
inline placement::Cluster DeepSeekCluster() {
  return placement::Cluster::Uniform(32, 8, int64_t{80} << 30, 400e12, 450e9, 400e9, 5e-6, 50e9);
}
inline placement::ModelSpec DeepSeekModel() {
  return placement::UniformModel("deepseek-v3-like", 58, 256, 8, 7168, 2048, 2, 8192, 2e-3);
}

}  // namespace hecate::bench

#endif  // HECATE_BENCH_SCALES_H_
