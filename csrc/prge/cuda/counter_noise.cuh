#pragma once
// The counter RNG of counter_rng.h on the device, bit for bit: the hashes in uint32 arithmetic
// (which wraps exactly like the masked int64 ops), float32 Box-Muller with the CUDA math
// library, as ATen's CUDA kernels compute it. Shared by every kernel that draws z.
#include "prge/counter_rng.h"

#include <cstdint>

namespace prge::cuda {

__device__ __forceinline__ uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= static_cast<uint32_t>(counter_rng::kMul1);
  x ^= x >> 15;
  x *= static_cast<uint32_t>(counter_rng::kMul2);
  x ^= x >> 16;
  return x;
}

__device__ __forceinline__ uint32_t stream_key(uint32_t step_key, int64_t param, int64_t query) {
  const auto coordinate = static_cast<uint32_t>(param * counter_rng::kQueriesPerParam + query);
  return mix32(mix32(step_key) ^ mix32(coordinate));
}

// float(x) for x < 2^24, exactly as the I2F conversion gives it, without the conversion unit
// (a quarter-rate instruction): 2^23 + (x mod 2^23) read from its bits, less 2^23 unless bit 23
// was set. Every step is exact.
__device__ __forceinline__ float float_of_24_bits(uint32_t x) {
  const float v = __uint_as_float(0x4B000000u | (x & 0x7FFFFFu));
  return (x & 0x800000u) ? v : __fsub_rn(v, 8388608.0f);
}

// u of counter j of a stream, from mix32(j) (the part of the draw that depends on j alone).
__device__ __forceinline__ float uniform_of(uint32_t key, uint32_t mixed_counter) {
  const uint32_t bits = mix32(mixed_counter ^ key);
  return __fmul_rn(__fadd_rn(float_of_24_bits(bits >> 8), 0.5f), 1.0f / 16777216.0f);
}

// Box-Muller over two uniforms (float32, the ATen ops' rounding).
__device__ __forceinline__ float box_muller(float u1, float u2) {
  const float radius = sqrtf(__fmul_rn(logf(u1), -2.0f));
  return __fmul_rn(radius, cosf(__fmul_rn(u2, static_cast<float>(2.0 * M_PI))));
}

// z_k of a stream of n values from the counter hashes mix32(k) and mix32(n + k): Box-Muller over
// (u_k, u_{n+k}), or a Rademacher sign from counter k. Callers hoist the two hashes out of their
// loops over streams, since they do not depend on the key.
__device__ __forceinline__ float noise_of(uint32_t key, uint32_t mixed_k, uint32_t mixed_n_plus_k, bool gaussian) {
  if (!gaussian) {
    const uint32_t bits = mix32(mixed_k ^ key);
    return 1.0f - 2.0f * static_cast<float>(bits >> 31);
  }
  return box_muller(uniform_of(key, mixed_k), uniform_of(key, mixed_n_plus_k));
}

__device__ __forceinline__ float noise(uint32_t key, int64_t k, int64_t n, bool gaussian) {
  return noise_of(key, mix32(static_cast<uint32_t>(k)), mix32(static_cast<uint32_t>(n + k)), gaussian);
}

}  // namespace prge::cuda
