// The counter RNG is what an inference engine regenerates in-graph: its integers must be
// exactly the scalar reference, its tensor form must equal the scalar form, and its
// Gaussian must look Gaussian.
#include "prge/counter_rng.h"
#include "prge/perturbation.h"

#include <gtest/gtest.h>

#include <set>

namespace cr = prge::counter_rng;

TEST(CounterRng, TensorMixEqualsScalarMix) {
  auto x = torch::tensor({int64_t{0}, int64_t{1}, int64_t{12345}, int64_t{0x7FFFFFFF},
                          int64_t{0x80000000LL}, int64_t{0xFFFFFFFFLL}},
                         torch::kInt64);
  auto y = cr::mix32(x);
  for (int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_EQ(y[i].item<int64_t>(), static_cast<int64_t>(cr::mix32(static_cast<uint32_t>(x[i].item<int64_t>()))));
    EXPECT_GE(y[i].item<int64_t>(), 0);
    EXPECT_LE(y[i].item<int64_t>(), cr::kMask32);
  }
}

TEST(CounterRng, MixIsInjectiveOnASample) {
  std::set<uint32_t> seen;
  for (uint32_t i = 0; i < 200000; ++i) seen.insert(cr::mix32(i * 2654435761u));
  EXPECT_EQ(seen.size(), 200000u);
}

TEST(CounterRng, BlockRowsArePerQueryStreams) {
  prge::PerturbationStream s(5, prge::NoiseDistribution::Gaussian, prge::NoiseRng::Counter);
  auto block = s.noise_block(2, 9, 3, {7, 4}, torch::kCPU);
  for (int64_t i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(block[i], s.noise(2, 9, i, {7, 4}, torch::kCPU)));
  EXPECT_FALSE(torch::equal(block[0], block[1]));
  EXPECT_FALSE(torch::equal(block[0], s.noise(3, 9, 0, {7, 4}, torch::kCPU)));
}

TEST(CounterRng, GaussianAndRademacherStatistics) {
  auto z = cr::noise(cr::stream_key(cr::step_key(1, 0), 0, 0), 400000, true, torch::kCPU);
  EXPECT_NEAR(z.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(z.std().item<double>(), 1.0, 0.01);
  EXPECT_NEAR((z.abs() < 1.0).to(torch::kFloat64).mean().item<double>(), 0.6827, 0.005);
  auto r = cr::noise(cr::stream_key(cr::step_key(1, 0), 0, 0), 100000, false, torch::kCPU);
  EXPECT_TRUE(((r == 1.0) | (r == -1.0)).all().item<bool>());
  EXPECT_NEAR(r.mean().item<double>(), 0.0, 0.02);
}

TEST(CounterRng, QueryIndexOutOfRangeIsRejected) {
  EXPECT_THROW(cr::stream_key(0, 0, cr::kQueriesPerParam), std::invalid_argument);
}
