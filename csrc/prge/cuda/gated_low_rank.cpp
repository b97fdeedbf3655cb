#include "prge/cuda/gated_low_rank.h"

#include "prge/cuda/triton_kernels.h"

#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace prge::cuda {
namespace {

const triton_kernels::CompiledKernel* variant(torch::ScalarType dtype, int64_t rank, Activation activation) {
  const char* type = dtype == torch::kBFloat16 ? "bf16" : dtype == torch::kHalf ? "fp16" : nullptr;
  if (!type || (rank != 16 && rank != 32 && rank != 64)) return nullptr;
  return triton_kernels::find(fmt::format("gated_low_rank/{}/r{}/{}", type, rank,
                                          activation == Activation::Silu ? "silu" : "gelu_tanh"));
}

bool aligned(const torch::Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0; }

// What the kernel's divisibility hints promise: the last dimension contiguous, the other strides
// multiples of 16 elements, the start 16-byte aligned; else a fresh contiguous copy (contiguous()
// alone keeps a contiguous tensor's misaligned start). A fresh [.., w] copy has strides w and 1:
// callers check w.
torch::Tensor meets_hints(const torch::Tensor& t) {
  bool fits = t.stride(-1) == 1 && aligned(t);
  for (int64_t d = 0; d + 1 < t.dim(); ++d) fits = fits && t.stride(d) % 16 == 0;
  return fits ? t : t.clone(at::MemoryFormat::Contiguous);
}

// The tensor as [rows, width], rows evenly apart (a view when the leading dims merge).
torch::Tensor as_rows(const torch::Tensor& t) {
  return meets_hints(t.dim() == 2 ? t : t.reshape({-1, t.size(-1)}));
}

}  // namespace

bool gated_low_rank_supported(torch::ScalarType dtype, int64_t rows, int64_t f, int64_t rank, int64_t copies,
                              Activation activation) {
  const auto* kernel = variant(dtype, rank, activation);
  if (!kernel || f % 16 != 0 || copies < 1 || rows % copies != 0) return false;
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  if (rows >= kInt32Max || 2 * f * 2 * rank >= kInt32Max) return false;
  return copies == 1 || rows / copies >= kernel->block_m;
}

torch::Tensor gated_low_rank(const torch::Tensor& gate_up, const torch::Tensor& ax, const torch::Tensor& b_stack,
                             double scaling, Activation activation) {
  const auto bad = [](const std::string& what) { return std::invalid_argument("gated_low_rank: " + what); };
  if (!gate_up.is_cuda() || ax.device() != gate_up.device() || b_stack.device() != gate_up.device()) {
    throw bad("gate_up, ax and b_stack must be on one CUDA device");
  }
  if (ax.scalar_type() != gate_up.scalar_type() || b_stack.scalar_type() != gate_up.scalar_type()) {
    throw bad("gate_up, ax and b_stack must have one dtype");
  }
  if (gate_up.dim() < 2 || ax.dim() < 1 || b_stack.dim() != 3 || gate_up.size(-1) < 2 || ax.size(-1) < 2 ||
      gate_up.size(-1) % 2 != 0 || ax.size(-1) % 2 != 0 || b_stack.size(0) < 1) {
    throw bad("gate_up [..., 2f], ax [..., 2r] and b_stack [copies, 2f, 2r] expected, f, r and copies >= 1");
  }
  const c10::cuda::CUDAGuard on_device(gate_up.device());
  const int64_t f = gate_up.size(-1) / 2, rank = ax.size(-1) / 2, copies = b_stack.size(0);
  const int64_t rows = gate_up.numel() / gate_up.size(-1);
  if (ax.numel() / ax.size(-1) != rows || b_stack.size(1) != 2 * f || b_stack.size(2) != 2 * rank) {
    throw bad(c10::str("shapes disagree: gate_up ", gate_up.sizes(), ", ax ", ax.sizes(), ", b_stack ",
                       b_stack.sizes()));
  }
  const auto* kernel = variant(gate_up.scalar_type(), rank, activation);
  if (!kernel || !gated_low_rank_supported(gate_up.scalar_type(), rows, f, rank, copies, activation)) {
    throw bad(fmt::format("no compiled variant for {} rows, f {}, rank {}, {} copies in {} here", rows, f, rank, copies,
                          c10::toString(gate_up.scalar_type())));
  }
  // Fresh copies meet the hints too: 2f, 2r, 2r and 4fr are multiples of 16 (f % 16 == 0, r >= 16).
  const auto g = as_rows(gate_up), u = as_rows(ax), b = meets_hints(b_stack);
  auto sizes = gate_up.sizes().vec();
  sizes.back() = f;
  auto out = torch::empty(sizes, gate_up.options());
  if (rows == 0 || f == 0) return out;
  auto rows32 = static_cast<int32_t>(rows), f32 = static_cast<int32_t>(f);
  auto per_copy = static_cast<int32_t>(rows / copies);
  auto scale = static_cast<float>(scaling);
  auto stride_g = static_cast<int32_t>(g.stride(0)), stride_u = static_cast<int32_t>(u.stride(0));
  auto stride_b_copy = static_cast<int32_t>(b.stride(0)), stride_b_row = static_cast<int32_t>(b.stride(1));
  auto stride_out = f32;
  void* g_ptr = g.data_ptr();
  void* u_ptr = u.data_ptr();
  void* b_ptr = b.data_ptr();
  void* out_ptr = out.data_ptr();
  const auto blocks = [](int64_t n, int64_t block) { return static_cast<unsigned>((n + block - 1) / block); };
  triton_kernels::launch(*kernel, blocks(rows, kernel->block_m), blocks(f, kernel->block_n),
                         {&g_ptr, &u_ptr, &b_ptr, &out_ptr, &rows32, &f32, &per_copy, &scale, &stride_g, &stride_u,
                          &stride_b_copy, &stride_b_row, &stride_out});
  return out;
}

}  // namespace prge::cuda
