#include "prge/cuda/gated_low_rank.h"

#include "prge/cuda/vector_access.cuh"

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace prge::cuda {
namespace {

// A warp takes 256 rows (16 mma tiles of 16, which share the warp's B fragments while their
// copy stays the same) by 32 columns of gate and the same 32 of up; the four warps of a block
// take adjacent columns of the same rows. Each warp streams its tiles through shared memory
// kStages deep (cp.async), every lane copying only what it later reads itself, so the warps
// never wait on each other and each keeps kStages - 1 tiles of reads in flight.
constexpr int kWarpsPerBlock = 4;
constexpr int kTileRows = 16;
constexpr int kTilesPerWarp = 16;
constexpr int kColumns = 32;
constexpr int kStages = 3;
constexpr int kMaxSteps = 4;  // summed rank up to 64, in steps of the mma's k = 16

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void copy_async_16(void* to, const void* from) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(to)), "l"(from) : "memory");
}
__device__ __forceinline__ void copy_async_8(void* to, const void* from) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(shared_address(to)), "l"(from) : "memory");
}
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// D += A B over one m16n8k16 tile (fp32 accumulators), A from registers in the mma's row
// layout, B in its column layout (PTX ISA, "mma.m16n8k16" fragment layouts).
template <typename T>
struct Mma;
template <>
struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <>
struct Mma<__half> {
  static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// The 2 S words (pairs of T) of one row that a thread's fragments take: S 16-byte-aligned pairs
// of words as 16-byte loads when S is even, else S 8-byte loads.
template <int S, typename T>
__device__ __forceinline__ void load_words(const T* at, uint32_t (&w)[2 * S]) {
  if constexpr (S % 2 == 0) {
#pragma unroll
    for (int i = 0; i < S / 2; ++i) {
      const uint4 v = *reinterpret_cast<const uint4*>(at + 8 * i);
      w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < S; ++i) {
      const uint2 v = *reinterpret_cast<const uint2*>(at + 4 * i);
      w[2 * i] = v.x, w[2 * i + 1] = v.y;
    }
  }
}

// act(gate) rounded to T, as ATen's silu and gelu(approximate="tanh") kernels compute it.
template <typename T, Activation A>
__device__ __forceinline__ float activate(float gate) {
  using C = Convert<T>;
  if constexpr (A == Activation::Silu) {
    return C::in(C::out(__fdiv_rn(gate, __fadd_rn(1.0f, expf(-gate)))));
  } else {
    constexpr float kBeta = static_cast<float>(M_SQRT2 * M_2_SQRTPI * 0.5);
    constexpr float kKappa = 0.044715f;
    const float inner = kBeta * (gate + kKappa * (gate * gate * gate));
    return C::in(C::out(0.5f * gate * (1.0f + tanhf(inner))));
  }
}

// Columns: tile j of a warp's 32 gives the mma's output column l the column
// (l / 2) * 8 + 2 j + l % 2, so that across its four tiles a thread holds 8 adjacent columns of
// its two rows and reads and writes them 16 bytes at a time. Rank: the sum over k is the same
// under any order of k taken alike in A x and B, so thread t of a group of four takes the 4 S
// adjacent rank columns [4 S t, 4 S t + 4 S) of each row it reads, as k = 2 t + 8 h + e of step
// s at column 4 S t + 4 s + 2 h + e (whole 16- or 8-byte pieces where the mma's own order would
// need 4-byte ones).
template <typename T, Activation A, int kSteps>
__global__ void __launch_bounds__(kWarpsPerBlock * kWarp)
    gated_low_rank_kernel(const T* __restrict__ gate_up, const T* __restrict__ ax, const T* __restrict__ stack,
                          int rows, int f, int rows_per_copy, float scaling, T* __restrict__ out) {
  using C = Convert<T>;
  constexpr int kRank = 16 * kSteps;
  // Per lane and stage: gate and up of rows group and group + 8 (16 bytes each), and the rank
  // columns of A x it takes from those rows (kSteps 8-byte pieces each).
  __shared__ uint4 staged_gate_up[kWarpsPerBlock][kStages][4][kWarp];
  __shared__ uint2 staged_ax[kWarpsPerBlock][kStages][2 * kSteps][kWarp];
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = static_cast<int>(threadIdx.x) / kWarp;
  const int group = lane / 4, thread_in_group = lane % 4;
  const int column_tiles = f / kColumns;
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  const int first_row = static_cast<int>(unit / column_tiles) * kTilesPerWarp * kTileRows;
  const int column = static_cast<int>(unit % column_tiles) * kColumns;
  if (first_row >= rows) return;
  const int tiles = min(kTilesPerWarp, (rows - first_row + kTileRows - 1) / kTileRows);
  const auto issue = [&](int t) {  // tile t's reads into stage t % kStages (none past the last tile)
    if (t < tiles) {
      const int stage = t % kStages;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = first_row + t * kTileRows + group + 8 * h;
        if (row >= rows) continue;
        const T* at = gate_up + static_cast<int64_t>(row) * 2 * f + column + thread_in_group * 8;
        copy_async_16(&staged_gate_up[warp][stage][h][lane], at);
        copy_async_16(&staged_gate_up[warp][stage][2 + h][lane], at + f);
        const T* words = ax + static_cast<int64_t>(row) * kRank + thread_in_group * 4 * kSteps;
#pragma unroll
        for (int i = 0; i < kSteps; ++i) copy_async_8(&staged_ax[warp][stage][h * kSteps + i][lane], words + 4 * i);
      }
    }
    commit_copies();  // an empty group past the last tile keeps the count of groups in flight fixed
  };
#pragma unroll
  for (int t = 0; t < kStages - 1; ++t) issue(t);
  uint32_t b[2][4][2 * kSteps];  // part (gate, up), column tile, words (two per k step)
  int loaded_copy = -1;
#pragma unroll 1
  for (int t = 0; t < tiles; ++t) {
    issue(t + kStages - 1);
    wait_copies<kStages - 1>();
    const int stage = t % kStages;
    const int r0 = first_row + t * kTileRows;
    const int row[2] = {r0 + group, r0 + group + 8};
    const bool valid[2] = {row[0] < rows, row[1] < rows};
    uint32_t a[kSteps][4];
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint2 w = staged_ax[warp][stage][h * kSteps + s][lane];
        a[s][h] = valid[h] ? w.x : 0u;
        a[s][h + 2] = valid[h] ? w.y : 0u;
      }
    }
    float acc[2][4][4] = {};
    const int last = min(r0 + kTileRows, rows) - 1;
    for (int c = r0 / rows_per_copy; c <= last / rows_per_copy; ++c) {
      if (c != loaded_copy) {
#pragma unroll
        for (int p = 0; p < 2; ++p) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int n = p * f + column + (group / 2) * 8 + 2 * j + group % 2;
            load_words<kSteps>(stack + (static_cast<int64_t>(c) * 2 * f + n) * kRank + thread_in_group * 4 * kSteps,
                               b[p][j]);
          }
        }
        loaded_copy = c;
      }
      // A tile across a copy boundary: each copy's B meets only its own rows of A x (the
      // others' words zeroed), so every row's sum comes from its own copy.
      const bool mine[2] = {row[0] / rows_per_copy == c, row[1] / rows_per_copy == c};
      uint32_t a_c[kSteps][4];
#pragma unroll
      for (int s = 0; s < kSteps; ++s) {
#pragma unroll
        for (int r = 0; r < 4; ++r) a_c[s][r] = mine[r % 2] ? a[s][r] : 0u;
      }
#pragma unroll
      for (int p = 0; p < 2; ++p) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
          for (int s = 0; s < kSteps; ++s) Mma<T>::run(acc[p][j], a_c[s], b[p][j][2 * s], b[p][j][2 * s + 1]);
        }
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (!valid[h]) continue;
      const uint4 gate_bits = staged_gate_up[warp][stage][h][lane], up_bits = staged_gate_up[warp][stage][2 + h][lane];
      const auto& g = reinterpret_cast<const Vec<T>&>(gate_bits);
      const auto& u = reinterpret_cast<const Vec<T>&>(up_bits);
      Vec<T> o;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int j = e / 2, k = h * 2 + e % 2;
        const float d_gate = C::in(C::out(__fmul_rn(scaling, acc[0][j][k])));
        const float d_up = C::in(C::out(__fmul_rn(scaling, acc[1][j][k])));
        const float gv = C::in(C::out(__fadd_rn(C::in(g.v[e]), d_gate)));
        const float uv = C::in(C::out(__fadd_rn(C::in(u.v[e]), d_up)));
        o.v[e] = C::out(__fmul_rn(activate<T, A>(gv), uv));
      }
      store(out + static_cast<int64_t>(row[h]) * f + column + thread_in_group * 8, o);
    }
  }
  wait_copies<0>();
}

template <typename T, Activation A>
void launch(int steps, dim3 grid, const torch::Tensor& gate_up, const torch::Tensor& ax, const torch::Tensor& stack,
            int rows, int f, int rows_per_copy, float scaling, torch::Tensor& out) {
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto* g = reinterpret_cast<const T*>(gate_up.data_ptr());
  const auto* x = reinterpret_cast<const T*>(ax.data_ptr());
  const auto* b = reinterpret_cast<const T*>(stack.data_ptr());
  auto* o = reinterpret_cast<T*>(out.data_ptr());
  const dim3 block(kWarpsPerBlock * kWarp);
  switch (steps) {
    case 1: gated_low_rank_kernel<T, A, 1><<<grid, block, 0, stream>>>(g, x, b, rows, f, rows_per_copy, scaling, o); break;
    case 2: gated_low_rank_kernel<T, A, 2><<<grid, block, 0, stream>>>(g, x, b, rows, f, rows_per_copy, scaling, o); break;
    case 3: gated_low_rank_kernel<T, A, 3><<<grid, block, 0, stream>>>(g, x, b, rows, f, rows_per_copy, scaling, o); break;
    case 4: gated_low_rank_kernel<T, A, 4><<<grid, block, 0, stream>>>(g, x, b, rows, f, rows_per_copy, scaling, o); break;
    default: throw std::invalid_argument("gated_low_rank: summed rank past 64");
  }
}

}  // namespace

bool gated_low_rank_supported(torch::ScalarType dtype, int64_t f, int64_t rank) {
  return (dtype == torch::kBFloat16 || dtype == torch::kFloat16) && f > 0 && f % kColumns == 0 && rank > 0 &&
         rank % 16 == 0 && rank <= 16 * kMaxSteps;
}

torch::Tensor gated_low_rank(const torch::Tensor& gate_up, const torch::Tensor& ax, const torch::Tensor& b_stack,
                             double scaling, Activation activation) {
  const auto dtype = gate_up.scalar_type();
  const int64_t width = gate_up.size(-1), f = width / 2, rank = ax.size(-1);
  const int64_t rows = width > 0 ? gate_up.numel() / width : 0;
  const bool layouts = gate_up.is_cuda() && gate_up.is_contiguous() && aligned(gate_up.data_ptr()) && ax.is_cuda() &&
                       ax.is_contiguous() && aligned(ax.data_ptr()) && b_stack.is_cuda() && b_stack.is_contiguous() &&
                       aligned(b_stack.data_ptr()) && ax.scalar_type() == dtype && b_stack.scalar_type() == dtype;
  const bool shapes = width % 2 == 0 && ax.numel() == rows * rank && b_stack.dim() == 3 && b_stack.size(0) > 0 &&
                      b_stack.size(1) == width && b_stack.size(2) == rank && rows % b_stack.size(0) == 0 &&
                      rows < std::numeric_limits<int>::max() / 2;
  if (!layouts || !shapes || !gated_low_rank_supported(dtype, f, rank)) {
    throw std::invalid_argument(
        "gated_low_rank: contiguous, 16-byte aligned bfloat16 / float16 CUDA tensors gate_up [..., 2f] (f a multiple "
        "of 32), ax [..., R] and b_stack [copies, 2f, R] (R a multiple of 16 up to 64), rows a multiple of copies");
  }
  auto sizes = gate_up.sizes().vec();
  sizes.back() = f;
  auto out = torch::empty(sizes, gate_up.options());
  if (rows == 0) return out;
  const int64_t warps = (rows + kTilesPerWarp * kTileRows - 1) / (kTilesPerWarp * kTileRows) * (f / kColumns);
  const int64_t blocks = (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > std::numeric_limits<int32_t>::max()) throw std::invalid_argument("gated_low_rank: too many rows");
  const dim3 grid(static_cast<unsigned>(blocks));
  const int rows_per_copy = static_cast<int>(rows / b_stack.size(0)), steps = static_cast<int>(rank / 16);
  const auto s = static_cast<float>(scaling);
  const bool silu = activation == Activation::Silu;
  if (dtype == torch::kBFloat16) {
    silu ? launch<__nv_bfloat16, Activation::Silu>(steps, grid, gate_up, ax, b_stack, rows, f, rows_per_copy, s, out)
         : launch<__nv_bfloat16, Activation::GeluTanh>(steps, grid, gate_up, ax, b_stack, rows, f, rows_per_copy, s, out);
  } else {
    silu ? launch<__half, Activation::Silu>(steps, grid, gate_up, ax, b_stack, rows, f, rows_per_copy, s, out)
         : launch<__half, Activation::GeluTanh>(steps, grid, gate_up, ax, b_stack, rows, f, rows_per_copy, s, out);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace prge::cuda
