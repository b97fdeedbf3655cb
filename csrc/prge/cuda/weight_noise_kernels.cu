#include "prge/cuda/weight_noise_kernels.h"

#include "prge/cuda/counter_noise.cuh"
#include "prge/cuda/vector_access.cuh"

namespace prge::cuda {
namespace {

__device__ __forceinline__ uint32_t step_key_of(const int64_t* device_key, uint32_t value) {
  return device_key ? static_cast<uint32_t>(*device_key) : value;
}

// One thread per element (grid-stride). 32-bit counters: a weight has < 2^31 elements (checked).
template <typename T>
__global__ void perturbed_weight_kernel(const T* w, T* out, uint32_t n, const int64_t* device_key, uint32_t key_value,
                                        int64_t param_index, int64_t query, float scale, bool gaussian) {
  const uint32_t key = stream_key(step_key_of(device_key, key_value), param_index, query);
  for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
    const float z = noise_of(key, mix32(j), mix32(n + j), gaussian);
    out[j] = Convert<T>::out(__fmaf_rn(scale, z, Convert<T>::in(w[j])));
  }
}

constexpr int kMaxKeysInShared = 64;  // more queries: each thread hashes its keys itself
static_assert(kThreads >= kMaxKeysInShared, "one pass of a block's threads fills the key table");

// As PerturbationStream::combine's ATen ops compute it: direction.add_(z_i, g_i) from zeros (a
// multiply-add each), then div_(q) (ATen multiplies by the float reciprocal of a scalar divisor).

__global__ void weight_direction_kernel(uint32_t n, const int64_t* device_key, uint32_t key_value,
                                        int64_t param_index, const float* g, int queries, bool gaussian,
                                        float* out) {
  __shared__ uint32_t keys[kMaxKeysInShared];
  const uint32_t step = step_key_of(device_key, key_value);
  const bool shared_keys = queries <= kMaxKeysInShared;
  const float inverse_queries = 1.0f / static_cast<float>(queries);
  if (shared_keys && static_cast<int>(threadIdx.x) < queries) keys[threadIdx.x] = stream_key(step, param_index, threadIdx.x);
  __syncthreads();
  for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
    const uint32_t mixed_k = mix32(j), mixed_n_plus_k = mix32(n + j);
    float acc = 0.0f;
    for (int i = 0; i < queries; ++i) {
      const uint32_t key = shared_keys ? keys[i] : stream_key(step, param_index, i);
      acc = __fmaf_rn(g[i], noise_of(key, mixed_k, mixed_n_plus_k, gaussian), acc);
    }
    out[j] = __fmul_rn(acc, inverse_queries);
  }
}

const int64_t* device_key_of(const StepKey& key) {
  if (!key.device.defined()) return nullptr;
  if (!key.device.is_cuda() || key.device.scalar_type() != torch::kInt64 || key.device.numel() != 1) {
    throw std::invalid_argument("prge cuda kernel: the step key must be a [1] int64 CUDA tensor");
  }
  return key.device.data_ptr<int64_t>();
}

void check_counter_range(int64_t numel) {
  if (numel >= (int64_t{1} << 31)) {
    throw std::invalid_argument("prge cuda kernel: the counter RNG draws at most 2^31 - 1 values per weight");
  }
}

}  // namespace

void perturbed_weight(const torch::Tensor& w, const StepKey& key, int64_t param_index, int64_t query, double scale,
                      bool gaussian, torch::Tensor& out) {
  if (!w.is_cuda() || !out.is_cuda() || !w.is_contiguous() || !out.is_contiguous() || w.sizes() != out.sizes() ||
      w.scalar_type() != out.scalar_type()) {
    throw std::invalid_argument("perturbed_weight: w and out must be contiguous CUDA tensors of one shape and dtype");
  }
  check_counter_range(w.numel());
  if (w.numel() == 0) return;
  const auto n = static_cast<uint32_t>(w.numel());
  const auto* device_key = device_key_of(key);
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch(w.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    perturbed_weight_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
        reinterpret_cast<const T*>(w.data_ptr()), reinterpret_cast<T*>(out.data_ptr()), n, device_key, key.value,
        param_index, query, static_cast<float>(scale), gaussian);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

torch::Tensor weight_direction(int64_t numel, const StepKey& key, int64_t param_index, const torch::Tensor& g,
                               bool gaussian) {
  if (!g.is_cuda() || g.scalar_type() != torch::kFloat32 || g.dim() != 1 || !g.is_contiguous() || g.size(0) < 1 ||
      g.size(0) > counter_rng::kQueriesPerParam) {
    throw std::invalid_argument("weight_direction: g must be a [q] float32 CUDA tensor, 1 <= q <= 4096");
  }
  check_counter_range(numel);
  auto out = torch::empty({numel}, g.options());
  if (numel == 0) return out;
  const auto n = static_cast<uint32_t>(numel);
  weight_direction_kernel<<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      n, device_key_of(key), key.value, param_index, g.data_ptr<float>(), static_cast<int>(g.size(0)), gaussian,
      out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace prge::cuda
