// First order's device form (the loss through copy_losses' answer layout, on a batch right-padded
// as the trainer pads it for CUDA graphs) against the plain backprop reference, on the CPU:
// batches as multiple-choice tasks make them (multi-token answers of several lengths, ending
// before the sequence does).
#include <gtest/gtest.h>

#include "prge/adapter_options.h"
#include "prge/first_order_gradient.h"

#include <set>
#include <vector>

namespace prge {
namespace {

ArchSpec tiny_spec() {
  ArchSpec spec;
  spec.vocab_size = 97;
  spec.hidden_size = 32;
  spec.intermediate_size = 64;
  spec.num_hidden_layers = 2;
  spec.num_attention_heads = 4;
  spec.num_key_value_heads = 2;
  spec.head_dim = 8;
  return spec;
}

// b sequences of t tokens; sequence i's answer is 1 + (i * 3 + seed) % max_answer tokens (or
// exactly fixed_answer) and ends (i + seed) % 4 tokens before the end.
TokenBatch task_like_batch(int64_t b, int64_t t, int64_t seed, int64_t max_answer, int64_t fixed_answer = 0) {
  auto ids = torch::randint(1, 97, {b, t}, torch::TensorOptions().dtype(torch::kInt64));
  auto targets = torch::full({b, t}, kIgnoreIndex, torch::kInt64);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t answer = fixed_answer > 0 ? fixed_answer : 1 + (i * 3 + seed) % max_answer;
    const int64_t end = t - (i + seed) % 4;
    for (int64_t p = end - answer - 1; p < end - 1; ++p) targets[i][p] = ids[i][p + 1];
  }
  return {ids, targets};
}

TokenBatch right_padded(const TokenBatch& batch, int64_t length) {
  const int64_t b = batch.size(), t = batch.input_ids.size(1);
  auto ids = torch::zeros({b, length}, torch::kInt64);
  auto targets = torch::full({b, length}, kIgnoreIndex, torch::kInt64);
  ids.narrow(1, 0, t).copy_(batch.input_ids);
  targets.narrow(1, 0, t).copy_(batch.targets);
  return {ids, targets};
}

TEST(FirstOrder, DeviceFormEqualsPlainGradientOnPaddedTaskBatches) {
  torch::manual_seed(0);
  auto model = CausalLM::random(tiny_spec(), 0, torch::kCPU, torch::kFloat32);
  AdapterOptions adapter;
  adapter.rank = 4;
  adapter.alpha = 8.0;
  adapter.init_seed = 3;
  model.attach_adapters(adapter);
  for (auto& p : model.adapter_parameters()) p.value.normal_(0.0, 0.05);  // a trained-looking point
  struct Case {
    int64_t b, t, seed, max_answer, fixed_answer;
  };
  // Answer counts 16 (the bucket exactly: no spare slot), 21 and 25 (bucket 32) and 50-70
  // (bucket 64 or 128); lengths padded to the next multiple of 32 as the trainer pads them.
  const std::vector<Case> cases{{4, 37, 1, 0, 4}, {6, 23, 2, 7, 0}, {6, 50, 5, 7, 0}, {8, 70, 3, 15, 0}};
  std::set<int64_t> capacities;
  for (const auto& c : cases) {
    const int64_t t = c.t;
    const auto batch = task_like_batch(c.b, c.t, c.seed, c.max_answer, c.fixed_answer);
    const auto plain = lora_fa_gradient(model, batch);
    const auto padded = right_padded(batch, (t + 31) / 32 * 32);
    const int64_t answers = (padded.targets != kIgnoreIndex).sum().item<int64_t>();
    int64_t capacity = 1;
    while (capacity < answers) capacity <<= 1;  // the graph entries' answer bucket
    capacities.insert(capacity);
    const auto device = lora_fa_gradient_on_device(model, padded.input_ids,
                                                   AnswerLayout::from_targets(padded.targets, capacity));
    EXPECT_NEAR(device.loss.item<double>(), plain.loss, 1e-5 * std::abs(plain.loss)) << "length " << t;
    std::vector<torch::Tensor> flat;
    for (const auto& g : plain.grads) flat.push_back(g.flatten());
    const auto expected = torch::cat(flat);
    ASSERT_EQ(device.flat_grad.numel(), expected.numel());
    const double scale = expected.abs().max().item<double>();
    ASSERT_GT(scale, 0.0);
    EXPECT_LE((device.flat_grad - expected).abs().max().item<double>(), 1e-5 * scale) << "length " << t;
  }
  EXPECT_EQ(capacities, (std::set<int64_t>{16, 32, 64}));
}

}  // namespace
}  // namespace prge
