// The grouped bmm must give each copy of the batch exactly the output of a plain
// LoRA-FA layer with that copy's B; a wrong view/reshape would mix copies.
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
