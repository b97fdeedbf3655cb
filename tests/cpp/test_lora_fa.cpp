// The grouped bmm must give each copy of the batch exactly the output of a plain
// LoRA-FA layer with that copy's B; a wrong view/reshape would mix copies.
#include "prge/fused_projection.h"
#include "prge/lora_fa_linear.h"

#include <gtest/gtest.h>

TEST(LoraFaLinear, GroupedCopiesMatchPerCopyLayers) {
  torch::manual_seed(0);
  prge::LoraFaLinear layer(torch::randn({12, 8}), "test");
  layer.attach_adapter(4, 8.0 / 4, 3, 0);
  layer.lora_b().copy_(torch::randn({12, 4}));
  prge::PerturbationStream stream(5, prge::NoiseDistribution::Gaussian);
  const int64_t q = 3, b = 2, t = 5;
  auto plan = prge::PerturbationPlan::central_dual(stream, 4, q, 0.1);
  auto materialized = prge::MaterializedPlan::build(plan, torch::kCPU);
  auto x = torch::randn({b, t, 8});
  auto y = layer.forward(x.repeat({2 * q, 1, 1}), &materialized);
  auto z = stream.noise_block(4, 0, q, {12, 4}, torch::kCPU);
  for (int64_t c = 0; c < 2 * q; ++c) {
    auto bc = layer.lora_b() + plan.copy_scale[c] * z[plan.copy_query[c]];
    auto expected = at::linear(x, layer.weight()) +
                    layer.scaling() * at::linear(at::linear(x, layer.lora_a()), bc);
    EXPECT_TRUE(torch::allclose(y.narrow(0, c * b, b), expected, 1e-5, 1e-5)) << "copy " << c;
  }
}

TEST(LoraFaLinear, RejectsBatchNotDivisibleByCopies) {
  prge::LoraFaLinear layer(torch::randn({4, 4}), "test");
  layer.attach_adapter(2, 4.0 / 2, 0, 0);
  prge::PerturbationStream stream(5, prge::NoiseDistribution::Gaussian);
  auto plan = prge::PerturbationPlan::central_dual(stream, 0, 2, 0.1);
  auto materialized = prge::MaterializedPlan::build(plan, torch::kCPU);
  EXPECT_THROW(layer.forward(torch::randn({3, 2, 4}), &materialized), std::invalid_argument);
}

// forward_frozen leaves the fused low-rank term to its consumer (the gated activation kernel):
// the frozen output plus scaling * (A x) B_c^T on copy c's rows must be forward_fused's output.
TEST(FusedLoraFaProjection, FrozenOutputPlusTermIsTheFusedOutput) {
  torch::manual_seed(0);
  prge::FusedLoraFaProjection gate_up({torch::randn({6, 8}), torch::randn({6, 8})}, {"gate", "up"});
  for (size_t p = 0; p < 2; ++p) {
    gate_up.part(p).attach_adapter(4, 8.0 / 4, 3 + p, static_cast<int64_t>(p));
    gate_up.part(p).lora_b().copy_(torch::randn({6, 4}));
  }
  gate_up.refresh_adapters();
  ASSERT_TRUE(gate_up.splits_low_rank_term());
  EXPECT_EQ(gate_up.rank(), 4);
  prge::PerturbationStream stream(5, prge::NoiseDistribution::Gaussian);
  const int64_t q = 2, b = 2, t = 3;
  auto plan = prge::PerturbationPlan::central_dual(stream, 4, q, 0.1);
  auto materialized = prge::MaterializedPlan::build(plan, torch::kCPU);
  auto x = torch::randn({b, t, 8}).repeat({2 * q, 1, 1});
  prge::FusedLoraFaProjection::LowRankTerm term;
  auto frozen = gate_up.forward_frozen(x, &materialized, term);
  ASSERT_EQ(term.b_stack.size(0), 2 * q);
  ASSERT_EQ(term.ax.size(-1), 8);
  auto rows = term.ax.reshape({2 * q, b * t, 8});
  auto added = frozen + term.scaling * at::bmm(rows, term.b_stack.transpose(1, 2)).reshape({2 * q * b, t, 12});
  EXPECT_TRUE(torch::allclose(added, gate_up.forward_fused(x, &materialized), 1e-5, 1e-5));
}

TEST(FusedLoraFaProjection, TermSplitsOnlyWithEveryPartAdaptedAlike) {
  prge::FusedLoraFaProjection one_adapted({torch::randn({6, 8}), torch::randn({6, 8})}, {"gate", "up"});
  one_adapted.part(1).attach_adapter(4, 2.0, 0, 1);
  one_adapted.refresh_adapters();
  EXPECT_FALSE(one_adapted.splits_low_rank_term());
  EXPECT_EQ(one_adapted.rank(), 0);
  prge::FusedLoraFaProjection::LowRankTerm term;
  EXPECT_THROW(one_adapted.forward_frozen(torch::randn({1, 2, 8}), nullptr, term), std::logic_error);
  prge::FusedLoraFaProjection ranks({torch::randn({6, 8}), torch::randn({6, 8})}, {"gate", "up"});
  ranks.part(0).attach_adapter(4, 2.0, 0, 0);
  ranks.part(1).attach_adapter(2, 2.0, 0, 1);
  ranks.refresh_adapters();
  EXPECT_FALSE(ranks.splits_low_rank_term());
}
