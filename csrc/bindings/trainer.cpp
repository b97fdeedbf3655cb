#include "prge/optim/optimizer.h"
#include "prge/trainer.h"

#include <torch/extension.h>

#include <string>

namespace py = pybind11;

namespace prge::bindings {

void bind_trainer(py::module_& m) {
  py::class_<EstimatorOptions>(m, "EstimatorOptions",
                                "How a step estimates the gradient (the config's estimator section).\n\n"
                                "kind: 'prge' (RGE over LoRA-FA's B, Gao et al. 2024, arXiv 2409.15520), 'fzoo' "
                                "(one-sided Rademacher queries, g divided by the losses' standard deviation, Dang "
                                "et al. 2025), 'mezo' (every weight, Malladi et al. 2023), 'first_order' "
                                "(backpropagation to B, the reference).\n"
                                "queries: q, the directions z_i averaged per step. epsilon: ε, the perturbation "
                                "scale (units of z). difference: 'central' g_i = (L(θ+εz_i) − L(θ−εz_i)) / 2ε, "
                                "'forward' g_i = (L(θ+εz_i) − L(θ)) / ε (default: central, fzoo forward).\n"
                                "parallel: 'dual' (every ±ε point of every query in one forward: P-RGE's inner "
                                "and outer loop), 'queries' (the q queries in one forward, + and − in two), "
                                "'sequential' (one forward per point). distribution: 'gaussian' or 'rademacher' "
                                "(default: gaussian, fzoo rademacher). rng: 'auto', 'torch' (the device's "
                                "generator) or 'counter' (integer-hash noise, the same z on every device and "
                                "runtime). Raises ValueError for an unknown name or a value out of range.")
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
      .def_readonly("queries", &EstimatorOptions::queries, "q, directions per step")
      .def_readonly("epsilon", &EstimatorOptions::epsilon, "ε, the perturbation scale")
      .def_property_readonly("difference",
                             [](const EstimatorOptions& o) { return to_string(o.difference); })
      .def_property_readonly("parallel",
                             [](const EstimatorOptions& o) { return to_string(o.parallel); })
      .def_property_readonly("distribution",
                             [](const EstimatorOptions& o) { return to_string(o.distribution); })
      .def_property_readonly("rng", [](const EstimatorOptions& o) { return to_string(o.rng); });

  py::class_<OptimizerOptions>(m, "OptimizerOptions",
                                "The update θ ← θ − lr_t · chain(d) of a step's direction d (RGE's (1/q) Σ g_i z_i, "
                                "or the gradient), as the config's optimizer section.\n\n"
                                "kind: 'sgd' (momentum: heavy ball), 'adam' (betas, eps) or 'sign' (signSGD; with "
                                "momentum, signum). weight_decay: added as weight_decay · θ to d. lr: the peak "
                                "learning rate; schedule 'constant', 'linear' or 'cosine' over total_steps (trainer "
                                "steps; required by linear and cosine), after warmup_steps updates of linear warm-up "
                                "(scheduled_lr gives lr_t). "
                                "accumulate: d averaged over this many steps per update (schedules count updates). "
                                "Raises ValueError for an unknown name or a value out of range.")
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
             if (o.schedule != LrSchedule::Constant && total_steps == 0) {  // a config sets it from run.steps
               throw std::invalid_argument("schedule '" + schedule +
                                           "' decays over total_steps: give total_steps (the run's steps)");
             }
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

  py::class_<StepResult>(m, "StepResult", "What one Trainer.step did")
      .def_readonly("step", &StepResult::step, "the step's index (0-based; with the seed, it selects z)")
      .def_readonly("loss", &StepResult::loss,
                    "mean answer-token cross-entropy (nats) at θ, estimated from the step's points")
      .def_readonly("projected_grads", &StepResult::projected_grads,
                    "g_i of each query (list of q floats); empty for first_order")
      .def_readonly("losses", &StepResult::losses,
                    "the loss at every evaluated point: central [θ+εz_0..θ+εz_{q−1}, θ−εz_0..θ−εz_{q−1}], "
                    "forward [θ, θ+εz_0..θ+εz_{q−1}]")
      .def_readonly("forward_passes", &StepResult::forward_passes, "batched forward calls made")
      .def_readonly("sequences", &StepResult::sequences, "sequences pushed through the model, over every forward")
      .def_readonly("seconds", &StepResult::seconds, "wall time of the step, device work included");

  py::class_<Trainer>(m, "Trainer",
                       "Steps a model's trained tensors (LoRA-FA's B, or every weight for mezo) with an estimator and "
                       "an optimizer. seed: with the step index, it regenerates every z (MeZO's seed trick: z is "
                       "never stored). fused_step / cuda_graphs: on a CUDA device, the whole step as device work and "
                       "its replay as a CUDA graph where the estimator allows (step_path says which ran); the "
                       "results equal the plain path's. Raises ValueError when the model has nothing this "
                       "estimator can train (no adapters for prge / fzoo / first_order, a quantized base for mezo)")
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
      .def_property_readonly("cuda_graphs_captured", &Trainer::cuda_graphs_captured,
                             "CUDA graphs captured so far (one per batch shape)")
      .def_property_readonly("rng", [](const Trainer& t) { return to_string(t.rng()); },
                             "the generator z is drawn from (estimator.rng resolved for the device)")
      .def_property_readonly("step_path", &Trainer::step_path, "which code runs a step, in words")
      .def_property_readonly("share_path", &Trainer::share_path,
                             "which code runs a distributed step's share (evaluate_share), in words")
      .def("step", &Trainer::step, py::arg("batch"), py::call_guard<py::gil_scoped_release>(),
           "One training step on a TokenBatch: the estimator's losses at θ ± εz_i (P-RGE: one batched forward "
           "for dual), g_i, and the update (Gao et al. 2024, arXiv 2409.15520). Returns a StepResult. Raises ValueError for "
           "a malformed batch, or when the model's adapters were attached again since the Trainer was made")
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
           "[N, C] float32 log p(candidate) at each sequence's single answer position; candidates: [C] int64 token "
           "ids (1-D), batch: one answer position per sequence")
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
      .def_property_readonly("model", &Trainer::model_ptr, "the CausalLM it trains (shared, not a copy)")
      .def("replay_step", &Trainer::replay_step, py::arg("projected_grads"), py::call_guard<py::gil_scoped_release>(),
           "full-parameter MeZO: the update of step step_count from its projected gradients (list of q floats, "
           "StepResult.projected_grads), exactly as step() applied it in one process, then step_count + 1; "
           "MeZO's seed trick (Malladi et al. 2023, sec. 2). Raises ValueError for another estimator or q")
      .def("state_fingerprint", &Trainer::state_fingerprint, py::call_guard<py::gil_scoped_release>(),
           "16 hex digits from the bits of the trained weights (B, or every weight for MeZO) and the optimizer's "
           "state: equal for bit-identical state")
      .def("save_checkpoint", &Trainer::save_checkpoint, py::arg("path"),
           "safetensors file of the trained tensors (B), the optimizer state and 'trainer.step'")
      .def("load_checkpoint", &Trainer::load_checkpoint, py::arg("path"),
           "the trainer's state becomes the file's: trained tensors (required, by name and shape), optimizer "
           "state (absent: fresh) and 'trainer.step' (absent: 0). Raises RuntimeError naming the file and "
           "tensor, before anything is written, for a tensor missing, misshapen or non-finite");
}

}  // namespace prge::bindings
