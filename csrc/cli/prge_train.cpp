// prge_train: pure C++ entry point (no Python). Validates a run config and, given a
// model directory, times P-RGE steps on a synthetic prompt batch.
//   prge_train CONFIG.yaml [MODEL_DIR]
#include "prge/config.h"
#include "prge/trainer.h"

#include <fmt/format.h>

#include <iostream>

int main(int argc, char** argv) {
  const char* usage =
      "usage: prge_train CONFIG.yaml [MODEL_DIR]\n"
      "  validates CONFIG and prints every key's effective value; with MODEL_DIR, times run.steps steps\n"
      "  on a synthetic batch. No options: overrides (--set) belong to `prge train`.\n";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << usage;
      return 0;
    }
    if (!arg.empty() && arg[0] == '-') {
      std::cerr << "prge_train: error: unknown option '" << arg << "'\n" << usage;
      return 2;
    }
  }
  if (argc < 2 || argc > 3) {
    std::cerr << usage;
    return 2;
  }
  try {
    const auto config = prge::load_run_config(argv[1]);
    std::cout << config.to_yaml(/*every_key=*/true);
    if (argc < 3) return 0;
    const auto format = prge::weight_format(config.load_quantize(), config.model.group_size);
    auto model = std::make_shared<prge::CausalLM>(prge::CausalLM::from_pretrained(
        argv[2], torch::Device(config.model.device), prge::parse_dtype(config.model.dtype), format));
    model->set_gated_low_rank_kernel(config.model.gated_low_rank_kernel);
    if (config.use_adapter) {
      model->attach_adapters(config.adapter);
      model->set_fold_lora_a(config.model.fold_lora_a);
    }
    prge::Trainer trainer(model, config.estimator, config.optimizer, config.run.seed);
    const int64_t b = config.data.batch_size, t = config.data.max_length;
    auto ids = torch::randint(model->spec().vocab_size, {b, t}, torch::kInt64);
    auto targets = torch::full({b, t}, prge::kIgnoreIndex, torch::kInt64);
    targets.select(1, t - 2).copy_(ids.select(1, t - 1));
    for (int64_t s = 0; s < config.run.steps; ++s) {
      const auto r = trainer.step({ids, targets});
      fmt::print("step {:4d}  loss {:.4f}  {:.3f}s\n", r.step, r.loss, r.seconds);
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
