#include "prge/cuda/adapter_kernels.h"

#include "prge/cuda/counter_noise.cuh"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <stdexcept>
#include <type_traits>

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

// One copy's value T(b + s z), as the plain path rounds it.
template <typename T>
__device__ __forceinline__ T perturbed(float b, float s, float z) {
  return from_float<T>(__fadd_rn(b, __fmul_rn(s, z)));
}

// The stacks whose copies take the approximate draw where its rounding is certain: bfloat16, whose
// 8-bit significand leaves the approximate z's error (~1e-6 relative) far from most rounding
// boundaries. float32 needs z to the last bit; float16 keeps the precise draw too (its subnormal
// range moves the boundaries) until it is measured.
template <typename T>
constexpr bool kCertifiable = std::is_same_v<T, __nv_bfloat16>;

__device__ __forceinline__ bool same_bits(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __bfloat16_as_ushort(a) == __bfloat16_as_ushort(b);
}
__device__ __forceinline__ bool same_bits(__half a, __half b) { return __half_as_ushort(a) == __half_as_ushort(b); }
__device__ __forceinline__ bool same_bits(float a, float b) { return __float_as_uint(a) == __float_as_uint(b); }

// The precise draw where the approximate one is not certain (~1 draw in 500): one copy of its code,
// not one per unrolled row of the fill.
__device__ __noinline__ float box_muller_out_of_line(float u1, float u2) { return box_muller(u1, u2); }

// z for the copies of one noise row whose values are T(b + scale_of(s) z), s < count. Where every
// copy's value is the same for every z in approx_box_muller's interval (the value is monotone in z,
// so the interval's two ends decide), that value is the one box_muller's z gives, and the
// interval's lower end stands in for z; otherwise z is box_muller's. The values written are
// therefore bit for bit the precise draw's, while most draws skip logf, sqrtf and cosf.
template <typename T, typename ScaleOf>
__device__ __forceinline__ float gaussian_for_copies(float u1, float u2, float b, int count, ScaleOf scale_of,
                                                     bool& certain) {
  float lo, hi;
  approx_box_muller(u1, u2, lo, hi);
  certain = lo <= hi;  // false for NaN
  for (int s = 0; s < count && certain; ++s) {
    const float scale = scale_of(s);
    certain = same_bits(perturbed<T>(b, scale, lo), perturbed<T>(b, scale, hi));
  }
  return certain ? lo : box_muller_out_of_line(u1, u2);
}

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
// the blocks as they are. The stream keys of the block's (part, row) pairs and each row's count
// of copies are found once per block, into shared memory. 32-bit index arithmetic (each stack has < 2^31 elements, checked at
// launch): 64-bit division per element cost more than the noise itself.
template <typename T>
__global__ void fill_copy_stacks_kernel(Parts parts, const int64_t* row_query, int num_rows, const int64_t* row_copies,
                                        int copies_per_row, const float* scale, const int64_t* step_key,
                                        bool gaussian, bool certify) {
  __shared__ uint32_t keys[kMaxStackParts][kRowsPerThread];
  __shared__ int copy_counts[kRowsPerThread];  // row j's copies: row_copies up to its -1 padding
  const int first_row = static_cast<int>(blockIdx.y) * kRowsPerThread;
  const int rows = min(kRowsPerThread, num_rows - first_row);
  if (threadIdx.x < kMaxStackParts * kRowsPerThread) {
    const int p = threadIdx.x / kRowsPerThread, j = threadIdx.x % kRowsPerThread;
    if (p < parts.count && j < rows) {
      keys[p][j] = stream_key(static_cast<uint32_t>(*step_key), parts.part[p].param_index, row_query[first_row + j]);
    }
    if (p == 0 && j < rows) {
      const int64_t* copies = row_copies + (first_row + j) * copies_per_row;
      int count = 0;
      while (count < copies_per_row && copies[count] >= 0) ++count;
      copy_counts[j] = count;
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
      const int u = first_row + j;
      const int64_t* copies = row_copies + u * copies_per_row;
      const int count = copy_counts[j];
      float z;
      if (kCertifiable<T> && certify && gaussian) {
        bool certain;
        z = gaussian_for_copies<T>(uniform_of(keys[p][j], mixed_k), uniform_of(keys[p][j], mixed_n_plus_k), b, count,
                                   [&](int s) { return scale[copies[s]]; }, certain);
      } else {
        z = noise_of(keys[p][j], mixed_k, mixed_n_plus_k, gaussian);
      }
      for (int s = 0; s < count; ++s) {
        const int64_t c = copies[s];
        out[static_cast<uint32_t>(c) * per_copy + at] = perturbed<T>(b, scale[c], z);
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

// |a - b| rounded up (NaN if either is NaN).
__device__ __forceinline__ float distance_up(float a, float b) { return fmaxf(__fsub_ru(a, b), __fsub_ru(b, a)); }

// The larger of two non-negative ratios, NaN if either is (fmaxf would drop it).
__device__ __forceinline__ float worse(float a, float b) { return (a != a || b != b) ? __int_as_float(0x7fc00000) : fmaxf(a, b); }

// For every one of the 2^24 values u can take: whether approx_radius's and approx_cosine's bounds
// hold (outside[0], outside[1]: how many do not), exactly as approx_box_muller assumes them
// (|approximate - precise| <= bound, the distance rounded up), and the largest
// |approximate - precise| / bound of each (worst[], float bits; below 1 where the bounds hold).
__global__ void noise_bounds_kernel(unsigned long long* outside, unsigned int* worst) {
  unsigned long long radius_outside = 0, cosine_outside = 0;
  float radius_worst = 0.0f, cosine_worst = 0.0f;
  for (uint32_t m = blockIdx.x * blockDim.x + threadIdx.x; m < (1u << 24); m += gridDim.x * blockDim.x) {
    const float u = uniform_of_24_bits(m);
    float bound;
    const float r = approx_radius(u, bound), radius_error = distance_up(r, radius(u));
    radius_outside += !(radius_error <= bound);
    radius_worst = worse(radius_worst, __fdiv_ru(radius_error, bound));
    const float cosine_error = distance_up(approx_cosine(u), cosine(u));
    cosine_outside += !(cosine_error <= kCosineBound);
    cosine_worst = worse(cosine_worst, __fdiv_ru(cosine_error, kCosineBound));
  }
  atomicAdd(&outside[0], radius_outside);
  atomicAdd(&outside[1], cosine_outside);
  atomicMax(&worst[0], __float_as_uint(radius_worst));  // non-negative floats order as their bits
  atomicMax(&worst[1], __float_as_uint(cosine_worst));
}

// The fill's arithmetic for the GPU checks: out[row, c, k] = T(b[k] + scale[c] z_k) over a stream
// of n values per key, with gaussian_for_copies (certify) or box_muller; certified counts the
// draws that took the approximate z.
template <typename T>
__global__ void perturbed_rows_kernel(const int64_t* keys, int64_t rows, int64_t n, const float* b, const float* scale,
                                      int copies, bool certify, T* out, unsigned long long* certified) {
  unsigned long long count = 0;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < rows * n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = e / n, k = e % n;
    const auto key = static_cast<uint32_t>(keys[row]);
    const float u1 = uniform_of(key, mix32(static_cast<uint32_t>(k))), u2 = uniform_of(key, mix32(static_cast<uint32_t>(n + k)));
    float z;
    if (certify) {
      bool certain;
      z = gaussian_for_copies<T>(u1, u2, b[k], copies, [&](int s) { return scale[s]; }, certain);
      count += certain;
    } else {
      z = box_muller(u1, u2);
    }
    for (int c = 0; c < copies; ++c) out[(row * copies + c) * n + k] = perturbed<T>(b[k], scale[c], z);
  }
  atomicAdd(certified, count);
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

NoiseBounds check_noise_bounds(const torch::Device& device) {
  if (!device.is_cuda()) throw std::invalid_argument("check_noise_bounds: needs a CUDA device");
  const c10::cuda::CUDAGuard guard(device);
  auto outside = torch::zeros({2}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  auto worst = torch::zeros({2}, torch::TensorOptions().dtype(torch::kInt32).device(device));
  noise_bounds_kernel<<<blocks_for(int64_t{1} << 24), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      reinterpret_cast<unsigned long long*>(outside.data_ptr<int64_t>()),
      reinterpret_cast<unsigned int*>(worst.data_ptr<int32_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const auto o = outside.cpu();
  const auto w = worst.view(torch::kFloat32).cpu();
  return {o[0].item<int64_t>(), o[1].item<int64_t>(), w[0].item<float>(), w[1].item<float>()};
}

static std::atomic<bool> approximate_noise_allowed{true};

void set_approximate_noise(bool allowed) { approximate_noise_allowed = allowed; }

// Whether the fill may use the approximate draw on this stream's device: check_noise_bounds found
// every value within its bounds. Checked once per device, at the first fill outside a CUDA graph
// capture (a capture cannot wait for the check); fills before that, and any captured by then, take
// the precise draw, which writes the same values; so do all fills while set_approximate_noise(false).
static bool noise_bounds_hold(const c10::cuda::CUDAStream& stream) {
  if (!approximate_noise_allowed) return false;
  static std::mutex mutex;
  static std::map<c10::DeviceIndex, bool> verdicts;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto found = verdicts.find(stream.device_index());
  if (found != verdicts.end()) return found->second;
  cudaStreamCaptureStatus status;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream.stream(), &status));
  if (status != cudaStreamCaptureStatusNone) return false;  // decided at the first fill outside a capture
  // Relaxed: a capture elsewhere (another stream, another thread) is not broken by the check's
  // allocation and copy to the host. A check that fails to run leaves the precise draw.
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  C10_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  bool hold = false;
  try {
    const c10::cuda::CUDAStreamGuard on(stream);
    const NoiseBounds b = check_noise_bounds(stream.unwrap().device());
    hold = b.radius_outside == 0 && b.cosine_outside == 0;
  } catch (const std::exception&) {
    hold = false;
  }
  C10_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  return verdicts[stream.device_index()] = hold;
}

std::pair<torch::Tensor, int64_t> perturbed_rows(const torch::Tensor& stream_keys, int64_t n, const torch::Tensor& b,
                                                 const torch::Tensor& scale, torch::ScalarType dtype, bool certify) {
  check_device_tensor(stream_keys, torch::kInt64, "stream_keys");
  check_device_tensor(b, torch::kFloat32, "b");
  check_device_tensor(scale, torch::kFloat32, "scale");
  if (b.numel() != n || dtype != torch::kBFloat16) {
    throw std::invalid_argument("perturbed_rows: b must hold n values and the dtype must be bfloat16");
  }
  const c10::cuda::CUDAGuard guard(b.device());
  const int64_t rows = stream_keys.size(0);
  const int copies = static_cast<int>(scale.numel());
  auto out = torch::empty({rows, copies, n}, b.options().dtype(dtype));
  auto certified = torch::zeros({1}, b.options().dtype(torch::kInt64));
  perturbed_rows_kernel<__nv_bfloat16><<<blocks_for(rows * n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      stream_keys.data_ptr<int64_t>(), rows, n, b.data_ptr<float>(), scale.data_ptr<float>(), copies, certify,
      reinterpret_cast<__nv_bfloat16*>(out.data_ptr()), reinterpret_cast<unsigned long long*>(certified.data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, certified.item<int64_t>()};
}

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
  const bool certify = dtype == torch::kBFloat16 && gaussian && noise_bounds_hold(stream);
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
            packed, query, num_rows, copy_index, copies_per_row, scale.data_ptr<float>(), step_key.data_ptr<int64_t>(), gaussian, certify);
        break;
      case torch::kBFloat16:
        fill_copy_stacks_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(
            packed, query, num_rows, copy_index, copies_per_row, scale.data_ptr<float>(), step_key.data_ptr<int64_t>(), gaussian, certify);
        break;
      case torch::kFloat16:
        fill_copy_stacks_kernel<__half><<<grid, kThreads, 0, stream>>>(
            packed, query, num_rows, copy_index, copies_per_row, scale.data_ptr<float>(), step_key.data_ptr<int64_t>(), gaussian, certify);
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
