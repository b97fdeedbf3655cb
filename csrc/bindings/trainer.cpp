#include "prge/optim/optimizer.h"
#include "prge/trainer.h"

#include <torch/extension.h>

#include <string>

namespace py = pybind11;

namespace prge::bindings {

void bind_trainer(py::module_& m) {
  py::class_<EstimatorOptions>(m, "EstimatorOptions")
      .def(py::init([](const std::string& kind, int64_t queries, double epsilon,
                       std::optional<std::string> difference, const std::string& parallel,
                       std::optional<std::string> distribution, const std::string& rng) {
             // Unset difference / distribution take the estimator's defaults (fzoo: forward,
             // rademacher; otherwise central, gaussian).
             const bool fzoo = kind == "fzoo";
             const auto deprecated = deprecated_parallelism(parallel);
             if (!deprecated.empty() && PyErr_WarnEx(PyExc_DeprecationWarning, deprecated.c_str(), 1) != 0) {
               throw py::error_already_set();
             }
             EstimatorOptions o{parse_estimator_kind(kind), queries, epsilon,
                                parse_difference(difference.value_or(fzoo ? "forward" : "central")),
                                parse_parallelism(parallel),
                                parse_noise_distribution(distribution.value_or(fzoo ? "rademacher" : "gaussian")),
                                parse_noise_rng(rng)};
             o.validate();
             return o;
           }),
           py::arg("kind") = "prge", py::arg("queries") = 1, py::arg("epsilon") = 1e-2,
           py::arg("difference") = py::none(), py::arg("parallel") = "dual",
           py::arg("distribution") = py::none(), py::arg("rng") = "auto")
      .def_property_readonly("kind", [](const EstimatorOptions& o) { return to_string(o.kind); })
      .def_readonly("queries", &EstimatorOptions::queries)
      .def_readonly("epsilon", &EstimatorOptions::epsilon)
      .def_property_readonly("difference",
                             [](const EstimatorOptions& o) { return to_string(o.difference); })
      .def_property_readonly("parallel",
                             [](const EstimatorOptions& o) { return to_string(o.parallel); })
      .def_property_readonly("distribution",
                             [](const EstimatorOptions& o) { return to_string(o.distribution); })
      .def_property_readonly("rng", [](const EstimatorOptions& o) { return to_string(o.rng); });

  py::class_<OptimizerOptions>(m, "OptimizerOptions")
      .def(py::init([](double lr, double momentum, double weight_decay, const std::string& kind,
                       std::pair<double, double> betas, double eps, const std::string& schedule,
                       int64_t warmup_steps, int64_t total_steps, int64_t accumulate) {
             OptimizerOptions o;
             o.kind = parse_optimizer_kind(kind);
             o.lr = lr;
             o.momentum = momentum;
             o.weight_decay = weight_decay;
             o.beta1 = betas.first;
             o.beta2 = betas.second;
             o.adam_eps = eps;
             o.schedule = parse_lr_schedule(schedule);
             o.warmup_steps = warmup_steps;
             o.total_steps = total_steps;
             o.accumulate = accumulate;
             o.validate();
             return o;
           }),
           py::arg("lr") = 1e-4, py::arg("momentum") = 0.0, py::arg("weight_decay") = 0.0,
           py::arg("kind") = "sgd", py::arg("betas") = std::pair<double, double>{0.9, 0.999},
           py::arg("eps") = 1e-8, py::arg("schedule") = "constant", py::arg("warmup_steps") = 0,
           py::arg("total_steps") = 0, py::arg("accumulate") = 1)
      .def_property_readonly("kind", [](const OptimizerOptions& o) { return to_string(o.kind); })
      .def_readonly("lr", &OptimizerOptions::lr)
      .def_readonly("momentum", &OptimizerOptions::momentum)
      .def_property_readonly("betas", [](const OptimizerOptions& o) { return std::pair{o.beta1, o.beta2}; })
      .def_readonly("eps", &OptimizerOptions::adam_eps)
      .def_readonly("weight_decay", &OptimizerOptions::weight_decay)
      .def_property_readonly("schedule", [](const OptimizerOptions& o) { return to_string(o.schedule); })
      .def_readonly("warmup_steps", &OptimizerOptions::warmup_steps)
      .def_readonly("total_steps", &OptimizerOptions::total_steps)
      .def_readonly("accumulate", &OptimizerOptions::accumulate);
  m.def("scheduled_lr", &scheduled_lr, py::arg("options"), py::arg("update"),
        "lr · schedule at update t (0-based), as the optimizer applies it");

  py::class_<StepResult>(m, "StepResult")
      .def_readonly("step", &StepResult::step)
      .def_readonly("loss", &StepResult::loss)
      .def_readonly("projected_grads", &StepResult::projected_grads)
      .def_readonly("losses", &StepResult::losses)
      .def_readonly("forward_passes", &StepResult::forward_passes)
      .def_readonly("sequences", &StepResult::sequences)
      .def_readonly("seconds", &StepResult::seconds);

  py::class_<Trainer>(m, "Trainer")
      .def(py::init([](std::shared_ptr<CausalLM> model, EstimatorOptions estimator,
                       OptimizerOptions optimizer, uint64_t seed, bool fused_step, bool cuda_graphs) {
             return std::make_unique<Trainer>(std::move(model), estimator, optimizer, seed,
                                              TrainerOptions{fused_step, cuda_graphs});
           }),
           py::arg("model"), py::arg("estimator"), py::arg("optimizer"), py::arg("seed"),
           py::arg("fused_step") = true, py::arg("cuda_graphs") = true)
      .def_property_readonly("uses_fused_step", &Trainer::uses_fused_step,
                             "P-RGE dual runs as one device-side step (single forward, flat update)")
      .def_property_readonly("uses_cuda_graphs", &Trainer::uses_cuda_graphs,
                             "that step is captured and replayed as a CUDA graph")
      .def_property_readonly("cuda_graphs_captured", &Trainer::cuda_graphs_captured)
      .def_property_readonly("rng", [](const Trainer& t) { return to_string(t.rng()); },
                             "the generator z is drawn from (estimator.rng resolved for the device)")
      .def_property_readonly("step_path", &Trainer::step_path, "which code runs a step, in words")
      .def_property_readonly("share_path", &Trainer::share_path,
                             "which code runs a distributed step's share (evaluate_share), in words")
      .def("step", &Trainer::step, py::arg("batch"), py::call_guard<py::gil_scoped_release>())
      .def("evaluate_share",
           [](Trainer& t, const TokenBatch& batch, int64_t begin, int64_t end, bool center) {
             PointLosses points;
             {
               py::gil_scoped_release release;
               points = t.evaluate_share(batch, QueryRange{begin, end, center});
             }
             return py::make_tuple(points.losses, points.forward_passes, points.sequences);
           },
           py::arg("batch"), py::arg("query_begin"), py::arg("query_end"), py::arg("center") = true,
           "(losses, forward passes, sequences) of the points of queries [query_begin, query_end) "
           "on this batch: central [+εz.., −εz..], forward [θ, +εz..] (θ only with center); "
           "nothing is updated")
      .def("apply_losses", &Trainer::apply_losses, py::arg("losses"), py::call_guard<py::gil_scoped_release>(),
           "The estimate and the update from the losses of every point of the step (all queries, "
           "whole batch), in evaluate_share's order")
      .def("score",
           [](const Trainer& t, const TokenBatch& batch) {
             SequenceScores s;
             {
               py::gil_scoped_release release;
               s = t.score(batch);
             }
             return py::make_tuple(s.nll_sum, s.count);
           },
           py::arg("batch"), "(-sum log p(answer), answer token count) per sequence")
      .def("answer_logprobs", &Trainer::answer_logprobs, py::arg("batch"), py::arg("candidates"),
           py::call_guard<py::gil_scoped_release>(),
           "[N, C] log p(candidate) at each sequence's single answer position")
      .def_property(
          "step_count", &Trainer::step_count,
          [](Trainer& t, const py::object& step) {
            // bool is an int to Python (and to pybind11's int64 cast): True would set step 1.
            if (py::isinstance<py::bool_>(step) || !py::isinstance<py::int_>(step)) {
              throw py::type_error("step_count: an int (0 to 2^48), not " +
                                   py::type::of(step).attr("__name__").cast<std::string>());
            }
            const py::int_ count(step);
            if (count < py::int_(0) || count > py::int_(kMaxStepCount)) {  // past int64 too: no cast
              throw py::value_error("step_count " + py::str(step).cast<std::string>() + ": a step count is 0 to " +
                                    std::to_string(kMaxStepCount));
            }
            t.set_step_count(count.cast<int64_t>());
          },
          "steps taken (the step index that seeds the next step's z): an int, 0 to 2^48")
      .def_property_readonly("model", &Trainer::model_ptr)
      .def("save_checkpoint", &Trainer::save_checkpoint, py::arg("path"),
           "safetensors file of the trained tensors (B), the optimizer state and 'trainer.step'")
      .def("load_checkpoint", &Trainer::load_checkpoint, py::arg("path"),
           "the trainer's state becomes the file's: trained tensors (required, by name and shape), optimizer "
           "state (absent: fresh) and 'trainer.step' (absent: 0). Raises RuntimeError naming the file and "
           "tensor, before anything is written, for a tensor missing, misshapen or non-finite");
}

}  // namespace prge::bindings
