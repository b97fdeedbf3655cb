#include "prge/cuda/adapter_kernels.h"

#include "prge/cuda/counter_noise.cuh"

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <stdexcept>

namespace prge::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

struct Parts {
  StackPart part[kMaxStackParts];
  uint32_t elements[kMaxStackParts];  // rows * rank of each part, 0 past `count`
  int count;
  uint32_t total;
};

// Noise rows one thread draws for its element: enough work per thread to spread the per-element
// work (finding its part and place, loading B, hashing its counters) over several draws, enough
// threads (elements x rows / this) to fill the GPU.
constexpr int kRowsPerThread = 8;
static_assert(kMaxStackParts * kRowsPerThread <= kThreads, "the stack kernel's threads fill its key table in one pass");

// Grid: x over the elements of every part's block, y over groups of kRowsPerThread noise rows
// (distinct queries). Per row, a thread draws z once and writes B + scale[c] * z into every
// copy c of that row (the +eps and -eps copies of a query share z), leaving the zeros around
// the blocks as they are. The stream keys of the block's (part, row) pairs are hashed once per
// block into shared memory. 32-bit index arithmetic (each stack has < 2^31 elements, checked at
// launch): 64-bit division per element cost more than the noise itself.
template <typename T>
__global__ void fill_copy_stacks_kernel(Parts parts, const int64_t* row_query, int num_rows, const int64_t* row_copies,
                                        int copies_per_row, const float* scale, const int64_t* step_key,
                                        bool gaussian) {
  __shared__ uint32_t keys[kMaxStackParts][kRowsPerThread];
  const int first_row = static_cast<int>(blockIdx.y) * kRowsPerThread;
  const int rows = min(kRowsPerThread, num_rows - first_row);
  if (threadIdx.x < kMaxStackParts * kRowsPerThread) {
    const int p = threadIdx.x / kRowsPerThread, j = threadIdx.x % kRowsPerThread;
    if (p < parts.count && j < rows) {
      keys[p][j] = stream_key(static_cast<uint32_t>(*step_key), parts.part[p].param_index, row_query[first_row + j]);
    }
  }
  __syncthreads();
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < parts.total; e += gridDim.x * blockDim.x) {
    uint32_t k = e;
    int p = 0;
#pragma unroll
    for (int i = 0; i + 1 < kMaxStackParts; ++i) {
      if (p == i && k >= parts.elements[i]) {
        k -= parts.elements[i];
        p = i + 1;
      }
    }
    const StackPart& g = parts.part[p];
    const auto rank = static_cast<uint32_t>(g.rank);
    const float b = g.lora_b[k];
    const auto cols = static_cast<uint32_t>(g.out_cols);
    const uint32_t per_copy = static_cast<uint32_t>(g.out_rows) * cols;
    const uint32_t at = (static_cast<uint32_t>(g.row_offset) + k / rank) * cols + static_cast<uint32_t>(g.col_offset) + k % rank;
    const uint32_t mixed_k = mix32(k), mixed_n_plus_k = mix32(parts.elements[p] + k);
    T* out = static_cast<T*>(g.out);
#pragma unroll
    for (int j = 0; j < kRowsPerThread; ++j) {
      if (j >= rows) break;
      const float z = noise_of(keys[p][j], mixed_k, mixed_n_plus_k, gaussian);
      const int u = first_row + j;
      for (int s = 0; s < copies_per_row; ++s) {
        const int64_t c = row_copies[u * copies_per_row + s];
        if (c < 0) break;
        out[static_cast<uint32_t>(c) * per_copy + at] = from_float<T>(__fadd_rn(b, __fmul_rn(scale[c], z)));
      }
    }
  }
}

// keys[s * q + i]: the stream key of segment s's parameter and query i (the direction kernel's
// draws then hash only their counters).
__global__ void segment_stream_keys_kernel(const int64_t* segments, int64_t num_segments, int64_t queries,
                                           const int64_t* step_key, uint32_t* keys) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < num_segments * queries;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {  // grid-stride: blocks_for caps the grid
    keys[t] = stream_key(static_cast<uint32_t>(*step_key), segments[3 * (t / queries) + 2], t % queries);
  }
}

__global__ void rge_direction_kernel(const int64_t* segments, int64_t num_segments, const float* g,
                                     int64_t queries, const uint32_t* keys, bool gaussian, int64_t total,
                                     float* out) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < total;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = num_segments - 1;  // last segment whose offset <= j
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (segments[3 * mid] <= j) lo = mid; else hi = mid - 1;
    }
    const int64_t k = j - segments[3 * lo], n = segments[3 * lo + 1];
    const uint32_t mixed_k = mix32(static_cast<uint32_t>(k)), mixed_n_plus_k = mix32(static_cast<uint32_t>(n + k));
    const uint32_t* row = keys + lo * queries;
    float acc = 0.0f;
    for (int64_t i = 0; i < queries; ++i) {
      acc = __fadd_rn(acc, __fmul_rn(g[i], noise_of(row[i], mixed_k, mixed_n_plus_k, gaussian)));
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

void fill_copy_stacks(const std::vector<StackPart>& parts, const torch::Tensor& row_query,
                      const torch::Tensor& row_copies, const torch::Tensor& scale,
                      const torch::Tensor& step_key, bool gaussian, torch::ScalarType dtype) {
  check_device_tensor(row_query, torch::kInt64, "row_query");
  check_device_tensor(row_copies, torch::kInt64, "row_copies");
  check_device_tensor(scale, torch::kFloat32, "scale");
  check_device_tensor(step_key, torch::kInt64, "step_key");
  if (row_copies.dim() != 2 || row_copies.size(0) != row_query.size(0)) {
    throw std::invalid_argument("fill_copy_stacks: row_copies must be [rows of noise, copies per row]");
  }
  if (row_query.size(0) == 0) return;  // no noise rows: nothing to write (and no empty grid)
  const int64_t copies = scale.size(0);
  const int copies_per_row = static_cast<int>(row_copies.size(1));
  const auto* query = row_query.data_ptr<int64_t>();
  const auto* copy_index = row_copies.data_ptr<int64_t>();
  auto stream = c10::cuda::getCurrentCUDAStream();
  for (size_t first = 0; first < parts.size(); first += kMaxStackParts) {
    Parts packed{};
    int64_t total = 0;
    for (size_t p = first; p < std::min(parts.size(), first + kMaxStackParts); ++p) {
      const auto& part = parts[p];
      if (copies * part.out_rows * part.out_cols >= (int64_t{1} << 31) || part.rows * part.rank <= 0) {
        throw std::invalid_argument("fill_copy_stacks: a stack over 2^31 elements or an empty part");
      }
      packed.part[p - first] = part;
      packed.elements[p - first] = static_cast<uint32_t>(part.rows * part.rank);
      total += part.rows * part.rank;
    }
    packed.count = static_cast<int>(std::min(parts.size(), first + kMaxStackParts) - first);
    packed.total = static_cast<uint32_t>(total);
    const int num_rows = static_cast<int>(row_query.size(0));
    const dim3 grid(blocks_for(total), static_cast<unsigned>((num_rows + kRowsPerThread - 1) / kRowsPerThread));
    switch (dtype) {
      case torch::kFloat32:
        fill_copy_stacks_kernel<float><<<grid, kThreads, 0, stream>>>(
            packed, query, num_rows, copy_index, copies_per_row, scale.data_ptr<float>(), step_key.data_ptr<int64_t>(), gaussian);
        break;
      case torch::kBFloat16:
        fill_copy_stacks_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
            packed, query, num_rows, copy_index, copies_per_row, scale.data_ptr<float>(), step_key.data_ptr<int64_t>(), gaussian);
        break;
      case torch::kFloat16:
        fill_copy_stacks_kernel<__half><<<grid, kThreads, 0, stream>>>(
            packed, query, num_rows, copy_index, copies_per_row, scale.data_ptr<float>(), step_key.data_ptr<int64_t>(), gaussian);
        break;
      default:
        throw std::invalid_argument("fill_copy_stacks: stacks must be float32, bfloat16 or float16");
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void rge_direction(const torch::Tensor& segments, const torch::Tensor& g, const torch::Tensor& step_key,
                   bool gaussian, torch::Tensor& out) {
  check_device_tensor(segments, torch::kInt64, "segments");
  check_device_tensor(g, torch::kFloat32, "g");
  check_device_tensor(step_key, torch::kInt64, "step_key");
  check_device_tensor(out, torch::kFloat32, "out");
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t num_segments = segments.size(0), queries = g.size(0);
  auto keys = torch::empty({num_segments * queries}, segments.options().dtype(torch::kInt32));
  segment_stream_keys_kernel<<<blocks_for(keys.numel()), kThreads, 0, stream>>>(
      segments.data_ptr<int64_t>(), num_segments, queries, step_key.data_ptr<int64_t>(),
      reinterpret_cast<uint32_t*>(keys.data_ptr<int32_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  rge_direction_kernel<<<blocks_for(out.numel()), kThreads, 0, stream>>>(
      segments.data_ptr<int64_t>(), num_segments, g.data_ptr<float>(), queries,
      reinterpret_cast<const uint32_t*>(keys.data_ptr<int32_t>()), gaussian, out.numel(), out.data_ptr<float>());
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
