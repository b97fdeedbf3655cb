#pragma once
// What prge's memory-bound CUDA kernels share: float conversion of each dtype, 16-byte vector
// loads and stores, the launch size and the dtype dispatch. Included by .cu files only.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace prge::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

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

// V values of T in one 16-byte load / store (the kernels are memory-bound: one instruction
// per 16 bytes instead of per element).
template <typename T>
struct alignas(16) Vec {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};
template <typename T>
__device__ __forceinline__ Vec<T> load(const T* p) { return *reinterpret_cast<const Vec<T>*>(p); }
template <typename T>
__device__ __forceinline__ void store(T* p, const Vec<T>& v) { *reinterpret_cast<Vec<T>*>(p) = v; }

inline bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline int blocks_for(int64_t work_items) {
  const int64_t wanted = (work_items + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, 132LL * 32)));
}

template <typename Launch>
inline void dispatch(torch::ScalarType type, const Launch& launch) {
  switch (type) {
    case torch::kFloat32: launch(float{}); break;
    case torch::kBFloat16: launch(__nv_bfloat16{}); break;
    case torch::kFloat16: launch(__half{}); break;
    default: throw std::invalid_argument("prge cuda kernel: float32, bfloat16 or float16 only");
  }
}

inline int vector_width(torch::ScalarType type) { return 16 / static_cast<int>(c10::elementSize(type)); }

}  // namespace
}  // namespace prge::cuda
