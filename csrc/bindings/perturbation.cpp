#include "prge/adapter_buffer.h"
#include "prge/counter_rng.h"
#include "prge/perturbation.h"
#include "prge/perturbation_plan.h"

#include <torch/extension.h>

#ifdef PRGE_WITH_CUDA
#include "prge/cuda/adapter_kernels.h"
#endif

namespace py = pybind11;

namespace prge::bindings {

void bind_perturbation(py::module_& m) {
  m.def("derive_seed", &derive_seed, py::arg("seed"), py::arg("step"), py::arg("param_index"),
        py::arg("query"));
  m.def("counter_step_key", &counter_rng::step_key, py::arg("seed"), py::arg("step"),
        "The 32-bit step key an exported training step takes as its step seed.");
  m.def("counter_stream_key", &counter_rng::stream_key, py::arg("step_key"), py::arg("param_index"),
        py::arg("query"));
  // The counter RNG's constants, so that the exportable Python twin (prge.export.counter_rng)
  // uses these numbers instead of a copy.
  m.attr("COUNTER_RNG_MUL1") = counter_rng::kMul1;
  m.attr("COUNTER_RNG_MUL2") = counter_rng::kMul2;
  m.attr("COUNTER_RNG_MASK32") = counter_rng::kMask32;
  m.attr("COUNTER_RNG_QUERIES_PER_PARAM") = counter_rng::kQueriesPerParam;
#ifdef PRGE_WITH_CUDA
  m.attr("cuda_built") = true;
#else
  m.attr("cuda_built") = false;
#endif
  m.def(
      "counter_noise_rows",
      [](const std::vector<uint32_t>& keys, int64_t n, bool gaussian, const std::string& device,
         bool kernel) {
        const torch::Device d(device);
#ifdef PRGE_WITH_CUDA
        if (kernel && d.is_cuda()) {
          std::vector<int64_t> values(keys.begin(), keys.end());
          return cuda::counter_noise_rows(torch::tensor(values, torch::kInt64).to(d), n, gaussian);
        }
#endif
        if (kernel) throw std::invalid_argument("the counter noise kernel needs a CUDA build and device");
        return counter_rng::noise_rows(keys, n, gaussian, d);
      },
      py::arg("stream_keys"), py::arg("n"), py::arg("gaussian") = true, py::arg("device") = "cpu",
      py::arg("kernel") = false,
      "[keys, n] counter-RNG noise through ATen ops, or the CUDA kernel (kernel=True): the GPU "
      "test checks that they agree");

  py::class_<PerturbationStream>(m, "PerturbationStream",
                                  "The directions z of every step, regenerated from (seed, step, parameter, query) "
                                  "and never stored (MeZO's seed trick, Malladi et al. 2023). distribution: "
                                  "'gaussian' N(0, 1) or 'rademacher' ±1; rng: 'torch' (the device's generator "
                                  "seeded per draw) or 'counter' (integer-hash noise, the same z on every device "
                                  "and runtime). ValueError for another name")
      .def(py::init([](uint64_t seed, const std::string& distribution, const std::string& rng) {
             return PerturbationStream(seed, parse_noise_distribution(distribution),
                                       parse_noise_rng(rng));
           }),
           py::arg("seed"), py::arg("distribution") = "gaussian", py::arg("rng") = "torch")
      .def_property_readonly("seed", &PerturbationStream::seed)
      .def("noise",
           [](const PerturbationStream& s, int64_t step, int64_t param, int64_t query,
              std::vector<int64_t> shape, const std::string& device) {
             return s.noise(step, param, query, shape, torch::Device(device));
           },
           py::arg("step"), py::arg("param_index"), py::arg("query"), py::arg("shape"),
           py::arg("device") = "cpu", "z of one query of one parameter: float32 of `shape` on `device`")
      .def("noise_block",
           [](const PerturbationStream& s, int64_t step, int64_t param, int64_t queries,
              std::vector<int64_t> shape, const std::string& device) {
             return s.noise_block(step, param, queries, shape, torch::Device(device));
           },
           py::arg("step"), py::arg("param_index"), py::arg("queries"), py::arg("shape"),
           py::arg("device") = "cpu",
           "z of all q queries of one parameter in one draw: float32 [queries, *shape] on `device` (LoRA-FA's "
           "B: the q copies that feed one bmm)");

  // Plans keep a pointer to their stream: keep_alive ties the stream's lifetime to the plan.
  py::class_<PerturbationPlan>(m, "PerturbationPlan",
                                "The perturbed copies of LoRA-FA's B one batched forward evaluates (P-RGE, Gao et "
                                "al. 2024): copy c is B + copy_scale[c] · z_{copy_query[c]}, and the batch is "
                                "repeated once per copy (CausalLM.plan_losses)")
      .def_static("central_dual", &PerturbationPlan::central_dual, py::keep_alive<0, 1>(), py::arg("stream"),
                  py::arg("step"), py::arg("queries"), py::arg("epsilon"),
                  "P-RGE's inner and outer loop: [+εz_0..+εz_{q−1}, −εz_0..−εz_{q−1}], 2q copies")
      .def_static("one_sided", &PerturbationPlan::one_sided, py::keep_alive<0, 1>(), py::arg("stream"),
                  py::arg("step"), py::arg("queries"), py::arg("scale"),
                  "the outer loop alone: q copies, all at `scale` (+ε or −ε)")
      .def_static("single_query", &PerturbationPlan::single_query, py::keep_alive<0, 1>(), py::arg("stream"),
                  py::arg("step"), py::arg("queries"), py::arg("query"), py::arg("scale"),
                  "one copy, query `query` at `scale` (sequential evaluation, as ZO LoRA-FA)")
      .def_static("forward_difference", &PerturbationPlan::forward_difference, py::keep_alive<0, 1>(),
                  py::arg("stream"), py::arg("step"), py::arg("queries"), py::arg("epsilon"),
                  "[θ, θ+εz_0 .. θ+εz_{q−1}] in one forward: q + 1 copies")
      .def_readonly("copy_query", &PerturbationPlan::copy_query, "the query whose z each copy adds")
      .def_readonly("copy_scale", &PerturbationPlan::copy_scale, "the scale of each copy's z (0: θ itself)")
      .def_readonly("queries", &PerturbationPlan::queries, "q of the step")
      .def_readonly("step", &PerturbationPlan::step, "the step whose z the copies use")
      .def("copies", &PerturbationPlan::copies, "number of copies (the batch is repeated this many times)");
}

}  // namespace prge::bindings
