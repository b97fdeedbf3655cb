#include "prge/cuda/layer_kernels.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>

namespace prge::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct Convert;
template <>
struct Convert<float> {
  static __device__ __forceinline__ float in(float v) { return v; }
  static __device__ __forceinline__ float out(float v) { return v; }
};
template <>
struct Convert<__nv_bfloat16> {
  static __device__ __forceinline__ float in(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 out(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Convert<__half> {
  static __device__ __forceinline__ float in(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half out(float v) { return __float2half_rn(v); }
};

int blocks_for(int64_t elements) {
  const int64_t wanted = (elements + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, 132LL * 32)));
}

// As ATen rounds: x * cos rounded to the dtype, then + swapped * sin in float, rounded once.
template <typename T>
__global__ void rope_kernel(const T* x, int64_t stride_n, int64_t stride_h, int64_t stride_t,
                            const T* cos, const T* sin, int64_t heads, int64_t t, int64_t hd,
                            int64_t total, T* out) {
  using C = Convert<T>;
  const int64_t half = hd / 2;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e % hd, pos = (e / hd) % t, head = (e / (hd * t)) % heads, n = e / (hd * t * heads);
    const T* row = x + n * stride_n + head * stride_h + pos * stride_t;
    const float scaled = C::in(C::out(__fmul_rn(C::in(row[i]), C::in(cos[pos * hd + i]))));
    const float swapped = C::in(row[i < half ? i + half : i - half]);
    out[e] = C::out(__fadd_rn(scaled, __fmul_rn(swapped, C::in(sin[pos * hd + i]))));
  }
}

// As ATen rounds: silu(gate) = g / (1 + exp(-g)) rounded to the dtype, then * up rounded.
template <typename T>
__global__ void swiglu_kernel(const T* gate_up, int64_t f, int64_t total, T* out) {
  using C = Convert<T>;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = e / f, col = e % f;
    const float g = C::in(gate_up[row * 2 * f + col]);
    const float activated = C::in(C::out(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g)))));
    out[e] = C::out(__fmul_rn(activated, C::in(gate_up[row * 2 * f + f + col])));
  }
}

template <typename Launch>
void dispatch(torch::ScalarType type, const Launch& launch) {
  switch (type) {
    case torch::kFloat32: launch(float{}); break;
    case torch::kBFloat16: launch(__nv_bfloat16{}); break;
    case torch::kFloat16: launch(__half{}); break;
    default: throw std::invalid_argument("prge cuda kernel: float32, bfloat16 or float16 only");
  }
}

}  // namespace

torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin) {
  if (!x.is_cuda() || x.dim() != 4 || x.stride(3) != 1 || !cos.is_contiguous() || !signed_sin.is_contiguous() ||
      cos.scalar_type() != x.scalar_type() || signed_sin.scalar_type() != x.scalar_type() ||
      cos.size(0) != x.size(2) || cos.size(1) != x.size(3) || x.size(3) % 2 != 0) {
    throw std::invalid_argument("rope: x [n, h, t, hd] CUDA with a contiguous last dim, tables [t, hd] of x's dtype");
  }
  auto out = torch::empty(x.sizes(), x.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    rope_kernel<T><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        reinterpret_cast<const T*>(x.data_ptr()), x.stride(0), x.stride(1), x.stride(2),
        reinterpret_cast<const T*>(cos.data_ptr()), reinterpret_cast<const T*>(signed_sin.data_ptr()),
        x.size(1), x.size(2), x.size(3), out.numel(), reinterpret_cast<T*>(out.data_ptr()));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

torch::Tensor swiglu(const torch::Tensor& gate_up) {
  if (!gate_up.is_cuda() || !gate_up.is_contiguous() || gate_up.size(-1) % 2 != 0) {
    throw std::invalid_argument("swiglu: a contiguous CUDA [..., 2f] tensor");
  }
  auto sizes = gate_up.sizes().vec();
  const int64_t f = sizes.back() / 2;
  sizes.back() = f;
  auto out = torch::empty(sizes, gate_up.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch(gate_up.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    swiglu_kernel<T><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        reinterpret_cast<const T*>(gate_up.data_ptr()), f, out.numel(), reinterpret_cast<T*>(out.data_ptr()));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace prge::cuda
