// prge._core: thin pybind11 layer over the C++ core. One init function per area.
#include <torch/extension.h>

namespace prge::bindings {
void bind_config(pybind11::module_& m);
void bind_perturbation(pybind11::module_& m);
void bind_model(pybind11::module_& m);
void bind_trainer(pybind11::module_& m);
void bind_layer_kernels(pybind11::module_& m);
}  // namespace prge::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "prge C++ core: P-RGE / MeZO / LoRA-FA zeroth-order fine-tuning on LibTorch";
  prge::bindings::bind_config(m);
  prge::bindings::bind_perturbation(m);
  prge::bindings::bind_model(m);
  prge::bindings::bind_trainer(m);
  prge::bindings::bind_layer_kernels(m);
}
