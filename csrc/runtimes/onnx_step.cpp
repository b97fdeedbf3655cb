#include "runtimes/exported_step.h"

#include <filesystem>
#include <stdexcept>

#ifdef PRGE_WITH_ONNXRUNTIME
#include <onnxruntime_cxx_api.h>
#endif

namespace prge::runtimes {

#ifdef PRGE_WITH_ONNXRUNTIME
namespace {

Ort::Value wrap(const Ort::MemoryInfo& memory, torch::Tensor& t) {
  const auto shape = t.sizes().vec();
  if (t.scalar_type() == torch::kInt64) {
    return Ort::Value::CreateTensor<int64_t>(memory, t.data_ptr<int64_t>(), t.numel(), shape.data(), shape.size());
  }
  return Ort::Value::CreateTensor<float>(memory, t.data_ptr<float>(), t.numel(), shape.data(), shape.size());
}

torch::Tensor to_tensor(Ort::Value& v) {
  auto info = v.GetTensorTypeAndShapeInfo();
  auto shape = info.GetShape();
  if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
    throw std::runtime_error("ONNX step: expected float32 outputs");
  }
  return torch::from_blob(v.GetTensorMutableData<float>(), shape, torch::kFloat32).clone();
}

class OnnxStep final : public ExportedStep {
 public:
  OnnxStep(const std::string& path, std::vector<torch::Tensor> initial_b)
      : env_(ORT_LOGGING_LEVEL_WARNING, "prge"),
        session_(env_, path.c_str(), Ort::SessionOptions{}),
        memory_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)),
        b_(std::move(initial_b)) {
    Ort::AllocatorWithDefaultOptions allocator;
    for (size_t i = 0; i < session_.GetInputCount(); ++i) {
      input_names_.push_back(session_.GetInputNameAllocated(i, allocator).get());
    }
    for (size_t i = 0; i < session_.GetOutputCount(); ++i) {
      output_names_.push_back(session_.GetOutputNameAllocated(i, allocator).get());
    }
    if (input_names_.size() != 5 + b_.size() || output_names_.size() != 2 + b_.size()) {
      throw std::runtime_error("ONNX step: the model has " + std::to_string(input_names_.size()) +
                               " inputs / " + std::to_string(output_names_.size()) +
                               " outputs, expected 5 + P / 2 + P for P = " + std::to_string(b_.size()) +
                               " LoRA-FA B tensors");
    }
    for (auto& b : b_) b = b.to(torch::kCPU, torch::kFloat32).contiguous();
  }

  ExportedStepResult step(const torch::Tensor& ids, const torch::Tensor& targets, double lr,
                          double epsilon, int64_t step_key) override {
    std::vector<torch::Tensor> held{ids.to(torch::kCPU, torch::kInt64).contiguous(),
                                    targets.to(torch::kCPU, torch::kInt64).contiguous(),
                                    torch::tensor(static_cast<float>(lr), torch::kFloat32),
                                    torch::tensor(static_cast<float>(epsilon), torch::kFloat32),
                                    torch::tensor(step_key, torch::kInt64)};
    for (auto& b : b_) held.push_back(b);
    std::vector<Ort::Value> inputs;
    for (auto& t : held) inputs.push_back(wrap(memory_, t));
    std::vector<const char*> in_names, out_names;
    for (auto& n : input_names_) in_names.push_back(n.c_str());
    for (auto& n : output_names_) out_names.push_back(n.c_str());
    auto outputs = session_.Run(Ort::RunOptions{nullptr}, in_names.data(), inputs.data(), inputs.size(),
                                out_names.data(), out_names.size());
    ExportedStepResult r;
    r.loss = to_tensor(outputs[0]).item<float>();
    auto grads = to_tensor(outputs[1]).to(torch::kFloat64);
    r.projected_grads.assign(grads.data_ptr<double>(), grads.data_ptr<double>() + grads.numel());
    for (size_t i = 0; i < b_.size(); ++i) {
      b_[i] = to_tensor(outputs[2 + i]);
      r.lora_b.push_back(b_[i]);
    }
    return r;
  }
  std::string runtime() const override { return "onnx"; }

 private:
  Ort::Env env_;
  Ort::Session session_;
  Ort::MemoryInfo memory_;
  std::vector<torch::Tensor> b_;
  std::vector<std::string> input_names_, output_names_;
};

}  // namespace

std::unique_ptr<ExportedStep> open_onnx_step(const std::string& model_path,
                                             std::vector<torch::Tensor> initial_b) {
  if (!std::filesystem::exists(model_path)) throw std::runtime_error("ONNX model not found: " + model_path);
  return std::make_unique<OnnxStep>(model_path, std::move(initial_b));
}
#else
std::unique_ptr<ExportedStep> open_onnx_step(const std::string&, std::vector<torch::Tensor>) {
  throw std::runtime_error(
      "prge was built without ONNX Runtime (pip install onnxruntime, then rebuild prge)");
}
#endif

}  // namespace prge::runtimes
