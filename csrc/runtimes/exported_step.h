#pragma once
// A P-RGE training step exported from prge (python/prge/export/step_module.py) and run by
// an unmodified inference runtime. One call = one training step:
//   inputs  input_ids [b, T] int64, targets [b, T] int64, lr (float32 scalar),
//           epsilon (float32 scalar), step_key (int64 scalar, counter_rng::step_key)
//           [, B_0 .. B_{P-1} for runtimes without mutable state]
//   outputs loss, projected_grads [q], updated B_0 .. B_{P-1}
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace prge::runtimes {

struct ExportedStepResult {
  double loss = 0.0;
  std::vector<double> projected_grads;
  std::vector<torch::Tensor> lora_b;  // after the update, on the CPU
};

class ExportedStep {
 public:
  virtual ~ExportedStep() = default;
  virtual ExportedStepResult step(const torch::Tensor& input_ids, const torch::Tensor& targets,
                                  double lr, double epsilon, int64_t step_key) = 0;
  virtual std::string runtime() const = 0;
};

// AOTInductor package (.pt2) through LibTorch's AOTIModelPackageLoader; B lives in the
// package's mutable buffers.
std::unique_ptr<ExportedStep> open_aoti_step(const std::string& package_path,
                                             const std::string& device);

// ONNX model through ONNX Runtime's C++ API; B is fed in and read back every step.
// Throws if prge was built without ONNX Runtime.
std::unique_ptr<ExportedStep> open_onnx_step(const std::string& model_path,
                                             std::vector<torch::Tensor> initial_b);


}  // namespace prge::runtimes
