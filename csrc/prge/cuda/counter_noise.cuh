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

// u of a 24-bit draw m: (m + 0.5) / 2^24, in float32 as the ATen ops round it.
__device__ __forceinline__ float uniform_of_24_bits(uint32_t m) {
  return __fmul_rn(__fadd_rn(float_of_24_bits(m), 0.5f), 1.0f / 16777216.0f);
}

// u of counter j of a stream, from mix32(j) (the part of the draw that depends on j alone).
__device__ __forceinline__ float uniform_of(uint32_t key, uint32_t mixed_counter) {
  return uniform_of_24_bits(mix32(mixed_counter ^ key) >> 8);
}

// Box-Muller over two uniforms (float32, the ATen ops' rounding): radius(u1) * cosine(u2).
constexpr float kTwoPi = static_cast<float>(2.0 * M_PI);
__device__ __forceinline__ float radius(float u1) { return sqrtf(__fmul_rn(logf(u1), -2.0f)); }
__device__ __forceinline__ float cosine(float u2) { return cosf(__fmul_rn(u2, kTwoPi)); }
__device__ __forceinline__ float box_muller(float u1, float u2) { return __fmul_rn(radius(u1), cosine(u2)); }

// The same two factors from the approximate hardware functions (lg2.approx, sqrt.approx,
// cos.approx; a few instructions against ~100 for the precise ones), each with a bound on its
// distance from the precise factor above:
// - radius: |t - t'| <= kLogBound + kLogRelativeBound * t for t = -2 ln u1 (twice __logf's 2^-21.41
//   absolute error on [0.5, 2] or its 3 ulp elsewhere, plus logf's 1 ulp, with room), then
//   |sqrt(t) - sqrt(t')| <= min(sqrt(|t - t'|), |t - t'| / sqrt(t)), plus both square roots'
//   rounding (kSqrtRelativeBound); each approximate function's own error covered with 2^-20 of room;
// - cosine: the argument taken to [-pi, pi] first (u2 - 1 is exact), where __cosf's error is
//   2^-21.41; the two arguments' roundings and float32 2 pi's distance from 2 pi add ~5.6e-7.
// Those are CUDA's stated bounds, from tests; the device check (noise_bounds_hold) compares every
// one of the 2^24 values each factor can take before the bounds are used, so nothing rests on them.
constexpr float kLogBound = 8e-7f;
constexpr float kLogRelativeBound = 0x1p-20f;
constexpr float kSqrtRelativeBound = 0x1p-21f;
constexpr float kCosineBound = 1.25e-6f;

__device__ __forceinline__ float sqrt_approx(float x) {
  float y;
  asm("sqrt.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The approximate radius; `bound` (>= 0) is an upper bound on |it - radius(u1)|.
__device__ __forceinline__ float approx_radius(float u1, float& bound) {
  const float minus_two_log = __fmul_rn(__logf(u1), -2.0f);
  const float t = minus_two_log > 0.0f ? minus_two_log : 0.0f;  // +0 at u1 = 1 (-2 x +0 is -0)
  const float r = sqrt_approx(t);
  const float dt = __fmaf_ru(kLogRelativeBound, t, kLogBound);
  // rsqrtf (rsqrt.approx, within 2 ulp) with room; +inf at t = 0, where the square root's bound decides.
  const float through_sqrt =
      fminf(__fmul_ru(sqrt_approx(dt), 1.0f + 0x1p-20f), __fmul_ru(__fmul_ru(dt, rsqrtf(t)), 1.0f + 0x1p-20f));
  bound = __fmaf_ru(kSqrtRelativeBound, r, through_sqrt);
  return r;
}

// The approximate cosine; within kCosineBound of cosine(u2).
__device__ __forceinline__ float approx_cosine(float u2) {
  const float centred = u2 > 0.5f ? __fsub_rn(u2, 1.0f) : u2;
  return __cosf(__fmul_rn(centred, kTwoPi));
}

// An interval [lo, hi] that holds box_muller(u1, u2), from the approximate factors: with
// |r - r'| <= br and |c - c'| <= bc, |r c - r' c'| <= br (|c| + bc) + r bc, and each product's
// rounding to float32 adds at most 2^-24 of it. Rounded outward at every step.
__device__ __forceinline__ void approx_box_muller(float u1, float u2, float& lo, float& hi) {
  float br;
  const float r = approx_radius(u1, br), c = approx_cosine(u2);
  const float z = __fmul_rn(r, c);
  const float product_bound = __fmaf_ru(br, __fadd_ru(fabsf(c), kCosineBound), __fmul_ru(r, kCosineBound));
  const float bound = __fmaf_ru(product_bound, 1.0f + 0x1p-22f, __fmul_ru(fabsf(z), 0x1p-22f));
  lo = __fsub_rd(z, bound);
  hi = __fadd_ru(z, bound);
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
