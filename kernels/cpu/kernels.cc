// CPU reference kernels: the index math the CUDA kernels must reproduce exactly.
#include "kernels/kernels.h"

#include <cstring>

namespace hecate::kernels {

void GatherRows(const float* x, int64_t d, const int64_t* index, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * d, x + index[i] * d, d * sizeof(float));
}

void WeightedCombine(const float* in, int64_t d, int64_t tokens, int64_t k, const float* weights,
                     const int64_t* position, float* y) {
  for (int64_t t = 0; t < tokens; ++t) {
    float* row = y + t * d;
    for (int64_t c = 0; c < d; ++c) row[c] = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t a = t * k + j;
      const float w = weights[a];
      const float* src = in + position[a] * d;
      for (int64_t c = 0; c < d; ++c) row[c] += w * src[c];
    }
  }
}

void WeightedCombineBackward(const float* in, const float* grad_y, int64_t d, int64_t tokens,
                             int64_t k, const float* weights, const int64_t* position,
                             float* grad_in, float* grad_weights) {
  for (int64_t a = 0; a < tokens * k; ++a) {
    const float* g = grad_y + (a / k) * d;
    const float* src = in + position[a] * d;
    float* gi = grad_in + position[a] * d;
    float dot = 0;
    for (int64_t c = 0; c < d; ++c) {
      gi[c] = weights[a] * g[c];
      dot += g[c] * src[c];
    }
    grad_weights[a] = dot;
  }
}

void AccumulateChunks(const float* received, const int64_t* offsets, int64_t chunks,
                      int64_t chunk_elems, float* dst) {
  for (int64_t i = 0; i < chunks; ++i) {
    float* out = dst + offsets[i];
    const float* in = received + i * chunk_elems;
    for (int64_t j = 0; j < chunk_elems; ++j) out[j] += in[j];
  }
}

}  // namespace hecate::kernels
