#include "prge/devices.h"
#include "prge/optim/optimizer.h"

#include <gtest/gtest.h>

namespace prge {

// The optimizer's step scalars were made anew every step on "cuda" (held on "cuda:0"), and a
// captured graph replayed later read freed memory as lr_t (session 15).
TEST(Devices, UnindexedNameMeansTheDeviceAlreadyHeld) {
  EXPECT_TRUE(already_on(torch::Device("cuda:0"), torch::Device("cuda")));
  EXPECT_TRUE(already_on(torch::Device("cuda:1"), torch::Device("cuda:1")));
  EXPECT_FALSE(already_on(torch::Device("cuda:1"), torch::Device("cuda:0")));
  EXPECT_FALSE(already_on(torch::Device("cpu"), torch::Device("cuda")));
  EXPECT_FALSE(already_on(torch::Device("cuda:0"), torch::Device("cpu")));
  EXPECT_TRUE(already_on(torch::Device("cpu"), torch::Device("cpu")));
}

TEST(Devices, OptimizerKeepsOneScalarTensorAcrossSteps) {
  Optimizer optimizer(OptimizerOptions{});
  auto value = torch::ones({4});
  optimizer.begin_step(torch::Device("cpu"));
  optimizer.update(0, value, torch::ones({4}));
  const auto first = optimizer.step_scalars().data_ptr();
  for (int step = 0; step < 3; ++step) {
    optimizer.begin_step(torch::Device("cpu"));
    optimizer.update(0, value, torch::ones({4}));
    EXPECT_EQ(optimizer.step_scalars().data_ptr(), first);
  }
  EXPECT_NEAR(value[0].item<double>(), 1.0 - 4 * 1e-4, 1e-7);
}

}  // namespace prge
