#pragma once
// Projections that read the same input (q/k/v; gate/up) run as one GEMM over the
// row-concatenated W and one over the row-concatenated A of the adapted parts; the
// copies of every part's B go into one block-diagonal bmm. Each part stays a
// LoraFaLinear whose W and A are views of the fused storage, so parameter indices,
// MeZO perturbations and checkpoints still see one tensor per projection.
#include "prge/lora_fa_linear.h"

#include <torch/torch.h>

#include <string>
#include <vector>

namespace prge {

class FusedLoraFaProjection {
 public:
  FusedLoraFaProjection() = default;
  // weights [out_p, in] per part; biases: one [out_p] per part, or none.
  FusedLoraFaProjection(const std::vector<torch::Tensor>& weights, const std::vector<std::string>& names,
                        const std::vector<torch::Tensor>& biases = {});

  LoraFaLinear& part(size_t i) { return parts_.at(i); }
  const LoraFaLinear& part(size_t i) const { return parts_.at(i); }
  size_t parts() const { return parts_.size(); }

  // Re-fuse A after adapters were attached to some parts.
  void refresh_adapters();
  // As LoraFaLinear::fold_lora_a for the group: the fused A stacked under the fused W, every
  // part's W and A views of it. Only without biases, with one scaling, dense W; returns
  // whether the group is folded now.
  bool fold_lora_a(bool on);
  bool lora_a_folded() const { return weight_and_a_.defined(); }
  bool adapted() const { return !adapted_.empty(); }
  // The copy stacks forward asks a perturbing plan for: one block-diagonal stack (rows of
  // part p, columns of its rank-slice of A x) when every adapted part has the same scaling,
  // else one stack per adapted part (each part then runs as its own LoRA-FA layer).
  std::vector<CopyStackRequest> copy_requests() const;

  // The fused output [N, T, sum out] (parts side by side; contiguous, or with A folded a view
  // whose rows are sum out + R apart). `weight` / `bias`, when defined, replace the fused W /
  // bias for this call (MeZO's perturbed temporaries).
  torch::Tensor forward_fused(const torch::Tensor& x, const MaterializedPlan* plan,
                              const torch::Tensor& weight = {}, const torch::Tensor& bias = {}) const;
  const torch::Tensor& bias() const { return bias_; }  // [sum out] or undefined

  // forward_fused's low-rank term, left for the consumer to add (the gated activation kernel
  // adds gate/up's inside its own pass): A x of the parts side by side [N, T, sum r], the copies
  // of their B [copies, sum out, sum r] (block-diagonal, x's dtype) and the shared scaling.
  struct LowRankTerm {
    torch::Tensor ax;
    torch::Tensor b_stack;
    double scaling = 0.0;
  };
  // Whether forward_frozen applies: every part adapted, one rank and one scaling.
  bool splits_low_rank_term() const;
  int64_t rank() const;  // each part's r when splits_low_rank_term(), else 0
  // The frozen output x W^T (+ bias) [N, T, sum out] alone; `term` receives the rest, so that
  // forward_fused's output is this plus scaling * ax b_stack[c]^T on copy c's rows (each sum
  // rounded to x's dtype). Throws std::logic_error unless splits_low_rank_term().
  torch::Tensor forward_frozen(const torch::Tensor& x, const MaterializedPlan* plan, LowRankTerm& term,
                               const torch::Tensor& weight = {}, const torch::Tensor& bias = {}) const;

 private:
  torch::Tensor weight_;              // [sum out, in]
  torch::Tensor bias_;                // [sum out] or undefined
  torch::Tensor lora_a_;              // [adapted * r, in]
  torch::Tensor weight_and_a_;        // [sum out + adapted * r, in] (fold_lora_a), or undefined
  std::vector<LoraFaLinear> parts_;
  std::vector<int64_t> sizes_;        // out features per part
  std::vector<int64_t> offsets_;      // first row of each part in weight_
  std::vector<size_t> adapted_;       // parts with an adapter, in order
  std::vector<int64_t> a_offsets_;    // first row of each adapted part's A in lora_a_
  bool one_scaling_ = true;           // adapted parts share a scaling: fused low-rank term

  CopyStackRequest fused_request() const;
  // B's copies for `plan` in one stack of x's dtype (one copy when the plan does not perturb).
  torch::Tensor fused_copies(const MaterializedPlan* plan, const torch::Tensor& x) const;
};

}  // namespace prge
