// prge._core.layer_kernels: the fused CUDA layer kernels, exposed so that the GPU checks
// (experiments/gpu_checks.py) can compare each one with the ATen ops it replaces. Empty in a
// CPU build.
#include <torch/extension.h>

#ifdef PRGE_WITH_CUDA
#include "prge/cuda/layer_kernels.h"
#include "prge/cuda/quantized_kernels.h"
#endif

namespace py = pybind11;

namespace prge::bindings {

void bind_layer_kernels(py::module_& m) {
  auto k = m.def_submodule("layer_kernels", "fused CUDA kernels of a Llama layer (CUDA builds only)");
#ifdef PRGE_WITH_CUDA
  k.def("rope", &cuda::rope, py::arg("x"), py::arg("cos"), py::arg("signed_sin"));
  k.def("swiglu", &cuda::swiglu, py::arg("gate_up"));
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
