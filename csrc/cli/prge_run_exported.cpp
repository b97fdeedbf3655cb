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

#include <c10/util/Exception.h>

#include <charconv>
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

// --steps N: a whole number of steps >= 1 (std::stoll would take "12abc" and say only "stoll").
int64_t parse_steps(const std::string& text) {
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < 1) {
    throw std::runtime_error("--steps " + text + ": give a whole number of steps >= 1");
  }
  return value;
}

const torch::Tensor& named_tensor(const prge::io::TensorMap& tensors, const std::string& name, const fs::path& file) {
  const auto it = tensors.find(name);
  if (it == tensors.end()) throw std::runtime_error(fmt::format("{}: no tensor '{}' (`prge export` writes it)", file.string(), name));
  return it->second;
}

// --out FILE: checked before any step runs, so that a bad path does not lose the trained B.
void check_out(const std::string& out) {
  if (out.empty()) throw std::runtime_error("--out needs a file path (FILE.safetensors)");
  const fs::path path = out;
  if (fs::is_directory(path)) throw std::runtime_error(fmt::format("--out {}: is a directory; give a file path", out));
  const fs::path parent = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  if (!fs::is_directory(parent)) {
    throw std::runtime_error(fmt::format("--out {}: {} is not a directory", out, parent.string()));
  }
}

// A runtime's message on one line (ONNX Runtime's span several): the error stays one line.
std::string one_line(const std::string& text) {
  std::string line;
  for (const char c : text) {
    const char d = (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
    if (!(d == ' ' && (line.empty() || line.back() == ' '))) line += d;
  }
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return line;
}

constexpr const char* kUsage = "usage: prge_run_exported EXPORT_DIR [--steps N] [--out FILE.safetensors]";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  try {
    fs::path dir;
    int64_t steps = -1;
    std::string out;
    bool out_given = false;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        std::cout << kUsage << "\n";
        return 0;
      } else if ((arg == "--steps" || arg == "--out") && i + 1 >= argc) {
        throw std::runtime_error(arg + " needs a value");
      } else if (arg == "--steps") {
        steps = parse_steps(argv[++i]);
      } else if (arg == "--out") {
        out = argv[++i];
        out_given = true;
      } else if (arg.rfind("-", 0) != 0 && dir.empty()) {
        dir = arg;
      } else {
        throw std::runtime_error(fmt::format("unknown argument: {} ({})", arg, kUsage));
      }
    }
    if (dir.empty()) throw std::runtime_error(fmt::format("no EXPORT_DIR given ({})", kUsage));
    if (out_given) check_out(out);
    const fs::path manifest = dir / "export.json";
    if (!fs::exists(manifest)) throw std::runtime_error(manifest.string() + " not found (run `prge export` first)");
    YAML::Node root;
    try {
      root = YAML::LoadFile(manifest.string());
    } catch (const YAML::Exception& e) {
      throw std::runtime_error(fmt::format("{}: not readable JSON ({})", manifest.string(), e.what()));
    }
    if (!root.IsMap()) throw std::runtime_error(fmt::format("{}: not a JSON object", manifest.string()));
    const auto runtime = field<std::string>(root, "runtime", manifest);
    const auto lr = field<double>(root, "lr", manifest);
    const auto epsilon = field<double>(root, "epsilon", manifest);
    const auto seed = field<uint64_t>(root, "seed", manifest);
    const auto device = field<std::string>(root, "device", manifest);
    const fs::path batches_file = dir / field<std::string>(root, "batches", manifest);
    const fs::path initial_file = dir / field<std::string>(root, "initial_b", manifest);
    auto batches = prge::io::load_safetensors(batches_file.string());
    auto initial = prge::io::load_safetensors(initial_file.string());
    // one B per adapted module, in export.json's order of "adapters"
    const auto adapters = root["adapters"];
    if (!adapters || !adapters.IsSequence() || adapters.size() == 0) {
      throw std::runtime_error(fmt::format("{}: missing key 'adapters' (the adapted modules, in order)", manifest.string()));
    }
    if (initial.size() != adapters.size()) {
      throw std::runtime_error(fmt::format("{}: holds {} tensors, export.json names {} adapters (b_0 .. b_{})",
                                           initial_file.string(), initial.size(), adapters.size(), adapters.size() - 1));
    }
    std::vector<torch::Tensor> initial_b;
    for (size_t i = 0; i < adapters.size(); ++i) initial_b.push_back(named_tensor(initial, fmt::format("b_{}", i), initial_file));
    // [S, b, T]: the shape the step was exported for, which a runtime does not check
    const auto ids = named_tensor(batches, "input_ids", batches_file);
    const auto targets = named_tensor(batches, "targets", batches_file);
    const std::vector<int64_t> shape{field<int64_t>(root, "batch_size", manifest), field<int64_t>(root, "seq_len", manifest)};
    for (const auto* t : {&ids, &targets}) {
      if (t->dim() != 3 || t->size(1) != shape[0] || t->size(2) != shape[1] || t->size(0) != ids.size(0)) {
        throw std::runtime_error(fmt::format("{}: batches of shape {}, the step was exported for [steps, {}, {}] ({})",
                                             batches_file.string(), t->sizes(), shape[0], shape[1], manifest.string()));
      }
    }
    if (steps < 0) steps = ids.size(0);
    if (steps == 0) throw std::runtime_error(fmt::format("{}: holds no batches (an export of run.steps: 0)", batches_file.string()));
    if (steps > ids.size(0)) {
      throw std::runtime_error(fmt::format("{} steps asked, the batches file holds {}", steps, ids.size(0)));
    }
    const auto model_file = (dir / field<std::string>(root, "model", manifest)).string();
    if (runtime != "aoti" && runtime != "onnx") {
      throw std::runtime_error(fmt::format("{}: runtime '{}': this runner runs aoti and onnx", manifest.string(), runtime));
    }
    std::unique_ptr<prge::runtimes::ExportedStep> step;
    try {  // a damaged or foreign model file: named, with the runtime's own reason
      step = runtime == "aoti" ? prge::runtimes::open_aoti_step(model_file, device)
                               : prge::runtimes::open_onnx_step(model_file, initial_b);
    } catch (const c10::Error& e) {
      throw std::runtime_error(fmt::format("{}: not loadable by {} ({})", model_file, runtime,
                                           one_line(e.what_without_backtrace())));
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}: not loadable by {} ({})", model_file, runtime, one_line(e.what())));
    }
    prge::runtimes::ExportedStepResult result;
    for (int64_t s = 0; s < steps; ++s) {
      const auto start = std::chrono::steady_clock::now();
      try {  // the runtime's own reason, with the files whose tensors it was given
        result = step->step(ids[s], targets[s], lr, epsilon, prge::counter_rng::step_key(seed, s));
      } catch (const c10::Error& e) {
        throw std::runtime_error(fmt::format("step {} through {}: {} (its inputs: {}, {})", s + 1, model_file,
                                             one_line(e.what_without_backtrace()), batches_file.string(),
                                             initial_file.string()));
      } catch (const std::exception& e) {
        throw std::runtime_error(fmt::format("step {} through {}: {} (its inputs: {}, {})", s + 1, model_file,
                                             one_line(e.what()), batches_file.string(), initial_file.string()));
      }
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
  } catch (const c10::Error& e) {  // LibTorch's (the AOTInductor loader's): the message, not its C++ frames
    std::cerr << "prge_run_exported: error: " << one_line(e.what_without_backtrace()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "prge_run_exported: error: " << one_line(e.what()) << "\n";
    return 1;
  }
  return 0;
}
