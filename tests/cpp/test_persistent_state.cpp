#include "prge/devices.h"
#include "prge/optim/optimizer.h"

#include <gtest/gtest.h>

// What a captured CUDA graph reads at a fixed address must stay at that address for the run.
namespace prge {

// The optimizer's step scalars were made anew every step on "cuda" (held on "cuda:0"), and a
// captured graph replayed later read freed memory as lr_t (session 15).
TEST(PersistentState, UnindexedNameMeansTheDeviceAlreadyHeld) {
  EXPECT_TRUE(already_on(torch::Device("cuda:0"), torch::Device("cuda")));
  EXPECT_TRUE(already_on(torch::Device("cuda:1"), torch::Device("cuda:1")));
  EXPECT_FALSE(already_on(torch::Device("cuda:1"), torch::Device("cuda:0")));
  EXPECT_FALSE(already_on(torch::Device("cpu"), torch::Device("cuda")));
  EXPECT_FALSE(already_on(torch::Device("cuda:0"), torch::Device("cpu")));
  EXPECT_TRUE(already_on(torch::Device("cpu"), torch::Device("cpu")));
}

// A zeroth-order step runs in InferenceMode, first order's device step outside it (autograd):
// the optimizer's tensors, made once, must take in-place writes in both.
TEST(PersistentState, OptimizerStateTakesStepsInAndOutOfInferenceMode) {
  OptimizerOptions options;
  options.momentum = 0.9;
  Optimizer optimizer(options);
  auto value = torch::zeros({4});
  {
    c10::InferenceMode guard;
    optimizer.begin_step(torch::Device("cpu"));
    optimizer.update(kAdapterBufferKey, value, torch::ones({4}));
  }
  const auto scalars = optimizer.step_scalars().data_ptr();
  EXPECT_NO_THROW({
    optimizer.begin_step(torch::Device("cpu"));
    optimizer.update(kAdapterBufferKey, value, torch::ones({4}));
  });
  EXPECT_EQ(optimizer.step_scalars().data_ptr(), scalars);
  // momentum traces 1 and 0.9 * 1 + 1: value = -lr (1 + 1.9)
  EXPECT_NEAR(value[0].item<double>(), -options.lr * 2.9, 1e-9);
}

TEST(PersistentState, LoadingOptimizerStateWritesIntoTheSlotsAlreadyHeld) {
  OptimizerOptions options;
  options.momentum = 0.9;
  Optimizer optimizer(options), saved(options);
  auto value = torch::zeros({4}), other = torch::zeros({4});
  optimizer.begin_step(torch::Device("cpu"));
  optimizer.update(kAdapterBufferKey, value, torch::ones({4}));
  for (int step = 0; step < 3; ++step) {
    saved.begin_step(torch::Device("cpu"));
    saved.update(kAdapterBufferKey, other, torch::full({4}, 2.0));
  }
  const auto held = optimizer.state().at("optimizer.adapter_buffer.m");
  optimizer.load_state(saved.state(), torch::Device("cpu"));
  const auto loaded = optimizer.state();
  EXPECT_EQ(loaded.at("optimizer.adapter_buffer.m").data_ptr(), held.data_ptr());
  EXPECT_TRUE(torch::equal(loaded.at("optimizer.adapter_buffer.m"), saved.state().at("optimizer.adapter_buffer.m")));
  EXPECT_TRUE(torch::equal(loaded.at("optimizer.steps"), saved.state().at("optimizer.steps")));
}

TEST(PersistentState, LoadingAStateLessCheckpointLeavesFreshStateInPlace) {
  OptimizerOptions options;
  options.momentum = 0.9;
  Optimizer optimizer(options);
  auto value = torch::zeros({4});
  for (int step = 0; step < 2; ++step) {
    optimizer.begin_step(torch::Device("cpu"));
    optimizer.update(kAdapterBufferKey, value, torch::ones({4}));
  }
  const auto held = optimizer.state().at("optimizer.adapter_buffer.m");
  optimizer.load_state({}, torch::Device("cpu"));
  const auto loaded = optimizer.state();
  EXPECT_EQ(loaded.at("optimizer.adapter_buffer.m").data_ptr(), held.data_ptr());
  EXPECT_TRUE(torch::equal(loaded.at("optimizer.adapter_buffer.m"), torch::zeros({4})));
  EXPECT_TRUE(torch::equal(loaded.at("optimizer.steps"), torch::tensor({0, 0}, torch::kInt64)));
}

}  // namespace prge
