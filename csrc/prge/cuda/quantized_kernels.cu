#include "prge/cuda/quantized_kernels.h"
#include "prge/cuda/vector_access.cuh"

namespace prge::cuda {
namespace {

constexpr int kPerItem = 8;  // output elements of one work item: one group's 4 (int4) or 8 (int8) code bytes

// One work item: kPerItem consecutive elements of a row, all in one group (group_size is a
// multiple of kPerItem). int4 codes: two per byte, the low nibble first.
template <typename T, int Bits>
__global__ void dequantize_kernel(const uint8_t* codes, const float* scales, const float* offsets, int64_t cols,
                                  int64_t group_size, int64_t items, T* out) {
  using C = Convert<T>;
  constexpr int V = Vec<T>::kSize;
  const int64_t chunks = cols / kPerItem, groups = cols / group_size;
  for (int64_t item = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; item < items;
       item += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = item / chunks, col = (item % chunks) * kPerItem;
    const int64_t g = row * groups + col / group_size;
    const float scale = scales[g], offset = offsets ? offsets[g] : 0.0f;
    float code[kPerItem];
    if constexpr (Bits == 4) {
      const uint32_t packed = *reinterpret_cast<const uint32_t*>(codes + (row * cols + col) / 2);
#pragma unroll
      for (int k = 0; k < kPerItem; ++k) code[k] = static_cast<float>((packed >> (4 * k)) & 15u);
    } else {
      const uint2 packed = *reinterpret_cast<const uint2*>(codes + row * cols + col);
#pragma unroll
      for (int k = 0; k < kPerItem; ++k) {
        const uint32_t word = k < 4 ? packed.x : packed.y;
        code[k] = static_cast<float>(static_cast<int8_t>((word >> (8 * (k % 4))) & 255u));
      }
    }
#pragma unroll
    for (int v = 0; v < kPerItem / V; ++v) {
      Vec<T> o;
#pragma unroll
      for (int k = 0; k < V; ++k) o.v[k] = C::out(fmaf(code[v * V + k], scale, offset));
      store(out + row * cols + col + v * V, o);
    }
  }
}

bool aligned_to(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

bool can_dequantize_into(const QuantizedWeight& w, const torch::Tensor& out) {
  const auto type = out.scalar_type();
  return (w.bits == 4 || w.bits == 8) && out.is_cuda() && w.qweight.is_cuda() && w.scales.is_cuda() &&
         (type == torch::kFloat32 || type == torch::kBFloat16 || type == torch::kFloat16) &&
         out.dim() == 2 && out.size(0) == w.rows && out.size(1) == w.cols && out.is_contiguous() &&
         aligned(out.data_ptr()) && w.cols % kPerItem == 0 && w.group_size % kPerItem == 0 &&
         w.qweight.is_contiguous() && aligned_to(w.qweight.data_ptr(), w.bits == 4 ? 4 : 8) &&
         w.scales.is_contiguous() && w.scales.scalar_type() == torch::kFloat32 &&
         (!w.offsets.defined() || (w.offsets.is_contiguous() && w.offsets.scalar_type() == torch::kFloat32));
}

void dequantize_into(const QuantizedWeight& w, torch::Tensor& out) {
  if (!can_dequantize_into(w, out)) {
    throw std::invalid_argument(
        "dequantize_into: a CUDA int4 / int8 weight and a contiguous, aligned [rows, cols] float output, cols and "
        "group size multiples of 8");
  }
  const int64_t items = w.rows * w.cols / kPerItem;
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto* codes = static_cast<const uint8_t*>(w.qweight.data_ptr());
  const auto* scales = w.scales.data_ptr<float>();
  const float* offsets = w.offsets.defined() ? w.offsets.data_ptr<float>() : nullptr;
  dispatch(out.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    auto* dst = reinterpret_cast<T*>(out.data_ptr());
    if (w.bits == 4) {
      dequantize_kernel<T, 4><<<blocks_for(items), kThreads, 0, stream>>>(codes, scales, offsets, w.cols,
                                                                          w.group_size, items, dst);
    } else {
      dequantize_kernel<T, 8><<<blocks_for(items), kThreads, 0, stream>>>(codes, scales, offsets, w.cols,
                                                                          w.group_size, items, dst);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace prge::cuda
