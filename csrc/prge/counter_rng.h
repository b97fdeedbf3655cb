#pragma once
// Counter-based noise built only from ordinary int64 tensor ops (xor, and, multiply,
// right shift), so the same integers come out of LibTorch, an exported torch graph,
// ONNX Runtime or AOTInductor: the RNG an inference engine can run without a custom
// kernel (shifts, not floor division: exporters lower integer floor division through
// float32). Every value is a uint32 held in int64 and every multiplier is below 2^31, so no
// product overflows. python/prge/export/counter_rng.py is the same function in torch.
//
//   mix32(x)            = lowbias-style 32-bit finaliser (a bijection on [0, 2^32))
//   step_key(seed,step) = derive_seed(seed, step, 0, 0) mod 2^32      (host side)
//   stream_key(k, p, i) = mix32(mix32(k) xor mix32(p * 4096 + i))     (param p, query i)
//   bits_j              = mix32(stream_key xor mix32(j)),  j = 0 .. 2n-1
//   gaussian z_j        = sqrt(-2 ln u1_j) cos(2 pi u2_j),  u = (bits >> 8 + 0.5) / 2^24,
//                         u1 from j < n, u2 from j >= n   (Box-Muller, float32)
//   rademacher z_j      = 1 - 2 (bits_j >> 31)
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace prge::counter_rng {

constexpr int64_t kMask32 = 0xFFFFFFFFLL;
constexpr int64_t kMul1 = 0x7FEB352DLL;
constexpr int64_t kMul2 = 0x2C1B3C6DLL;
constexpr int64_t kQueriesPerParam = 4096;

uint32_t mix32(uint32_t x);
torch::Tensor mix32(const torch::Tensor& x);  // elementwise on int64 values in [0, 2^32)

uint32_t step_key(uint64_t seed, int64_t step);
uint32_t stream_key(uint32_t step_key, int64_t param_index, int64_t query);

// n float32 values of the stream (gaussian or rademacher), on `device`.
torch::Tensor noise(uint32_t stream_key, int64_t n, bool gaussian, const torch::Device& device);
// [keys.size(), n]: row i is noise(keys[i], n); one batch of kernels for all rows.
torch::Tensor noise_rows(const std::vector<uint32_t>& stream_keys, int64_t n, bool gaussian,
                         const torch::Device& device);

}  // namespace prge::counter_rng
