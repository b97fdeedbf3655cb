// prge._core.layer_kernels: the fused CUDA layer kernels, exposed so that the GPU checks
// (experiments/gpu_checks.py) can compare each one with the ATen ops it replaces. Empty in a
// CPU build.
#include <torch/extension.h>

#ifdef PRGE_WITH_CUDA
#include "prge/cuda/gated_low_rank.h"
#include "prge/cuda/layer_kernels.h"
#include "prge/cuda/quantized_kernels.h"
#include "prge/cuda/triton_kernels.h"
#endif

#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace prge::bindings {

void bind_layer_kernels(py::module_& m) {
  auto k = m.def_submodule("layer_kernels", "fused CUDA kernels of a Llama layer (CUDA builds only)");
#ifdef PRGE_WITH_CUDA
  k.def("rope", &cuda::rope, py::arg("x"), py::arg("cos"), py::arg("signed_sin"));
  k.def("swiglu", &cuda::swiglu, py::arg("gate_up"));
  k.def(
      "gated_low_rank",
      [](const torch::Tensor& gate_up, const torch::Tensor& ax, const torch::Tensor& b_stack, double scaling,
         const std::string& activation) {
        if (activation != "silu" && activation != "gelu_tanh") {
          throw std::invalid_argument("gated_low_rank: activation is 'silu' or 'gelu_tanh', not '" + activation + "'");
        }
        return cuda::gated_low_rank(gate_up, ax, b_stack, scaling,
                                    activation == "silu" ? Activation::Silu : Activation::GeluTanh);
      },
      py::arg("gate_up"), py::arg("ax"), py::arg("b_stack"), py::arg("scaling"), py::arg("activation") = "silu");
  k.def(
      "triton_kernels",
      [] {
        std::vector<std::tuple<std::string, int, int, int>> out;
        for (size_t i = 0; i < cuda::triton_kernels::kCompiledKernelCount; ++i) {
          const auto& kernel = cuda::triton_kernels::kCompiledKernels[i];
          out.emplace_back(kernel.key, kernel.arch, kernel.block_m, kernel.block_n);
        }
        return out;
      },
      "(key, sm, block_m, block_n) of every Triton kernel variant compiled into this build (the "
      "tile: rows and columns one program covers)");
  k.def(
      "add_rms_norm_",
      [](torch::Tensor residual, const torch::Tensor& delta, const torch::Tensor& weight, double eps) {
        return cuda::add_rms_norm_(residual, delta, weight, eps);
      },
      py::arg("residual"), py::arg("delta"), py::arg("weight"), py::arg("eps"));
  k.def(
      "dequantize",
      [](const QuantizedWeight& weight, torch::Tensor out) {
        cuda::dequantize_into(weight, out);
        return out;
      },
      py::arg("weight"), py::arg("out"));
#endif
}

}  // namespace prge::bindings
