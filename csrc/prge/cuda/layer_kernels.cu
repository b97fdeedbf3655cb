#include "prge/cuda/layer_kernels.h"
#include "prge/cuda/vector_access.cuh"

#include <ATen/cuda/detail/IntegerDivider.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <limits>
#include <stdexcept>

namespace prge::cuda {
namespace {

using at::cuda::detail::IntDivider;

// Calls launch(Index{}) with the narrowest index type a kernel over `items` work items can use:
// uint32_t (IntDivider's multiply-high division needs dividends <= INT32_MAX) or int64_t.
template <typename Launch>
void with_index_type(int64_t items, const Launch& launch) {
  if (items <= std::numeric_limits<int32_t>::max()) {
    launch(uint32_t{});
  } else {
    launch(int64_t{});
  }
}

// As ATen rounds: x * cos rounded to the dtype, then + swapped * sin in float, rounded once.
template <typename T>
__device__ __forceinline__ T rope_value(T x, T cos, T swapped, T sin) {
  using C = Convert<T>;
  const float scaled = C::in(C::out(__fmul_rn(C::in(x), C::in(cos))));
  return C::out(__fadd_rn(scaled, __fmul_rn(C::in(swapped), C::in(sin))));
}

// One work item: V elements of each half of one (n, head, pos) row of hd values, so the
// rotate-half partner sits in the same thread. Index: uint32_t (ATen's IntDivider, a multiply-high
// per division) when there are at most INT32_MAX items, else int64_t (plain division).
template <typename T, typename Index>
__global__ void rope_kernel(const T* x, int64_t stride_n, int64_t stride_h, int64_t stride_t,
                            const T* cos, const T* sin, IntDivider<Index> chunks, IntDivider<Index> t,
                            IntDivider<Index> heads, Index items, T* out) {
  constexpr int V = Vec<T>::kSize;
  const int hd = static_cast<int>(chunks.divisor) * 2 * V, half = hd / 2;
  for (Index item = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; item < items;
       item += static_cast<Index>(gridDim.x) * blockDim.x) {
    const auto row_chunk = chunks.divmod(item);      // row: (n, head, pos) in x's [n, h, t] order
    const auto rest_pos = t.divmod(row_chunk.div);
    const auto n_head = heads.divmod(rest_pos.div);
    const int chunk = static_cast<int>(row_chunk.mod), pos = static_cast<int>(rest_pos.mod);
    const int64_t head = n_head.mod, n = n_head.div;
    const T* in = x + n * stride_n + head * stride_h + pos * stride_t;
    const int i = chunk * V;
    const auto x1 = load(in + i), x2 = load(in + half + i);
    const auto c1 = load(cos + pos * hd + i), c2 = load(cos + pos * hd + half + i);
    const auto s1 = load(sin + pos * hd + i), s2 = load(sin + pos * hd + half + i);
    Vec<T> o1, o2;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      o1.v[k] = rope_value(x1.v[k], c1.v[k], x2.v[k], s1.v[k]);
      o2.v[k] = rope_value(x2.v[k], c2.v[k], x1.v[k], s2.v[k]);
    }
    T* dst = out + ((n * t.divisor + pos) * heads.divisor + head) * hd;  // out is [n, t, h, hd] in memory
    store(dst + i, o1);
    store(dst + half + i, o2);
  }
}

// silu(g) = g / (1 + exp(-g)) as ATen computes it in float32: expf, IEEE add and division.
__device__ __forceinline__ float precise_silu(float gate) { return __fdiv_rn(gate, __fadd_rn(1.0f, expf(-gate))); }

// silu(g) rounded to T, returned as float.
template <typename T>
__device__ __forceinline__ float silu_rounded(float gate) {
  using C = Convert<T>;
  return C::in(C::out(precise_silu(gate)));
}

// bfloat16: the same value from the approximate intrinsics where that is certain. For 2^-120 <=
// |g| <= 64, CUDA's programming guide gives __expf(x) within 2 + floor(1.173 |x|) ulp (<= 77),
// __fdividef within 2 ulp and expf within 2 ulp, so the fast and the precise float32 quotients lie
// within ~160 ulp of each other (the denominator's relative error carries into the quotient, which
// can double it in ulps). Rounding to bfloat16 keeps the top 16 bits and rounds on the low 16
// (ties at 0x8000, to even) and is monotone in the bit pattern, so the two round alike whenever the
// fast quotient's low 16 bits lie more than kSiluTieMargin steps from 0x8000 (crossing a binade,
// where a step is half the size, happens with the low bits near 0, far from the tie); otherwise
// (about 0.1 % of the gates), and outside that range of g (zero, subnormal, large, inf, NaN), the
// precise computation runs. bfloat16 has float32's exponent range, so the rounding position never
// moves. NVIDIA states those bounds from extensive tests, not proofs: what makes the path exact
// on a GPU is gpu_checks.py's comparison of all 65536 bfloat16 gates with ATen, bit for bit (the
// rounded silu depends on the gate alone).
constexpr uint32_t kSiluTieMargin = 256;

template <>
__device__ __forceinline__ float silu_rounded<__nv_bfloat16>(float gate) {
  const float magnitude = fabsf(gate);
  if (magnitude >= 0x1p-120f && magnitude <= 64.0f) {
    const float fast = __fdividef(gate, __fadd_rn(1.0f, __expf(-gate)));
    const uint32_t low = __float_as_uint(fast) & 0xFFFFu;
    if (low - (0x8000u - kSiluTieMargin) > 2 * kSiluTieMargin) {  // outside [tie - margin, tie + margin]
      return __bfloat162float(__float2bfloat16_rn(fast));
    }
  }
  return __bfloat162float(__float2bfloat16_rn(precise_silu(gate)));
}

// As ATen rounds: silu(gate) rounded to the dtype, then * up rounded. One work item: V columns of
// one row; Index as for rope_kernel.
template <typename T, typename Index>
__global__ void swiglu_kernel(const T* gate_up, IntDivider<Index> chunks, Index items, T* out) {
  using C = Convert<T>;
  constexpr int V = Vec<T>::kSize;
  const int64_t f = static_cast<int64_t>(chunks.divisor) * V;
  for (Index item = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; item < items;
       item += static_cast<Index>(gridDim.x) * blockDim.x) {
    const auto row_chunk = chunks.divmod(item);
    const int64_t row = row_chunk.div, col = static_cast<int64_t>(row_chunk.mod) * V;
    const auto g = load(gate_up + row * 2 * f + col), u = load(gate_up + row * 2 * f + f + col);
    Vec<T> o;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      o.v[k] = C::out(__fmul_rn(silu_rounded<T>(C::in(g.v[k])), C::in(u.v[k])));
    }
    store(out + row * f + col, o);
  }
}

// One warp per row: x = residual + delta (rounded), stored back; the sum of squares of the
// rounded x reduced over the warp in float32; then out = x * rstd * weight.
template <typename T>
__global__ void add_rms_norm_kernel(T* residual, const T* delta, int64_t delta_stride, const T* weight, int64_t rows,
                                    int d, float eps, T* out) {
  using C = Convert<T>;
  constexpr int V = Vec<T>::kSize;
  const int lane = threadIdx.x % kWarp;
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= rows) return;
  T* x = residual + row * d;
  const T* dx = delta + row * delta_stride;
  float sum = 0.0f;
  for (int i = lane * V; i < d; i += kWarp * V) {
    auto a = load(x + i);
    const auto b = load(dx + i);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      a.v[k] = C::out(__fadd_rn(C::in(a.v[k]), C::in(b.v[k])));
      sum = fmaf(C::in(a.v[k]), C::in(a.v[k]), sum);
    }
    store(x + i, a);
  }
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const float rstd = rsqrtf(sum / static_cast<float>(d) + eps);
  T* y = out + row * d;
  for (int i = lane * V; i < d; i += kWarp * V) {
    const auto a = load(x + i), w = load(weight + i);
    Vec<T> o;
#pragma unroll
    for (int k = 0; k < V; ++k) o.v[k] = C::out(C::in(a.v[k]) * rstd * C::in(w.v[k]));
    store(y + i, o);
  }
}

}  // namespace

torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin) {
  const int v = vector_width(x.scalar_type());
  if (!x.is_cuda() || x.dim() != 4 || x.stride(3) != 1 || !cos.is_contiguous() || !signed_sin.is_contiguous() ||
      cos.scalar_type() != x.scalar_type() || signed_sin.scalar_type() != x.scalar_type() ||
      cos.size(0) != x.size(2) || cos.size(1) != x.size(3) || x.size(3) % (2 * v) != 0 ||
      x.stride(0) % v != 0 || x.stride(1) % v != 0 || x.stride(2) % v != 0 || !aligned(x.data_ptr()) ||
      !aligned(cos.data_ptr()) || !aligned(signed_sin.data_ptr())) {
    throw std::invalid_argument(
        "rope: x [n, h, t, hd] CUDA with a contiguous last dim, 16-byte aligned rows, hd a multiple of "
        "2 * (16 / element size); tables [t, hd] of x's dtype");
  }
  // Stored [n, t, h, hd] and returned as its [n, h, t, hd] view: attention then returns its
  // output in the same layout, so merging the heads back into [n, t, h * hd] is free.
  auto out = torch::empty({x.size(0), x.size(2), x.size(1), x.size(3)}, x.options());
  const int64_t items = out.numel() / (2 * v);
  if (items == 0) return out.transpose(1, 2);  // (and no divider by a zero size)
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    with_index_type(items, [&](auto index_tag) {
      using Index = decltype(index_tag);
      rope_kernel<T, Index><<<blocks_for(items), kThreads, 0, stream>>>(
          reinterpret_cast<const T*>(x.data_ptr()), x.stride(0), x.stride(1), x.stride(2),
          reinterpret_cast<const T*>(cos.data_ptr()), reinterpret_cast<const T*>(signed_sin.data_ptr()),
          IntDivider<Index>(static_cast<Index>(x.size(3) / (2 * v))), IntDivider<Index>(static_cast<Index>(x.size(2))),
          IntDivider<Index>(static_cast<Index>(x.size(1))), static_cast<Index>(items),
          reinterpret_cast<T*>(out.data_ptr()));
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out.transpose(1, 2);
}

torch::Tensor swiglu(const torch::Tensor& gate_up) {
  const int v = vector_width(gate_up.scalar_type());
  if (!gate_up.is_cuda() || !gate_up.is_contiguous() || gate_up.size(-1) % (2 * v) != 0 ||
      !aligned(gate_up.data_ptr())) {
    throw std::invalid_argument("swiglu: a contiguous, 16-byte aligned CUDA [..., 2f] tensor, f a multiple of 16 / element size");
  }
  auto sizes = gate_up.sizes().vec();
  const int64_t f = sizes.back() / 2;
  sizes.back() = f;
  auto out = torch::empty(sizes, gate_up.options());
  const int64_t items = out.numel() / v;
  if (items == 0) return out;  // (and no divider by a zero size)
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch(gate_up.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    with_index_type(items, [&](auto index_tag) {
      using Index = decltype(index_tag);
      swiglu_kernel<T, Index><<<blocks_for(items), kThreads, 0, stream>>>(
          reinterpret_cast<const T*>(gate_up.data_ptr()), IntDivider<Index>(static_cast<Index>(f / v)),
          static_cast<Index>(items), reinterpret_cast<T*>(out.data_ptr()));
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

torch::Tensor add_rms_norm_(torch::Tensor& residual, const torch::Tensor& delta, const torch::Tensor& weight,
                            double eps) {
  const int64_t d = residual.size(-1);
  // delta's rows may lie further apart than d (a projection's output viewed out of a wider one,
  // LoraFaLinear::fold_lora_a): one row stride for all of them, the last dim contiguous.
  // Row r of the flattened [rows, d] at r * delta_stride: outward from dim -2, the first dim of
  // more than one element sets the stride, and every later one must follow on from it.
  int64_t delta_stride = d, next = -1;
  bool rows_evenly_apart = delta.dim() >= 1 && delta.stride(-1) == 1;
  for (int64_t i = delta.dim() - 2; rows_evenly_apart && i >= 0; --i) {
    if (delta.size(i) == 1) continue;
    if (next < 0) {
      delta_stride = delta.stride(i);
    } else {
      rows_evenly_apart = delta.stride(i) == next;
    }
    next = delta.stride(i) * delta.size(i);
  }
  const int v = vector_width(residual.scalar_type());
  if (!residual.is_cuda() || !residual.is_contiguous() || !rows_evenly_apart || delta_stride < d ||
      delta_stride % v != 0 || delta.sizes() != residual.sizes() || delta.scalar_type() != residual.scalar_type() ||
      !weight.is_contiguous() || weight.numel() != d || weight.scalar_type() != residual.scalar_type() ||
      d % v != 0 || !aligned(residual.data_ptr()) || !aligned(delta.data_ptr()) || !aligned(weight.data_ptr())) {
    throw std::invalid_argument(
        "add_rms_norm_: 16-byte aligned CUDA residual (contiguous) and delta [..., d] (rows evenly apart, 16-byte "
        "aligned), weight [d], one dtype, d a multiple of 16 / element size");
  }
  auto out = torch::empty_like(residual);
  const int64_t rows = residual.numel() / d;
  if (rows == 0) return out;
  constexpr int kRowsPerBlock = kThreads / kWarp;
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch(residual.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    add_rms_norm_kernel<T><<<static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock), kThreads, 0, stream>>>(
        reinterpret_cast<T*>(residual.data_ptr()), reinterpret_cast<const T*>(delta.data_ptr()), delta_stride,
        reinterpret_cast<const T*>(weight.data_ptr()), rows, static_cast<int>(d), static_cast<float>(eps),
        reinterpret_cast<T*>(out.data_ptr()));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace prge::cuda
