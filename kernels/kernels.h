// Data-movement kernels of the MoE data plane, one signature for the CPU reference
// (kernels/cpu, always built and tested) and the CUDA version (kernels/cuda, --config=cuda, same
// index math, parity-tested against the reference on a GPU).
//
// Layout conventions: activations are row-major [rows x d] float32; an "assignment" is one of a
// token's top-k choices, numbered t * k + j; expert chunks are flat float32 arrays. Every kernel
// writes only its outputs; inputs are never modified. Index arrays are int64. CPU pointers for
// the reference, device pointers (plus a stream) for CUDA.
//
// Every kernel is on the production path: GatherRows and the combine pair move the MoE layer's
// tokens (worker/fssdp/token_kernels.h), AccumulateChunks sums received gradient chunks on device
// memory (the NCCL communicator and the staging communicator's spRS).
#ifndef HECATE_KERNELS_KERNELS_H_
#define HECATE_KERNELS_KERNELS_H_

#include <cstdint>

namespace hecate::kernels {

// Token permutation by destination: out[i] = x[index[i]] for i < n (rows of width d). With
// index[i] = the token of sent row i, this builds the All-to-All send buffer grouped by
// destination.
void GatherRows(const float* x, int64_t d, const int64_t* index, int64_t n, float* out);

// Top-k combine: y[t] = sum_j weights[t*k + j] * in[position[t*k + j]] for t < tokens.
void WeightedCombine(const float* in, int64_t d, int64_t tokens, int64_t k, const float* weights,
                     const int64_t* position, float* y);

// Its backward: grad_in[position[a]] = weights[a] * grad_y[a / k]; and
// grad_weights[a] = dot(grad_y[a / k], in[position[a]]) for a < tokens * k.
void WeightedCombineBackward(const float* in, const float* grad_y, int64_t d, int64_t tokens,
                             int64_t k, const float* weights, const int64_t* position,
                             float* grad_in, float* grad_weights);

// Gradient accumulation of received chunks: dst[offsets[i] + j] += received[i * chunk_elems + j]
// (several chunks may target the same offset: they all add up).
void AccumulateChunks(const float* received, const int64_t* offsets, int64_t chunks,
                      int64_t chunk_elems, float* dst);

}  // namespace hecate::kernels

#endif  // HECATE_KERNELS_KERNELS_H_
