#include "prge/cuda/adapter_kernels.h"

#include "prge/counter_rng.h"

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>

namespace prge::cuda {
namespace {

constexpr int kThreads = 256;

// counter_rng.h, bit for bit: uint32 arithmetic wraps exactly like the masked int64 ops.
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

__device__ __forceinline__ float uniform(uint32_t key, int64_t j) {
  const uint32_t bits = mix32(mix32(static_cast<uint32_t>(j)) ^ key);
  return __fmul_rn(__fadd_rn(static_cast<float>(bits >> 8), 0.5f), 1.0f / 16777216.0f);
}

// z_k of a stream of n values: Box-Muller over (u_k, u_{n+k}), or a Rademacher sign.
__device__ __forceinline__ float noise(uint32_t key, int64_t k, int64_t n, bool gaussian) {
  if (!gaussian) {
    const uint32_t bits = mix32(mix32(static_cast<uint32_t>(k)) ^ key);
    return 1.0f - 2.0f * static_cast<float>(bits >> 31);
  }
  const float u1 = uniform(key, k), u2 = uniform(key, n + k);
  const float radius = sqrtf(__fmul_rn(logf(u1), -2.0f));
  return __fmul_rn(radius, cosf(__fmul_rn(u2, static_cast<float>(2.0 * M_PI))));
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

struct Parts {
  GroupPart part[kMaxGroupParts];
  int count;
};

// One thread per element of the parts' blocks only (the zeros around them are left as they
// are). 32-bit index arithmetic (the stack has < 2^31 elements, checked at launch): 64-bit
// division per element cost more than the noise itself.
template <typename T>
__global__ void fill_group_blocks_kernel(Parts parts, const int64_t* query, const float* scale,
                                         const int64_t* step_key, bool gaussian, int copies, int rows,
                                         int cols, T* out) {
  uint32_t per_copy = 0;
  for (int p = 0; p < parts.count; ++p) per_copy += static_cast<uint32_t>(parts.part[p].rows * parts.part[p].rank);
  const auto total = static_cast<uint32_t>(copies) * per_copy;
  const auto key = static_cast<uint32_t>(*step_key);
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    const uint32_t c = e / per_copy;
    uint32_t k = e % per_copy;
    int p = 0;
    while (k >= static_cast<uint32_t>(parts.part[p].rows * parts.part[p].rank)) {
      k -= static_cast<uint32_t>(parts.part[p].rows * parts.part[p].rank);
      ++p;
    }
    const GroupPart& g = parts.part[p];
    const auto rank = static_cast<uint32_t>(g.rank);
    const float z = noise(stream_key(key, g.param_index, query[c]), k, g.rows * g.rank, gaussian);
    const uint32_t row = static_cast<uint32_t>(g.row_offset) + k / rank;
    const uint32_t col = static_cast<uint32_t>(g.col_offset) + k % rank;
    out[(c * rows + row) * cols + col] = from_float<T>(__fadd_rn(g.lora_b[k], __fmul_rn(scale[c], z)));
  }
}

__global__ void rge_direction_kernel(const int64_t* segments, int64_t num_segments, const float* g,
                                     int64_t queries, const int64_t* step_key, bool gaussian,
                                     int64_t total, float* out) {
  const auto key = static_cast<uint32_t>(*step_key);
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < total;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = num_segments - 1;  // last segment whose offset <= j
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (segments[3 * mid] <= j) lo = mid; else hi = mid - 1;
    }
    const int64_t k = j - segments[3 * lo], n = segments[3 * lo + 1], param = segments[3 * lo + 2];
    float acc = 0.0f;
    for (int64_t i = 0; i < queries; ++i) {
      acc = __fadd_rn(acc, __fmul_rn(g[i], noise(stream_key(key, param, i), k, n, gaussian)));
    }
    out[j] = __fdiv_rn(acc, static_cast<float>(queries));
  }
}

__global__ void noise_rows_kernel(const int64_t* keys, int64_t rows, int64_t n, bool gaussian, float* out) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < rows * n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[e] = noise(static_cast<uint32_t>(keys[e / n]), e % n, n, gaussian);
  }
}

int blocks_for(int64_t elements) {
  const int64_t wanted = (elements + kThreads - 1) / kThreads;
  const int64_t cap = 132LL * 16;  // enough resident blocks to fill an H100/H200, grid-stride beyond
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

void check_device_tensor(const torch::Tensor& t, torch::ScalarType type, const char* what) {
  if (!t.is_cuda() || t.scalar_type() != type || !t.is_contiguous()) {
    throw std::invalid_argument(std::string("prge cuda kernel: ") + what +
                                " must be a contiguous CUDA tensor of the expected dtype");
  }
}

}  // namespace

void fill_group_blocks(const GroupPart* parts, int num_parts, const torch::Tensor& query,
                       const torch::Tensor& scale, const torch::Tensor& step_key, bool gaussian,
                       torch::Tensor& out) {
  if (num_parts < 1 || num_parts > kMaxGroupParts) {
    throw std::invalid_argument("fill_group_blocks: 1 to 4 parts per group");
  }
  check_device_tensor(query, torch::kInt64, "query");
  check_device_tensor(scale, torch::kFloat32, "scale");
  check_device_tensor(step_key, torch::kInt64, "step_key");
  if (!out.is_cuda() || !out.is_contiguous() || out.dim() != 3 || out.size(0) != query.size(0)) {
    throw std::invalid_argument("fill_group_blocks: out must be a contiguous CUDA [copies, rows, cols]");
  }
  Parts packed{};
  for (int p = 0; p < num_parts; ++p) packed.part[p] = parts[p];
  packed.count = num_parts;
  if (out.numel() >= (int64_t{1} << 31)) throw std::invalid_argument("fill_group_blocks: stack over 2^31 elements");
  const int copies = static_cast<int>(out.size(0)), rows = static_cast<int>(out.size(1)),
            cols = static_cast<int>(out.size(2));
  auto stream = c10::cuda::getCurrentCUDAStream();
  int64_t block_elements = 0;
  for (int p = 0; p < num_parts; ++p) block_elements += parts[p].rows * parts[p].rank;
  const int blocks = blocks_for(copies * block_elements);
  switch (out.scalar_type()) {
    case torch::kFloat32:
      fill_group_blocks_kernel<float><<<blocks, kThreads, 0, stream>>>(
          packed, query.data_ptr<int64_t>(), scale.data_ptr<float>(), step_key.data_ptr<int64_t>(),
          gaussian, copies, rows, cols, out.data_ptr<float>());
      break;
    case torch::kBFloat16:
      fill_group_blocks_kernel<__nv_bfloat16><<<blocks, kThreads, 0, stream>>>(
          packed, query.data_ptr<int64_t>(), scale.data_ptr<float>(), step_key.data_ptr<int64_t>(),
          gaussian, copies, rows, cols, reinterpret_cast<__nv_bfloat16*>(out.data_ptr()));
      break;
    case torch::kFloat16:
      fill_group_blocks_kernel<__half><<<blocks, kThreads, 0, stream>>>(
          packed, query.data_ptr<int64_t>(), scale.data_ptr<float>(), step_key.data_ptr<int64_t>(),
          gaussian, copies, rows, cols, reinterpret_cast<__half*>(out.data_ptr()));
      break;
    default:
      throw std::invalid_argument("fill_group_blocks: out must be float32, bfloat16 or float16");
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void rge_direction(const torch::Tensor& segments, const torch::Tensor& g, const torch::Tensor& step_key,
                   bool gaussian, torch::Tensor& out) {
  check_device_tensor(segments, torch::kInt64, "segments");
  check_device_tensor(g, torch::kFloat32, "g");
  check_device_tensor(step_key, torch::kInt64, "step_key");
  check_device_tensor(out, torch::kFloat32, "out");
  auto stream = c10::cuda::getCurrentCUDAStream();
  rge_direction_kernel<<<blocks_for(out.numel()), kThreads, 0, stream>>>(
      segments.data_ptr<int64_t>(), segments.size(0), g.data_ptr<float>(), g.size(0),
      step_key.data_ptr<int64_t>(), gaussian, out.numel(), out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

torch::Tensor counter_noise_rows(const torch::Tensor& stream_keys, int64_t n, bool gaussian) {
  check_device_tensor(stream_keys, torch::kInt64, "stream_keys");
  auto out = torch::empty({stream_keys.size(0), n}, stream_keys.options().dtype(torch::kFloat32));
  auto stream = c10::cuda::getCurrentCUDAStream();
  noise_rows_kernel<<<blocks_for(out.numel()), kThreads, 0, stream>>>(
      stream_keys.data_ptr<int64_t>(), stream_keys.size(0), n, gaussian, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace prge::cuda
