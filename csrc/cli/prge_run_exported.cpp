// prge_run_exported: runs the training loop of a `prge export` directory in pure C++,
// through an unmodified inference runtime (AOTInductor via LibTorch, or ONNX Runtime's
// C++ API). No Python.
//   prge_run_exported EXPORT_DIR [--steps N] [--out FILE.safetensors]
// EXPORT_DIR/export.json names the runtime, model file, batches, lr, epsilon and seed.
// Prints one JSON line per step ({"step", "loss", "projected_grads"}) and saves the
// trained B tensors (b_0 .. b_{P-1}) to --out (default EXPORT_DIR/trained_b_<runtime>.safetensors).
#include "runtimes/exported_step.h"
#include "prge/counter_rng.h"
#include "prge/io/safetensors.h"
#include "prge/io/yaml_scalars.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <iostream>

namespace fs = std::filesystem;

namespace {

template <typename T>
T field(const YAML::Node& root, const char* key, const fs::path& file) {
  if (!root[key]) throw std::runtime_error(fmt::format("{}: missing key '{}'", file.string(), key));
  try {
    return prge::io::scalar_as<T>(root[key]);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("{}: key '{}': {}", file.string(), key, e.what()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: prge_run_exported EXPORT_DIR [--steps N] [--out FILE.safetensors]\n";
    return 2;
  }
  try {
    const fs::path dir = argv[1];
    int64_t steps = -1;
    std::string out;
    for (int i = 2; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--steps" && i + 1 < argc) {
        steps = std::stoll(argv[++i]);
      } else if (arg == "--out" && i + 1 < argc) {
        out = argv[++i];
      } else {
        throw std::runtime_error("unknown argument: " + arg);
      }
    }
    const fs::path manifest = dir / "export.json";
    if (!fs::exists(manifest)) throw std::runtime_error(manifest.string() + " not found (run `prge export` first)");
    const YAML::Node root = YAML::LoadFile(manifest.string());
    const auto runtime = field<std::string>(root, "runtime", manifest);
    const auto lr = field<double>(root, "lr", manifest);
    const auto epsilon = field<double>(root, "epsilon", manifest);
    const auto seed = field<uint64_t>(root, "seed", manifest);
    const auto device = field<std::string>(root, "device", manifest);
    auto batches = prge::io::load_safetensors((dir / field<std::string>(root, "batches", manifest)).string());
    auto initial = prge::io::load_safetensors((dir / field<std::string>(root, "initial_b", manifest)).string());
    std::vector<torch::Tensor> initial_b;
    for (size_t i = 0; i < initial.size(); ++i) {
      auto it = initial.find(fmt::format("b_{}", i));
      if (it == initial.end()) throw std::runtime_error(fmt::format("initial B file lacks b_{}", i));
      initial_b.push_back(it->second);
    }
    const auto ids = batches.at("input_ids"), targets = batches.at("targets");  // [S, b, T]
    if (steps < 0) steps = ids.size(0);
    if (steps > ids.size(0)) {
      throw std::runtime_error(fmt::format("{} steps asked, the batches file holds {}", steps, ids.size(0)));
    }
    const auto model_file = (dir / field<std::string>(root, "model", manifest)).string();
    std::unique_ptr<prge::runtimes::ExportedStep> step =
        runtime == "aoti" ? prge::runtimes::open_aoti_step(model_file, device)
        : runtime == "onnx"
            ? prge::runtimes::open_onnx_step(model_file, initial_b)
            : throw std::runtime_error("unknown runtime '" + runtime + "' (allowed: aoti, onnx)");
    prge::runtimes::ExportedStepResult result;
    for (int64_t s = 0; s < steps; ++s) {
      const auto start = std::chrono::steady_clock::now();
      result = step->step(ids[s], targets[s], lr, epsilon, prge::counter_rng::step_key(seed, s));
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      fmt::print("{{\"step\": {}, \"loss\": {:.9g}, \"projected_grads\": [{:.9g}], \"seconds\": {:.6f}}}\n",
                 s + 1, result.loss, fmt::join(result.projected_grads, ", "), seconds);
    }
    prge::io::TensorMap trained;
    for (size_t i = 0; i < result.lora_b.size(); ++i) trained[fmt::format("b_{}", i)] = result.lora_b[i];
    if (out.empty()) out = (dir / fmt::format("trained_b_{}.safetensors", runtime)).string();
    if (!trained.empty()) prge::io::save_safetensors(out, trained, {{"runtime", runtime}});
    std::cerr << "[prge_run_exported] " << steps << " steps through " << step->runtime()
              << "; trained B saved to " << out << "\n";
  } catch (const std::exception& e) {
    std::cerr << "prge_run_exported: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
