#pragma once
// LoRA-FA linear layer: y = W x + (alpha / r) * B (A x), with W and A frozen and only B
// trained (Zhang et al., 2023). Under a PerturbationPlan the batch is grouped
// [copies, b*T] and each group sees its own copy of B; W x and A x are one GEMM each
// over the whole repeated batch and the copies of B are applied with one bmm.
#include "prge/perturbation_plan.h"

#include <torch/torch.h>

#include <string>

namespace prge {

class LoraFaLinear {
 public:
  LoraFaLinear() = default;
  // weight [out, in] and an optional frozen bias [out] (Qwen2's q/k/v, attention_bias, mlp_bias).
  explicit LoraFaLinear(torch::Tensor weight, std::string name = "", torch::Tensor bias = {});

  // Attach a LoRA-FA adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) (LoRA's kaiming-uniform with
  // a = sqrt(5)) drawn from `init_seed`, B = 0 in float32; y = W x + scaling * B (A x)
  // (scaling: alpha / rank in LoRA, AdapterOptions::scaling_of).
  void attach_adapter(int64_t rank, double scaling, uint64_t init_seed, int64_t param_index);

  // Point W (and bias) and A at views of a fused group's storage (FusedLoraFaProjection).
  void share_storage(torch::Tensor weight_view, torch::Tensor lora_a_view, torch::Tensor bias_view = {});
  // Point B at its view of the model's flat adapter buffer (AdapterBuffer).
  void set_lora_b(torch::Tensor view);
  // Stack A under W in one [out + r, in] storage (W and A become its views), so that one GEMM
  // gives [x Wᵀ | A x] and x is read once; `false` goes back to two GEMMs over the same views.
  // Only for an adapted layer without a bias whose W is stored dense and, on CUDA, whose rows
  // stay 16-byte aligned (out + r a multiple of 8); returns whether the layer is folded now.
  bool fold_lora_a(bool on);
  bool lora_a_folded() const { return weight_and_a_.defined(); }

  bool has_adapter() const { return lora_a_.defined(); }
  const torch::Tensor& weight() const { return weight_; }
  torch::Tensor& mutable_weight() { return weight_; }
  const torch::Tensor& bias() const { return bias_; }  // undefined: no bias
  torch::Tensor& mutable_bias() { return bias_; }
  // The projection's own name without its layer (q_proj of layers.3.q_proj).
  std::string projection() const { return name_.substr(name_.rfind('.') + 1); }
  const torch::Tensor& lora_a() const { return lora_a_; }
  torch::Tensor& lora_b() { return lora_b_; }
  const torch::Tensor& lora_b() const { return lora_b_; }
  double scaling() const { return scaling_; }
  int64_t param_index() const { return param_index_; }
  const std::string& name() const { return name_; }

  // x: [N, T, in] with N = copies * b when a perturbing plan is given. `weight` / `bias`, when
  // defined, replace W / the bias for this call (MeZO's perturbed temporaries).
  torch::Tensor forward(const torch::Tensor& x, const MaterializedPlan* plan = nullptr,
                        const torch::Tensor& weight = {}, const torch::Tensor& bias = {}) const;
  // This B as a member of a copy stack (its own, or a fused group's block-diagonal one).
  GroupMember as_member(int64_t row_offset, int64_t col_offset) const;
  // The copy stack forward asks a perturbing plan for (an adapted layer only).
  CopyStackRequest copy_request() const;

 private:
  torch::Tensor weight_;  // [out, in], model dtype
  torch::Tensor bias_;    // [out], model dtype, or undefined
  torch::Tensor lora_a_;  // [r, in], model dtype
  torch::Tensor lora_b_;  // [out, r], float32 master copy
  torch::Tensor weight_and_a_;  // [out + r, in] whose views W and A are (fold_lora_a), or undefined
  double scaling_ = 0.0;
  int64_t param_index_ = -1;
  std::string name_;
};

// y = x Wᵀ + scaling * B_c (A x) (+ bias) for each copy c of the batch (Eq. P-RGE outer loop):
// x [N, T, in] is viewed as [copies, N/copies * T, in]. The low-rank term is written first
// (one bmm, K = r) and the big GEMM adds into it in its epilogue (beta = 1), so the output
// is written, read and written once each instead of an extra read-modify-write pass. With a
// bias the order turns: the GEMM writes y with the bias in its epilogue, the bmm adds into it.
// b_stack: [copies, out, r] in x's dtype; ax: [N, T, r]; bias: [out] or undefined.
torch::Tensor linear_plus_low_rank(const torch::Tensor& x, const torch::Tensor& weight,
                                   const torch::Tensor& ax, const torch::Tensor& b_stack,
                                   double scaling, const std::string& name, const torch::Tensor& bias = {});

// The same with A folded under W (`weight_and_a` [out + r, in], no bias): one GEMM writes
// [x Wᵀ | A x], then the low-rank term adds into its first `out` columns (beta = 1; the same
// traffic on y as above, and x read once instead of twice). Returns the [..., out] view of
// that output (rows `out + r` apart). Inference only (no autograd).
torch::Tensor folded_linear_plus_low_rank(const torch::Tensor& x, const torch::Tensor& weight_and_a, int64_t out,
                                          const torch::Tensor& b_stack, double scaling, const std::string& name);
// Whether W [out, in] and A [r, in] may be folded into one storage (see fold_lora_a).
bool lora_a_foldable(const torch::Tensor& weight, const torch::Tensor& lora_a, const torch::Tensor& bias);
// Whether a forward call takes the folded GEMM: A folded (`weight_and_a` defined), neither W nor
// a bias given for the call (MeZO's perturbed W, a dequantized base), and no autograd.
bool takes_folded_path(const torch::Tensor& weight_and_a, const torch::Tensor& weight, const torch::Tensor& bias);
// W and A stacked into one new [out + r, in] tensor; `weight` and `lora_a` become its views.
torch::Tensor fold_into_one(torch::Tensor& weight, torch::Tensor& lora_a);

}  // namespace prge
