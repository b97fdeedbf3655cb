#include "prge/counter_rng.h"

#include "prge/seeds.h"

#include <cmath>
#include <stdexcept>

namespace prge::counter_rng {

uint32_t mix32(uint32_t x) {
  uint64_t v = x;
  v ^= v >> 16;
  v = (v * kMul1) & kMask32;
  v ^= v >> 15;
  v = (v * kMul2) & kMask32;
  v ^= v >> 16;
  return static_cast<uint32_t>(v);
}

torch::Tensor mix32(const torch::Tensor& x) {
  auto v = x.bitwise_xor(torch::bitwise_right_shift(x, 16));
  v = v.mul(kMul1).bitwise_and(kMask32);
  v = v.bitwise_xor(torch::bitwise_right_shift(v, 15));
  v = v.mul(kMul2).bitwise_and(kMask32);
  return v.bitwise_xor(torch::bitwise_right_shift(v, 16));
}

uint32_t step_key(uint64_t seed, int64_t step) {
  return static_cast<uint32_t>(derive_seed(seed, step, 0, 0) & kMask32);
}

uint32_t stream_key(uint32_t key, int64_t param_index, int64_t query) {
  if (query < 0 || query >= kQueriesPerParam) {
    throw std::invalid_argument("counter rng: query index must be in [0, 4096)");
  }
  const auto coordinate = static_cast<uint32_t>((param_index * kQueriesPerParam + query) & kMask32);
  return mix32(mix32(key) ^ mix32(coordinate));
}

torch::Tensor noise_rows(const std::vector<uint32_t>& keys, int64_t n, bool gaussian,
                         const torch::Device& device) {
  const auto ints = torch::TensorOptions().dtype(torch::kInt64).device(device);
  const int64_t count = gaussian ? 2 * n : n;
  std::vector<int64_t> key_values(keys.begin(), keys.end());
  auto key_column = torch::tensor(key_values, torch::kInt64).to(device).view({-1, 1});
  auto bits = mix32(mix32(torch::arange(count, ints)).unsqueeze(0).bitwise_xor(key_column));  // [q, count]
  if (!gaussian) return torch::bitwise_right_shift(bits, 31).mul(-2).add(1).to(torch::kFloat32);
  auto u = torch::bitwise_right_shift(bits, 8).to(torch::kFloat32).add(0.5).mul(1.0 / (1 << 24));
  auto u1 = u.narrow(1, 0, n), u2 = u.narrow(1, n, n);
  return u1.log().mul(-2.0).sqrt().mul(u2.mul(2.0 * M_PI).cos());
}

torch::Tensor noise(uint32_t key, int64_t n, bool gaussian, const torch::Device& device) {
  return noise_rows({key}, n, gaussian, device).squeeze(0);
}

}  // namespace prge::counter_rng
