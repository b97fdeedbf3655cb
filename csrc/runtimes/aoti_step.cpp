#include "runtimes/exported_step.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <filesystem>
#include <stdexcept>

namespace prge::runtimes {
namespace {

ExportedStepResult unpack(const std::vector<torch::Tensor>& outputs) {
  if (outputs.size() < 3) throw std::runtime_error("exported step returned fewer than 3 outputs");
  ExportedStepResult r;
  r.loss = outputs[0].to(torch::kCPU, torch::kFloat64).item<double>();
  auto grads = outputs[1].to(torch::kCPU, torch::kFloat64).contiguous();
  r.projected_grads.assign(grads.data_ptr<double>(), grads.data_ptr<double>() + grads.numel());
  for (size_t i = 2; i < outputs.size(); ++i) r.lora_b.push_back(outputs[i].to(torch::kCPU));
  return r;
}

class AotiStep final : public ExportedStep {
 public:
  AotiStep(const std::string& path, const std::string& device) : device_(device), loader_(path) {}

  ExportedStepResult step(const torch::Tensor& ids, const torch::Tensor& targets, double lr,
                          double epsilon, int64_t step_key) override {
    c10::InferenceMode guard;
    std::vector<torch::Tensor> inputs{
        ids.to(device_, torch::kInt64), targets.to(device_, torch::kInt64),
        torch::tensor(static_cast<float>(lr), torch::kFloat32).to(device_),
        torch::tensor(static_cast<float>(epsilon), torch::kFloat32).to(device_),
        torch::tensor(step_key, torch::kInt64).to(device_)};
    return unpack(loader_.run(inputs));
  }
  std::string runtime() const override { return "aoti"; }

 private:
  torch::Device device_;
  torch::inductor::AOTIModelPackageLoader loader_;
};

}  // namespace

std::unique_ptr<ExportedStep> open_aoti_step(const std::string& package_path,
                                             const std::string& device) {
  if (!std::filesystem::exists(package_path)) {
    throw std::runtime_error("AOTInductor package not found: " + package_path);
  }
  return std::make_unique<AotiStep>(package_path, device);
}

}  // namespace prge::runtimes
