// First order's device form (the loss through copy_losses' answer layout, on a batch right-padded
// as the trainer pads it for CUDA graphs) against the plain backprop reference, on the CPU:
// batches as multiple-choice tasks make them (multi-token answers of several lengths, ending
// before the sequence does).
#include <gtest/gtest.h>

#include "prge/adapter_options.h"
#include "prge/first_order_gradient.h"

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

// b sequences of t tokens; sequence i's answer is 1 + (i * 3 + seed) % 7 tokens and ends
// (i + seed) % 4 tokens before the end.
TokenBatch task_like_batch(int64_t b, int64_t t, int64_t seed) {
  auto ids = torch::randint(1, 97, {b, t}, torch::TensorOptions().dtype(torch::kInt64));
  auto targets = torch::full({b, t}, kIgnoreIndex, torch::kInt64);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t answer = 1 + (i * 3 + seed) % 7, end = t - (i + seed) % 4;
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
  for (const auto& [t, seed] : std::vector<std::pair<int64_t, int64_t>>{{37, 1}, {50, 2}, {23, 5}}) {
    const auto batch = task_like_batch(6, t, seed);
    const auto plain = lora_fa_gradient(model, batch);
    const auto padded = right_padded(batch, 64);
    const int64_t answers = (padded.targets != kIgnoreIndex).sum().item<int64_t>();
    int64_t capacity = 1;
    while (capacity < answers) capacity <<= 1;  // the graph entries' answer bucket
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
}

}  // namespace
}  // namespace prge
