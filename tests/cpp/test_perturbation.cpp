// The seed trick must regenerate exactly the same z; if it did not, the update would
// move B along a direction that was never evaluated.
#include "prge/perturbation.h"
#include "prge/perturbation_plan.h"

#include <gtest/gtest.h>

using prge::NoiseDistribution;
using prge::PerturbationStream;

TEST(Perturbation, SameSeedSameNoise) {
  PerturbationStream a(7, NoiseDistribution::Gaussian), b(7, NoiseDistribution::Gaussian);
  auto za = a.noise(3, 5, 1, {17, 9}, torch::kCPU);
  auto zb = b.noise(3, 5, 1, {17, 9}, torch::kCPU);
  EXPECT_TRUE(torch::equal(za, zb));
}

TEST(Perturbation, EveryCoordinateChangesTheNoise) {
  PerturbationStream s(7, NoiseDistribution::Gaussian);
  auto base = s.noise(3, 5, 1, {64}, torch::kCPU);
  EXPECT_FALSE(torch::equal(base, s.noise(4, 5, 1, {64}, torch::kCPU)));
  EXPECT_FALSE(torch::equal(base, s.noise(3, 6, 1, {64}, torch::kCPU)));
  EXPECT_FALSE(torch::equal(base, s.noise(3, 5, 2, {64}, torch::kCPU)));
  EXPECT_FALSE(torch::equal(base, PerturbationStream(8, NoiseDistribution::Gaussian)
                                      .noise(3, 5, 1, {64}, torch::kCPU)));
}

TEST(Perturbation, GaussianMomentsAndRademacherValues) {
  PerturbationStream g(1, NoiseDistribution::Gaussian), r(1, NoiseDistribution::Rademacher);
  auto z = g.noise_block(0, 0, 4, {250, 250}, torch::kCPU);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{4, 250, 250}));
  EXPECT_NEAR(z.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(z.std().item<double>(), 1.0, 0.01);
  auto s = r.noise(0, 0, 0, {10000}, torch::kCPU);
  EXPECT_TRUE(torch::equal(s.abs(), torch::ones_like(s)));
  EXPECT_NEAR(s.mean().item<double>(), 0.0, 0.05);
}

TEST(Perturbation, CombineIsTheMeanOfProjectedDirections) {
  PerturbationStream s(11, NoiseDistribution::Gaussian);
  prge::ZoParameter block{torch::zeros({6, 3}), 2, prge::NoiseLayout::Block, "b"};
  prge::ZoParameter per_query{torch::zeros({6, 3}), 2, prge::NoiseLayout::PerQuery, "w"};
  const std::vector<double> g{0.5, -2.0, 1.25};
  for (const auto& p : {block, per_query}) {
    auto expected = torch::zeros({6, 3});
    for (int64_t i = 0; i < 3; ++i) expected += g[i] * s.query_noise(p, 9, i, 3);
    EXPECT_TRUE(torch::allclose(s.combine(p, 9, g), expected / 3.0, 1e-6, 1e-6));
  }
}

TEST(Perturbation, AutoResolvesPerDeviceAndEstimator) {
  using prge::NoiseRng;
  using prge::resolve_noise_rng;
  const torch::Device cpu(torch::kCPU), cuda("cuda");
  EXPECT_EQ(resolve_noise_rng(NoiseRng::Auto, cpu, true), NoiseRng::Torch);
  EXPECT_EQ(resolve_noise_rng(NoiseRng::Auto, cpu, false), NoiseRng::Torch);
  EXPECT_EQ(resolve_noise_rng(NoiseRng::Auto, cuda, true), NoiseRng::Counter);
#ifdef PRGE_WITH_CUDA
  EXPECT_EQ(resolve_noise_rng(NoiseRng::Auto, cuda, false), NoiseRng::Counter);  // MeZO: its kernels draw z
#else
  EXPECT_EQ(resolve_noise_rng(NoiseRng::Auto, cuda, false), NoiseRng::Torch);
#endif
  EXPECT_EQ(resolve_noise_rng(NoiseRng::Torch, cuda, false), NoiseRng::Torch);
  EXPECT_EQ(resolve_noise_rng(NoiseRng::Counter, cpu, false), NoiseRng::Counter);
}

TEST(PerturbationPlan, CentralDualListsPlusThenMinus) {
  PerturbationStream s(0, NoiseDistribution::Gaussian);
  auto plan = prge::PerturbationPlan::central_dual(s, 0, 3, 0.01);
  ASSERT_EQ(plan.copies(), 6);
  EXPECT_EQ(plan.copy_query, (std::vector<int64_t>{0, 1, 2, 0, 1, 2}));
  EXPECT_DOUBLE_EQ(plan.copy_scale[2], 0.01);
  EXPECT_DOUBLE_EQ(plan.copy_scale[3], -0.01);
}
