"""GPU checks of prge's CUDA fast paths against the plain paths they replace (run on the GPU
machine; CI has no GPU). Each line prints PASS/FAIL with the measured difference.

1. counter-RNG noise kernel vs the ATen integer ops on the same device: same integers, and
   float32 Box-Muller through the same CUDA math library, so bit-identical;
2. fused step (copy-stack kernel, direction kernel, answer-layout losses) vs the plain path
   (ATen noise per matrix, host-side estimate) for every copy layout (dual, queries, forward
   difference, Rademacher), 5 steps, fp32: close (summation order); also q = 12 and q = 720 at
   rank 1, the kernels' other work splits;
3. CUDA-graph replay vs the same fused step uncaptured, fp32 and bf16, 6 steps (steps 1-2
   warm up and capture): bit-identical losses and B;
4. the torch RNG on CUDA falls back to the uncaptured fused step, and still trains;
5. full-parameter MeZO in bf16 with lr = 0: weights bit-identical after 20 steps; MeZO's device
   step (kernel-drawn perturbed weights and directions, CUDA graphs) == uncaptured, close to
   the plain ATen path, and its update == w - lr g z with the ATen counter RNG's z;
6. each fused layer kernel (RoPE, SwiGLU, residual add + RMSNorm) vs the ATen ops it
   replaces, on random tensors in fp32 / bf16 / fp16, and the logits of a whole forward
   with the kernels on and off (the kernels round where ATen rounds, apart from RMSNorm's
   single rounding of x * rstd * w and ATen's possible multiply-add contraction);
   the Triton gated activation with gate/up's LoRA-FA term (compiled ahead of time) vs ATen's
   term GEMM and activation on awkward shapes, and in a bf16 P-RGE step against the GEMM path
   (both measured against float32), graphed == uncaptured;
7. every P-RGE mode (dual, single, none) runs the device step, graphed == uncaptured;
8. the distributed step's halves (evaluate_share, captured per share, + apply_losses) vs
   trainer.step: the whole range on one trainer bit-identical (then whole steps on that same
   trainer, whose graphs are kept apart from the shares'); two shares on two trainers
   (two ranks, losses gathered by hand) equal to rounding (their forwards batch fewer copies).

    python experiments/gpu_checks.py [--out experiments/results/gpu_checks.txt] [--start-at CHECK]
"""
from __future__ import annotations

import argparse
import inspect
import sys

import torch

import prge
from prge.models import shape_config
from prge.speed import random_batch

LINES: list[str] = []


def report(name: str, ok: bool, detail: str) -> None:
    line = f"{'PASS' if ok else 'FAIL'}  {name}: {detail}"
    LINES.append(line)
    print(line, flush=True)


def check_noise_kernel() -> None:
    keys = [prge.counter_stream_key(prge.counter_step_key(7, s), p, i) for s in range(3) for p in range(4) for i in range(3)]
    for gaussian in (True, False):
        aten = prge.counter_noise_rows(keys, 40_000, gaussian, "cuda", kernel=False)
        kernel = prge.counter_noise_rows(keys, 40_000, gaussian, "cuda", kernel=True)
        cpu = prge.counter_noise_rows(keys, 40_000, gaussian, "cpu", kernel=False)
        diff = (aten - kernel).abs().max().item()
        report(f"counter noise kernel == ATen on CUDA ({'gaussian' if gaussian else 'rademacher'})",
               torch.equal(aten, kernel), f"max |diff| {diff:.3g} over {aten.numel()} values; "
               f"vs CPU ATen max |diff| {(cpu - kernel.cpu()).abs().max().item():.3g}")


def trainer(config, dtype, queries, *, fused, graphs, rng="counter", seed=5, parallel="dual", difference="central",
            distribution="gaussian", adapter=None, quantize="none", gated_kernel=True):
    model = prge.CausalLM.random(config, 0, "cuda", dtype, quantize)
    model.gated_low_rank_kernel = gated_kernel
    model.attach_adapters(adapter or prge.AdapterOptions(rank=16, alpha=32, init_seed=3))
    g = torch.Generator().manual_seed(1)
    for a in model.adapters():  # a trained point, so B + eps z is not just eps z
        a["lora_b"].copy_(0.01 * torch.randn(a["lora_b"].shape, generator=g))
    return trainer_for(model, queries, fused=fused, graphs=graphs, rng=rng, seed=seed, parallel=parallel,
                       difference=difference, distribution=distribution)


def trainer_for(model, queries, *, fused=True, graphs=True, rng="counter", seed=5, parallel="dual",
                difference="central", distribution="gaussian"):
    """A P-RGE trainer for an existing model (also after a change that refuses older trainers)."""
    options = prge.EstimatorOptions("prge", queries, 1e-2, difference, parallel, rng=rng, distribution=distribution)
    return prge.Trainer(model, options, prge.OptimizerOptions(lr=1e-3, momentum=0.9), seed, fused_step=fused,
                        cuda_graphs=graphs), model


def run(t, model, config, steps, batch_size, seq_len):
    results = [t.step(random_batch(config.vocab_size, batch_size, seq_len - (s % 2) * 40, seed=s))
               for s in range(steps)]
    return results, torch.cat([a["lora_b"].flatten() for a in model.adapters()]).cpu()


def compare_fused_with_plain(config, label, queries, steps, batch_size, adapter=None, **kw) -> None:
    """The fused step (CUDA kernels) against the plain path (ATen noise per matrix, host-side
    estimate), fp32, sequences of 64 tokens: close to rounding (summation order differs)."""
    fused, fm = trainer(config, "float32", queries, fused=True, graphs=False, adapter=adapter, **kw)
    plain, pm = trainer(config, "float32", queries, fused=False, graphs=False, adapter=adapter, **kw)
    fr, fb = run(fused, fm, config, steps, batch_size, 64)
    pr, pb = run(plain, pm, config, steps, batch_size, 64)
    loss_diff = max(abs(a - b) for f, p in zip(fr, pr) for a, b in zip(f.losses, p.losses))
    b_diff = (fb - pb).abs().max().item()
    report(f"fused step (CUDA kernels) vs plain path, {label}, fp32, {steps} steps",
           loss_diff < 1e-4 and b_diff < 1e-4 * max(1.0, pb.abs().max().item()),
           f"max loss diff {loss_diff:.3g}, max B diff {b_diff:.3g} (max |B| {pb.abs().max().item():.3g})")


def check_fused_vs_plain(config) -> None:
    # Every copy layout the stack kernel meets: ±eps copies sharing a query's z (dual), one
    # copy per query (queries), θ beside the +eps copies (forward difference), Rademacher z.
    for parallel, difference, distribution in (("dual", "central", "gaussian"), ("queries", "central", "gaussian"),
                                               ("dual", "forward", "gaussian"), ("dual", "central", "rademacher")):
        compare_fused_with_plain(config, f"{parallel} {difference} {distribution}", 4, 5, 4,
                                 parallel=parallel, difference=difference, distribution=distribution)


def check_query_counts(config) -> None:
    """The kernels' work splits that q = 4 does not reach: q = 12 fills one group of 8 noise rows
    per stack thread and part of the next; q = 720 at rank 1 gives the direction kernel many
    queries over short segments (its stream-key table: segments x queries)."""
    for queries, rank in ((12, 16), (720, 1)):
        compare_fused_with_plain(config, f"dual q={queries} rank {rank}", queries, 2, 1,
                                 adapter=prge.AdapterOptions(rank=rank, alpha=2 * rank, init_seed=3))


def check_graphs(config, dtype, parallel="dual", queries=4, quantize="none") -> None:
    graphed, gm = trainer(config, dtype, queries, fused=True, graphs=True, parallel=parallel, quantize=quantize)
    eager, em = trainer(config, dtype, queries, fused=True, graphs=False, parallel=parallel, quantize=quantize)
    assert graphed.uses_cuda_graphs and not eager.uses_cuda_graphs
    gr, gb = run(graphed, gm, config, 6, 4, 64)
    er, eb = run(eager, em, config, 6, 4, 64)
    same_losses = all(g.losses == e.losses for g, e in zip(gr, er))
    base = "" if quantize == "none" else f", {quantize} base"
    report(f"CUDA graph replay == uncaptured fused step, {parallel} q={queries}, {dtype}{base}, 6 steps",
           same_losses and torch.equal(gb, eb) and graphed.cuda_graphs_captured == 2,
           f"losses identical: {same_losses}, B identical: {torch.equal(gb, eb)}, "
           f"graphs captured: {graphed.cuda_graphs_captured} (two batch shapes)")


def check_split_step(config, dtype="bfloat16", queries=4) -> None:
    whole, wm = trainer(config, dtype, queries, fused=True, graphs=True)
    split, sm = trainer(config, dtype, queries, fused=True, graphs=True)
    ranks = [trainer(config, dtype, queries, fused=True, graphs=True) for _ in range(2)]
    same, worst = True, 0.0
    for s in range(6):
        batch = random_batch(config.vocab_size, 4, 64 - (s % 2) * 40, seed=s)
        want = whole.step(batch)
        if s < 4:  # the halves, then whole steps on the same trainer (separate graph sets)
            losses, _, _ = split.evaluate_share(batch, 0, queries)
            got = split.apply_losses(losses)
        else:
            got = split.step(batch)
        same &= list(got.losses) == list(want.losses)
        half = queries // 2  # rank 0: queries [0, half), rank 1: [half, q); central order [+.., -..]
        parts = [t.evaluate_share(batch, b, e)[0] for (t, _), (b, e) in zip(ranks, [(0, half), (half, queries)])]
        gathered = parts[0][:half] + parts[1][:half] + parts[0][half:] + parts[1][half:]
        shared = [t.apply_losses(gathered) for t, _ in ranks]
        worst = max(worst, max(abs(a - b) / abs(b) for a, b in zip(shared[0].losses, want.losses)))
    weights = lambda m: torch.cat([a["lora_b"].flatten() for a in m.adapters()]).cpu()  # noqa: E731
    wb, sb, r0, r1 = weights(wm), weights(sm), weights(ranks[0][1]), weights(ranks[1][1])
    b_rel = ((r0 - wb).abs().max() / wb.abs().max()).item()
    report(f"distributed step halves vs trainer.step, dual q={queries}, {dtype}, graphs, 6 steps",
           same and torch.equal(sb, wb) and torch.equal(r0, r1) and worst < 1e-2 and b_rel < 1e-2,
           f"whole range: losses identical {same}, B identical {torch.equal(sb, wb)}; two shares: ranks' B "
           f"identical {torch.equal(r0, r1)}, max relative loss diff {worst:.3g}, max |B diff| / max |B| {b_rel:.3g} "
           f"(graphs captured per rank: {ranks[0][0].cuda_graphs_captured})")


def check_default_path(config) -> None:
    """What a user gets without naming estimator.rng: the CUDA-graphed fused step."""
    model = prge.CausalLM.random(config, 0, "cuda", "bfloat16")
    model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32))
    t = prge.Trainer(model, prge.EstimatorOptions("prge", 4), prge.OptimizerOptions(lr=1e-3), 0)
    results, _ = run(t, model, config, 3, 4, 64)
    mezo = prge.Trainer(prge.CausalLM.random(config, 0, "cuda", "bfloat16"), prge.EstimatorOptions("mezo", 1, parallel="sequential"),
                        prge.OptimizerOptions(lr=0.0), 0)
    report("default estimator options on CUDA: rng auto -> counter, CUDA-graphed device step (P-RGE and MeZO)",
           t.rng == "counter" and t.uses_cuda_graphs and t.cuda_graphs_captured >= 1 and mezo.rng == "counter"
           and mezo.uses_cuda_graphs,
           f"rng {t.rng}, step path: {t.step_path}, graphs captured {t.cuda_graphs_captured}; MeZO rng {mezo.rng}, "
           f"step path: {mezo.step_path}")


def check_patterned_adapters(config) -> None:
    """PEFT rank / alpha patterns and rsLoRA: the parts of a fused projection with their own
    ranks (cumulative offsets in the block-diagonal stack) and scalings (one stack per part)."""
    adapter = prge.AdapterOptions(rank=16, alpha=32, init_seed=3, use_rslora=True,
                                  rank_pattern={"k_proj": 8, "layers.1.mlp.up_proj": 4}, alpha_pattern={"q_proj": 8})
    kw = dict(adapter=adapter)
    fused, fm = trainer(config, "float32", 4, fused=True, graphs=False, **kw)
    plain, pm = trainer(config, "float32", 4, fused=False, graphs=False, **kw)
    graphed, gm = trainer(config, "float32", 4, fused=True, graphs=True, **kw)
    fr, fb = run(fused, fm, config, 5, 4, 64)
    pr, pb = run(plain, pm, config, 5, 4, 64)
    gr, gb = run(graphed, gm, config, 5, 4, 64)
    loss_diff = max(abs(a - b) for f, p in zip(fr, pr) for a, b in zip(f.losses, p.losses))
    b_diff = (fb - pb).abs().max().item()
    report("patterned adapters (rsLoRA, rank / alpha patterns): fused vs plain close, graphed == uncaptured",
           loss_diff < 1e-4 and b_diff < 1e-4 * max(1.0, pb.abs().max().item()) and torch.equal(gb, fb)
           and all(g.losses == f.losses for g, f in zip(gr, fr)),
           f"max loss diff {loss_diff:.3g}, max B diff {b_diff:.3g}, graphed B identical {torch.equal(gb, fb)}")


def check_torch_rng_fallback(config) -> None:
    t, m = trainer(config, "float32", 2, fused=True, graphs=True, rng="torch")
    results, b = run(t, m, config, 3, 4, 64)
    finite = all(torch.isfinite(torch.tensor(r.losses)).all() for r in results)
    report("torch RNG on CUDA: uncaptured fused step (no graphs)",
           not t.uses_cuda_graphs and t.uses_fused_step and finite and b.abs().sum() > 0,
           f"uses_cuda_graphs={t.uses_cuda_graphs}, finite losses: {finite}")


def check_mezo_no_drift(config) -> None:
    model = prge.CausalLM.random(config, 0, "cuda", "bfloat16")
    before = [t.clone() for _, t in model.full_parameters()]
    t = prge.Trainer(model, prge.EstimatorOptions("mezo", 1, 1e-3, "central", "sequential"),
                     prge.OptimizerOptions(lr=0.0), 3)
    grads = [g for s in range(20) for g in t.step(random_batch(config.vocab_size, 4, 64, seed=s)).projected_grads]
    same = all(torch.equal(a, b) for a, (_, b) in zip(before, model.full_parameters()))
    report("MeZO bf16, lr = 0, 20 steps: weights bit-identical", same and all(g != 0 for g in grads),
           f"identical: {same}, non-zero projected gradients: {all(g != 0 for g in grads)}")


def mezo_trainer(config, *, fused, graphs, kernels=True, difference="central", queries=1, lr=1e-5, momentum=0.0):
    model = prge.CausalLM.random(config, 0, "cuda", "float32")
    model.layer_kernels = kernels
    options = prge.EstimatorOptions("mezo", queries, 1e-3, difference, "sequential", rng="counter")
    return prge.Trainer(model, options, prge.OptimizerOptions(lr=lr, momentum=momentum), 5, fused_step=fused,
                        cuda_graphs=graphs), model


def all_weights(model):
    return torch.cat([t.flatten() for _, t in model.full_parameters()]).cpu()


def check_mezo_device_step(config) -> None:
    """Full-parameter MeZO's device step (each perturbed weight and each weight's direction drawn
    by one kernel, captured as a CUDA graph) against the same step uncaptured (bit-identical) and
    against the plain path (ATen counter noise per weight, layer kernels off; close: the forwards
    round differently), fp32, 5 steps of alternating lengths; and one update against
    w - lr g z with z from the ATen counter RNG."""
    for difference, queries in (("central", 1), ("central", 3), ("forward", 2)):
        kw = dict(difference=difference, queries=queries, momentum=0.9)
        graphed, gm = mezo_trainer(config, fused=True, graphs=True, **kw)
        eager, em = mezo_trainer(config, fused=True, graphs=False, **kw)
        plain, pm = mezo_trainer(config, fused=False, graphs=False, kernels=False, **kw)
        start = all_weights(pm)
        paths = (graphed.uses_cuda_graphs, eager.uses_fused_step and not eager.uses_cuda_graphs,
                 not plain.uses_fused_step)
        batches = [random_batch(config.vocab_size, 4, 64 - (s % 2) * 40, seed=s) for s in range(5)]
        gr, er, pr = ([t.step(b) for b in batches] for t in (graphed, eager, plain))
        gw, ew, pw = all_weights(gm), all_weights(em), all_weights(pm)
        same = all(g.losses == e.losses for g, e in zip(gr, er)) and torch.equal(gw, ew)
        counts = all((g.forward_passes, g.sequences) == (p.forward_passes, p.sequences) for g, p in zip(gr, pr))
        loss_diff = max(abs(a - b) for e, p in zip(er, pr) for a, b in zip(e.losses, p.losses))
        first_diff = max(abs(a - b) for a, b in zip(er[0].losses, pr[0].losses))
        moved = (pw - start).abs().max().item()
        w_diff = (ew - pw).abs().max().item()
        report(f"MeZO device step: graphed == uncaptured, vs plain path, {difference} q={queries}, fp32, 5 steps",
               all(paths) and same and counts and graphed.cuda_graphs_captured == 2 and loss_diff < 1e-4
               and w_diff < 0.05 * moved,
               f"paths {paths}, graphed identical: {same}, graphs {graphed.cuda_graphs_captured}; forwards and sequences "
               f"as the plain path's: {counts} ({gr[0].forward_passes}, {gr[0].sequences}); vs plain: max loss "
               f"diff {loss_diff:.3g} (step 1: {first_diff:.3g}), max weight diff {w_diff:.3g} (weights moved up to "
               f"{moved:.3g})")
    lr = 1e-2
    stream = prge.PerturbationStream(5, "gaussian", "counter")
    for queries in (1, 3):
        t, model = mezo_trainer(config, fused=True, graphs=True, lr=lr, queries=queries)
        before = [w.clone() for _, w in model.full_parameters()]
        g = t.step(random_batch(config.vocab_size, 4, 64, seed=0)).projected_grads
        worst = 0.0
        for index, ((_, w), w0) in enumerate(zip(model.full_parameters(), before)):
            # (1/q) sum_i g_i z_i from the ATen counter ops, one z_i at a time
            direction = sum(gi * stream.noise(0, index, i, list(w.shape), "cuda") for i, gi in enumerate(g)) / queries
            worst = max(worst, ((w - (w0 - lr * direction)).abs().max() / (lr * direction.abs().max())).item())
        report(f"MeZO device step's update == w - lr (1/q) sum g_i z_i, z from the ATen counter RNG, q={queries} "
               "(relative to the largest step)", all(x != 0 for x in g) and worst < 1e-5,
               f"g {[round(x, 4) for x in g]}, worst relative diff {worst:.3g} over {len(before)} weights")


def check_mezo_replay(config) -> None:
    """run.checkpoint_format: updates on the GPU: Trainer.replay_step from each step's projected
    gradients, on a fresh trainer over the same base weights, gives the weights the steps gave, bit
    for bit, for the graphed device step (fp32 and bf16, momentum) and the uncaptured one."""
    for dtype, graphs in (("float32", True), ("bfloat16", True), ("bfloat16", False)):
        def fresh():
            model = prge.CausalLM.random(config, 0, "cuda", dtype)
            options = prge.EstimatorOptions("mezo", 2, 1e-3, "central", "sequential", rng="counter")
            return prge.Trainer(model, options, prge.OptimizerOptions(lr=1e-5, momentum=0.9), 5,
                                cuda_graphs=graphs), model
        stepped, sm = fresh()
        replayed, rm = fresh()
        base = replayed.state_fingerprint()
        grads = [stepped.step(random_batch(config.vocab_size, 4, 64 - (s % 2) * 40, seed=s)).projected_grads
                 for s in range(6)]
        for g in grads:
            replayed.replay_step(g)
        same = all(torch.equal(a, b) for (_, a), (_, b) in zip(sm.full_parameters(), rm.full_parameters()))
        fingerprints = (stepped.state_fingerprint(), replayed.state_fingerprint())
        report(f"MeZO replay_step == the steps' updates, {dtype}, graphs {graphs}, 6 steps: weights bit-identical",
               stepped.uses_fused_step and stepped.uses_cuda_graphs == graphs and same
               and fingerprints[0] == fingerprints[1] != base,
               f"step path: {stepped.step_path}; identical: {same}; fingerprints {fingerprints} (base {base})")


def check_first_order_device_step(config) -> None:
    """First order (backpropagation to every B, then the update) as one CUDA graph against the
    same device step uncaptured (bit-identical) and against the plain path (its unpadded batch,
    host loss; close: padding to 32 tokens changes the GEMM shapes), fp32, 5 steps of two
    lengths."""
    def first_order(fused, graphs):
        model = prge.CausalLM.random(config, 0, "cuda", "float32")
        model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32, init_seed=3))
        return prge.Trainer(model, prge.EstimatorOptions("first_order", 1), prge.OptimizerOptions(lr=1e-2, momentum=0.9),
                            5, fused_step=fused, cuda_graphs=graphs), model

    (graphed, gm), (eager, em), (plain, pm) = first_order(True, True), first_order(True, False), first_order(False, False)
    paths = (graphed.uses_cuda_graphs, eager.uses_fused_step and not eager.uses_cuda_graphs, not plain.uses_fused_step)
    gr, gb = run(graphed, gm, config, 5, 4, 64)
    er, eb = run(eager, em, config, 5, 4, 64)
    pr, pb = run(plain, pm, config, 5, 4, 64)
    same = all(g.losses == e.losses for g, e in zip(gr, er)) and torch.equal(gb, eb)
    counts = all((g.forward_passes, g.sequences) == (p.forward_passes, p.sequences) for g, p in zip(gr, pr))
    loss_diff = max(abs(e.loss - p.loss) for e, p in zip(er, pr))
    b_diff = (eb - pb).abs().max().item()
    report("first-order device step: graphed == uncaptured, vs plain path, fp32, 5 steps",
           all(paths) and same and counts and graphed.cuda_graphs_captured == 2 and loss_diff < 1e-4
           and b_diff < 1e-4 * max(1.0, pb.abs().max().item()),
           f"paths {paths}, graphed identical: {same}, graphs {graphed.cuda_graphs_captured}; forwards and sequences as "
           f"the plain path's: {counts}; vs plain: max loss "
           f"diff {loss_diff:.3g}, max B diff {b_diff:.3g} (max |B| {pb.abs().max().item():.3g})")


TASK_LIKE_LENGTHS = (40, 64, 100, 150)


def task_like_batch(vocab: int, step: int) -> prge.TokenBatch:
    """A batch as multiple-choice tasks (ARC) make them: a length drawn from four up to 150
    tokens, each of 8 sequences' answers 1-19 tokens long and ending 0-7 tokens before the end, so
    that the answer count, and with it the layout's capacity bucket, changes from batch to batch;
    shapes come in no fixed order, so new ones are first met (eagerly) after others were captured,
    as in the paper protocol's ARC runs (there: 3 shapes met in steps 1-3, captures at steps 4, 9
    and 11, new shapes at 13, 18 and 19, replays between)."""
    g = torch.Generator().manual_seed(100 + step)
    n = 8
    t = TASK_LIKE_LENGTHS[int(torch.randint(0, len(TASK_LIKE_LENGTHS), (1,), generator=g))]
    ids = torch.randint(1, vocab, (n, t), generator=g)
    targets = torch.full((n, t), -100, dtype=torch.int64)
    for i in range(n):
        answer = int(torch.randint(1, 20, (1,), generator=g))
        end = t - int(torch.randint(0, 8, (1,), generator=g))
        targets[i, end - answer - 1:end - 1] = ids[i, end - answer:end]
    return prge.TokenBatch(ids, targets)


def device_step_setup(kind: str, model) -> tuple:
    """The many-shapes checks' estimator options and learning rate for one device step (first
    order, P-RGE q = 1 as the paper's ZO LoRA-FA runs it, MeZO), LoRA-FA adapters attached to
    `model` unless MeZO."""
    if kind != "mezo":
        model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32, init_seed=3))
    options = {"first_order": prge.EstimatorOptions("first_order", 1),
               "prge": prge.EstimatorOptions("prge", 1, 1e-2, "central", "sequential", rng="counter"),
               "mezo": prge.EstimatorOptions("mezo", 1, 1e-3, "central", "sequential", rng="counter")}[kind]
    return options, {"first_order": 5e-3, "prge": 1e-3, "mezo": 1e-5}[kind]


def check_device_steps_many_shapes(config, steps: int = 48) -> None:
    """Every device step over task-like batches of several lengths and answer buckets in no fixed
    order, so that graphs are captured, replayed with new contents and met anew between each
    other (the paper protocol's ARC runs diverged on the GPU only: replays read lr_t from a freed
    tensor, NOTES.md sessions 14-15): graphed close to uncaptured (within 1e-5 relative at every
    step: the uncaptured step sizes its answer layout exactly, a graph's to a power of two, so sums
    differ in the last bits), and both close to the plain path on the GPU and on the CPU (fp32).
    Prints the first step where the paths part, and the batch shapes (T padded to 32 / answer
    capacity) in order."""
    import tempfile

    import transformers

    # One set of weights on both devices (CausalLM.random draws other values on CUDA than on the CPU).
    directory = tempfile.mkdtemp()
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim, rms_norm_eps=config.rms_norm_eps,
        tie_word_embeddings=config.tie_word_embeddings, bos_token_id=1, eos_token_id=2)).save_pretrained(directory)

    def make(kind, device, fused, graphs):
        model = prge.CausalLM.from_pretrained(directory, device, "float32")
        options, lr = device_step_setup(kind, model)
        return prge.Trainer(model, options, prge.OptimizerOptions(lr=lr), 5, fused_step=fused, cuda_graphs=graphs)

    def part(a, b):
        return next((s for s, (x, y) in enumerate(zip(a, b)) if abs(x - y) > 1e-4 * abs(y)), None)

    def shape(batch):  # as given; the graphs' own buckets are cuda/step_graphs.cpp's (the count is reported)
        return f"{batch.input_ids.shape[1]}/{int((batch.targets != -100).sum())}"

    print("task-like batches in order (length / answer tokens): " + " ".join(
        shape(task_like_batch(config.vocab_size, s)) for s in range(steps)), flush=True)
    for kind in ("first_order", "prge", "mezo"):
        trainers = [make(kind, "cuda", True, True), make(kind, "cuda", True, False), make(kind, "cuda", False, False),
                    make(kind, "cpu", False, False)]
        losses = [[t.step(task_like_batch(config.vocab_size, s)).loss for s in range(steps)] for t in trainers]
        graphed, eager, plain, cpu = losses
        worst_graphed = max(abs(g - e) / abs(e) for g, e in zip(graphed, eager))
        worst = max(abs(e - p) / abs(p) for e, p in zip(eager, plain))
        worst_cpu = max(abs(p - c) / abs(c) for p, c in zip(plain, cpu))
        report(f"{kind} device step, {steps} task-like batches (lengths and answer buckets in no fixed order): graphed vs "
               "uncaptured, vs plain path on the GPU and on the CPU, fp32",
               trainers[0].uses_cuda_graphs and worst_graphed <= 1e-5 and worst < 1e-3 and worst_cpu < 1e-3,
               f"graphs {trainers[0].cuda_graphs_captured}, graphed vs uncaptured: worst relative loss diff "
               f"{worst_graphed:.3g} (first apart {part(graphed, eager)}); uncaptured vs GPU plain: worst relative loss diff {worst:.3g} (first apart "
               f"{part(eager, plain)}); GPU plain vs CPU plain: {worst_cpu:.3g} (first apart {part(plain, cpu)}); "
               f"losses graphed / GPU plain / CPU at steps 0, {steps // 2}, {steps - 1}: "
               + ", ".join(f"{graphed[i]:.5g}/{plain[i]:.5g}/{cpu[i]:.5g}" for i in (0, steps // 2, steps - 1)))


def check_replays_keep_weights_at_lr_zero(config, steps: int = 24) -> None:
    """At lr 0 no step may change what it trains, however its graphs are met: every device step
    (first order, P-RGE, MeZO) over the task-like batches of check_device_steps_many_shapes, the
    trained tensors compared with their values before the first step after every step. Before
    session 15's fix a graph replayed after other captures read lr_t from a freed tensor and
    changed B (by up to 0.1 in P-RGE, and to 1e20 in first order) at lr 0."""
    for kind in ("first_order", "prge", "mezo"):
        model = prge.CausalLM.random(config, seed=4, device="cuda")
        options, _ = device_step_setup(kind, model)
        trainer = prge.Trainer(model, options, prge.OptimizerOptions(lr=0.0), 5, fused_step=True, cuda_graphs=True)
        trained = ([a["lora_b"] for a in model.adapters()] if kind != "mezo"
                   else [value for _, value in model.full_parameters()])
        before = [t.clone() for t in trained]
        moved = []
        for s in range(steps):
            trainer.step(task_like_batch(config.vocab_size, s))
            change = max(float((t - b).abs().max()) for t, b in zip(trained, before))
            if change != 0.0:
                moved.append((s, change))
        report(f"{kind} device step at lr 0, {steps} task-like batches in CUDA graphs: trained tensors never change",
               trainer.uses_cuda_graphs and trainer.cuda_graphs_captured >= 3 and not moved,
               f"graphs {trainer.cuda_graphs_captured}; steps that changed them (step, max |change|): {moved[:4] or 'none'}")


def aten_rope(x, cos, signed_sin):
    """RoPE as the layer kernel computes it (rotate-half with the sign folded into sin), in ATen."""
    half = x.shape[-1] // 2
    return torch.addcmul(x * cos, torch.cat([x[..., half:], x[..., :half]], -1), signed_sin)


def aten_swiglu(gate_up):
    """silu(gate) * up on a [..., 2f] gate | up tensor, in ATen."""
    f = gate_up.shape[-1] // 2
    return torch.nn.functional.silu(gate_up[..., :f]) * gate_up[..., f:]


def check_kernels_vs_aten() -> None:
    kernels = prge._core.layer_kernels
    g = torch.Generator(device="cuda").manual_seed(0)
    for dtype, tolerance in ((torch.float32, 1e-6), (torch.bfloat16, 1e-2), (torch.float16, 1e-3)):
        def randn(*shape):
            return torch.randn(*shape, generator=g, device="cuda").to(dtype)
        # RoPE on the model's [n, t, h, hd] -> [n, h, t, hd] transposed view
        x = randn(3, 40, 5, 64).transpose(1, 2)
        cos, sin = randn(40, 64), randn(40, 64)
        aten = aten_rope(x, cos, sin)
        rope = kernels.rope(x, cos, sin)
        gate_up = randn(3, 40, 2 * 96)
        swiglu = kernels.swiglu(gate_up)
        residual, delta, weight = randn(3, 40, 576), randn(3, 40, 576), randn(576)
        aten_x = residual + delta
        aten_norm = torch.rms_norm(aten_x, (576,), weight, 1e-5)
        norm = kernels.add_rms_norm_(residual, delta, weight, 1e-5)
        # a delta whose rows lie 592 apart: a projection's output beside A x (fold_lora_a)
        # (4-D with a size-1 dim: rows still 592 apart); rows not evenly apart are refused
        residual2, wide = randn(3, 1, 40, 576), randn(3, 1, 40, 592)
        aten_x2 = residual2 + wide[..., :576]
        aten_norm2 = torch.rms_norm(aten_x2, (576,), weight, 1e-5)
        norm2 = kernels.add_rms_norm_(residual2, wide[..., :576], weight, 1e-5)
        uneven = randn(2, 4, 592).unsqueeze(1)[:, :, :3, :576]  # row 3 at 2368, not 3 * 592
        try:
            kernels.add_rms_norm_(randn(2, 1, 3, 576), uneven, weight, 1e-5)
            refused = False
        except ValueError:
            refused = True
        report(f"residual add + RMSNorm kernel refuses a delta whose rows are not evenly apart, "
               f"{str(dtype).split('.')[1]}", refused, f"refused: {refused}")
        # a layer's sizes (Qwen2.5-1.5B's MLP and q heads, 32 sequences of 256 tokens): the kernels'
        # 32-bit work-item dividers at divisors of real models (16-bit types: 1120 chunks a row, RoPE
        # 8 x 256 x 12; float32 2240 and 16 x 256 x 12)
        big_gate_up = randn(32 * 256, 2 * 8960)
        big_x = randn(32, 256, 12, 128).transpose(1, 2)
        big_cos, big_sin = randn(256, 128), randn(256, 128)
        for name, got, want in (("RoPE", rope, aten), ("SwiGLU", swiglu, aten_swiglu(gate_up)),
                                ("RoPE, [32, 12, 256, 128]", kernels.rope(big_x, big_cos, big_sin),
                                 aten_rope(big_x, big_cos, big_sin)),
                                ("SwiGLU, [8192, 2 x 8960]", kernels.swiglu(big_gate_up), aten_swiglu(big_gate_up)),
                                ("residual add", residual, aten_x), ("RMSNorm", norm, aten_norm),
                                ("residual add, strided delta", residual2, aten_x2),
                                ("RMSNorm, strided delta", norm2, aten_norm2)):
            relative = ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()
            report(f"{name} kernel vs ATen, {str(dtype).split('.')[1]}", relative <= tolerance,
                   f"max |diff| / max |ATen| = {relative:.3g} (allowed {tolerance:g}; equal elements "
                   f"{(got == want).float().mean().item():.4f})")


def check_swiglu_every_bf16_gate() -> None:
    """SwiGLU's bfloat16 path (approximate intrinsics wherever the rounding is certain, else the
    precise computation: layer_kernels.cu's silu_rounded) against ATen for every one of the 65536
    bfloat16 gate values, bit for bit (NaN as NaN): with up = 1 (the rounded silu itself) and with
    random up values."""
    kernels = prge._core.layer_kernels
    every = torch.arange(-32768, 32768, dtype=torch.int32, device="cuda").to(torch.int16).view(torch.bfloat16)
    gate = every.reshape(256, 256)
    g = torch.Generator(device="cuda").manual_seed(0)
    for what, up in (("up = 1", torch.ones_like(gate)),
                     ("random up", torch.randn(256, 256, generator=g, device="cuda").to(torch.bfloat16))):
        gate_up = torch.cat([gate, up], -1)
        got, want = kernels.swiglu(gate_up), aten_swiglu(gate_up)
        same = (got.view(torch.int16) == want.view(torch.int16)) | (got.isnan() & want.isnan())
        differing = (~same).flatten().nonzero().flatten().tolist()[:4]
        bits = gate.flatten().view(torch.int16)
        report(f"SwiGLU kernel, bfloat16, all 65536 gate values, {what}: bit for bit equal to ATen",
               bool(same.all()), f"{int((~same).sum())} differ (first gates: "
               f"{[f'{float(gate.flatten()[i]):g} (0x{int(bits[i]) & 0xFFFF:04x})' for i in differing] or 'none'})")


def check_fold_lora_a(config) -> None:
    """A folded under W (o, down, q/k/v: one GEMM for x W^T and A x; fold_lora_a, off by default)
    against the same model unfolded: the logits of a forward and the losses and B of P-RGE steps,
    fp32 and bf16, layer kernels on (the residual-add kernel then reads o's and down's strided
    outputs)."""
    ids = random_batch(config.vocab_size, 4, 64, seed=9).input_ids.cuda()
    for dtype, tolerance in (("float32", 1e-5), ("bfloat16", 3e-2)):
        plain, pm = trainer(config, dtype, 4, fused=True, graphs=True)
        _, fm = trainer(config, dtype, 4, fused=True, graphs=True)
        fm.fold_lora_a = True
        folded, fm = trainer_for(fm, 4)  # a new trainer after the storage change
        names = fm.lora_a_folded
        relative = ((fm.logits(ids).float() - pm.logits(ids).float()).abs().max() / pm.logits(ids).float().abs().max()).item()
        fr, fb = run(folded, fm, config, 4, 4, 64)
        pr, pb = run(plain, pm, config, 4, 4, 64)
        loss_diff = max(abs(a - b) / abs(b) for x, y in zip(fr, pr) for a, b in zip(x.losses, y.losses))
        b_diff = (fb - pb).abs().max().item()
        report(f"fold_lora_a vs unfolded on CUDA, {dtype}: logits, and losses of 4 graphed P-RGE steps",
               len(names) == 5 * config.num_hidden_layers and not pm.lora_a_folded and relative <= tolerance
               and loss_diff <= tolerance and (dtype != "float32" or b_diff <= 1e-5 * max(1.0, pb.abs().max().item())),
               f"{len(names)} projections folded; max |diff| / max |logits| = {relative:.3g}, max relative loss "
               f"diff {loss_diff:.3g} (allowed {tolerance:g}); max B diff {b_diff:.3g} (fp32: allowed 1e-5 x max |B|)")


def aten_gated_low_rank(gate_up, ax, b_stack, scaling, activation):
    """What the gated low-rank kernel replaces, in ATen: each copy's term added to the frozen output
    (float32, one rounding to the dtype, as the plain path's beta = 1 GEMM does with a bias; without
    one the plain path rounds the term first, within one ulp), then the activation as ATen rounds it
    (act(gate) rounded, times up, rounded)."""
    f, copies = gate_up.shape[-1] // 2, b_stack.shape[0]
    rows = gate_up.numel() // gate_up.shape[-1]
    term = torch.bmm(ax.reshape(copies, rows // copies, -1).float(), b_stack.float().transpose(1, 2))
    y = (gate_up.reshape(rows, -1).float() + scaling * term.reshape(rows, -1)).to(gate_up.dtype)
    gate = y[:, :f]
    act = torch.nn.functional.silu(gate) if activation == "silu" else torch.nn.functional.gelu(gate, approximate="tanh")
    return (act * y[:, f:]).reshape(*gate_up.shape[:-1], f)


def check_gated_low_rank_kernel() -> None:
    """The Triton gated activation with the LoRA-FA term (compiled ahead of time) against ATen's
    ops on awkward shapes: tiles that straddle two copies (rows per copy not a multiple of the
    tile's rows, 32 since session 34; 64 before), copies of exactly one tile, f not a multiple of
    the 128-column tile, one copy with ragged rows, operands read out of a
    wider [x W^T | A x] output (strided rows), every dtype, activation and rank compiled, and
    Qwen2.5-1.5B's MLP at 32 copies; and a refusal where a copy is shorter than a tile."""
    kernels = prge._core.layer_kernels
    compiled = kernels.triton_kernels()
    arch = "%d%d" % torch.cuda.get_device_capability()
    here = sorted(key for key, sm, *_ in compiled if str(sm) == arch)
    tiles = sorted({f"{m} x {n}" for key, sm, m, n in compiled if str(sm) == arch})
    report(f"Triton kernels compiled for this GPU (sm_{arch})", bool(here),
           f"{len(here)} variants, tile {' / '.join(tiles) or '-'} (rows x columns): {', '.join(here)}")
    if not here:
        return
    g = torch.Generator(device="cuda").manual_seed(0)
    cases = [  # dtype, activation, rank, rows per copy, copies, f, strided
        (torch.bfloat16, "silu", 16, 100, 3, 96, False), (torch.bfloat16, "gelu_tanh", 16, 100, 3, 96, True),
        (torch.float16, "silu", 32, 64, 4, 160, False), (torch.float16, "gelu_tanh", 64, 130, 2, 48, True),
        (torch.bfloat16, "silu", 64, 37, 1, 272, False), (torch.bfloat16, "gelu_tanh", 32, 96, 5, 1536, True),
        (torch.bfloat16, "silu", 16, 256, 32, 8960, False), (torch.bfloat16, "silu", 16, 33, 4, 96, False),
        (torch.float16, "gelu_tanh", 32, 32, 3, 160, True)]
    for dtype, activation, rank, per_copy, copies, f, strided in cases:
        rows = per_copy * copies
        width = 2 * f + 2 * rank + (16 if strided else 0)
        wide = torch.randn(rows, width, generator=g, device="cuda").to(dtype)
        gate_up, ax = (wide[:, :2 * f], wide[:, width - 2 * rank:]) if strided else \
            (wide[:, :2 * f].contiguous(), wide[:, 2 * f:2 * f + 2 * rank].contiguous())
        stack = torch.zeros(copies, 2 * f, 2 * rank, device="cuda")
        stack[:, :f, :rank] = 0.3 * torch.randn(copies, f, rank, generator=g, device="cuda")
        stack[:, f:, rank:] = 0.3 * torch.randn(copies, f, rank, generator=g, device="cuda")
        stack = stack.to(dtype)
        got = kernels.gated_low_rank(gate_up.view(copies, per_copy, -1), ax.view(copies, per_copy, -1) if not strided
                                     else ax, stack, 2.0, activation)
        want = aten_gated_low_rank(gate_up, ax, stack, 2.0, activation).view(copies, per_copy, f)
        wrong = aten_gated_low_rank(gate_up, ax, stack.roll(1, 0), 2.0, activation).view(copies, per_copy, f)
        scale = want.float().abs().max()
        relative = ((got.float() - want.float()).abs().max() / scale).item()
        wrong_b = ((wrong.float() - want.float()).abs().max() / scale).item()
        tolerance = 1.6e-2 if dtype == torch.bfloat16 else 2e-3  # about four ulps of the largest output
        name = str(dtype).split(".")[1]
        report(f"gated low-rank kernel vs ATen, {name} {activation} r {rank}, {copies} copies of {per_copy} rows, "
               f"f {f}{', strided rows' if strided else ''}", relative <= tolerance and (copies == 1 or wrong_b > 0.1),
               f"max |diff| / max |ATen| = {relative:.3g} (allowed {tolerance:g}; equal elements "
               f"{(got == want).float().mean().item():.4f}; with each copy given its neighbour's B: {wrong_b:.3g})")
    try:
        kernels.gated_low_rank(*(torch.zeros(4 * 8, n, device="cuda", dtype=torch.bfloat16) for n in (192, 32)),
                               torch.zeros(4, 192, 32, device="cuda", dtype=torch.bfloat16), 2.0)
        refused = False
    except ValueError as error:
        refused = "no compiled variant" in str(error)
    report("gated low-rank kernel refuses copies shorter than a tile (4 copies of 8 rows)", refused,
           f"refused by name: {refused}")


def check_gated_low_rank_model(config) -> None:
    """A bf16 model's P-RGE steps with gate/up's term in the Triton gated activation against the
    same model with the term's GEMM (gated_low_rank_kernel off), both against float32 (where the
    kernel has no variant): the kernel's distance from float32 is within the GEMM path's, the
    kernel ran (profiler), and its graphed step equals its uncaptured one bit for bit."""
    results, b_last, counted, ran = {}, {}, {}, False
    runs = (("kernel", "bfloat16", True, False), ("gemm", "bfloat16", False, False),
            ("fp32", "float32", False, False), ("kernel, graphed", "bfloat16", True, True))
    for label, dtype, kernel, graphs in runs:
        t, model = trainer(config, dtype, 4, fused=True, graphs=graphs, gated_kernel=kernel)
        steps = []
        for s in range(4):
            batch = random_batch(config.vocab_size, 4, 64 - (s % 2) * 40, seed=s)
            if s == 0 and label == "kernel":
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    steps.append(t.step(batch))
                    torch.cuda.synchronize()
                ran = any("gated_low_rank" in e.key for e in prof.key_averages())
            else:
                steps.append(t.step(batch))
        results[label] = steps
        b_last[label] = torch.cat([a["lora_b"].flatten() for a in model.adapters()]).cpu()
        counted[label] = model.gated_low_rank_kernel_calls
    def distance(label):
        return max(abs(a - b) for x, y in zip(results[label], results["fp32"]) for a, b in zip(x.losses, y.losses))
    kernel_d, gemm_d = distance("kernel"), distance("gemm")
    # the graphed run took the kernel too: its losses are the kernel's, which are not the GEMM path's
    differs = any(x.losses != y.losses for x, y in zip(results["kernel"], results["gemm"]))
    same = all(x.losses == y.losses for x, y in zip(results["kernel, graphed"], results["kernel"])) and \
        torch.equal(b_last["kernel, graphed"], b_last["kernel"])
    counts_agree = counted["kernel"] > 0 and counted["kernel, graphed"] > 0 and counted["gemm"] == counted["fp32"] == 0
    report("gated low-rank kernel in a bf16 P-RGE step: ran, as close to fp32 as the GEMM path, graphed == uncaptured",
           ran and counts_agree and kernel_d <= 2 * gemm_d + 1e-3 and same and differs,
           f"kernel ran: {ran} (model's count: {counted}); max |loss - fp32 loss| kernel {kernel_d:.3g}, GEMM path "
           f"{gemm_d:.3g}; graphed identical: {same}; kernel's losses differ from the GEMM path's: {differs}")


def check_dequantize_kernel(config) -> None:
    """The one-pass dequantize kernel against QuantizedWeight.dequantize (ATen's ops): each
    format alone, then the logits of int4 / int8 models with the kernels on against the same
    models with them off (main() also replays a graphed step on an int4 base)."""
    kernels = prge._core.layer_kernels
    w = torch.randn(96, 256, generator=torch.Generator().manual_seed(0)).cuda()
    for bits, group in ((4, 32), (4, 64), (4, 128), (8, 256), (8, 16)):
        q = prge.quantize_weight(w, bits, group)
        for dtype in ("float32", "bfloat16", "float16"):
            want = q.dequantize(dtype)
            got = kernels.dequantize(q, torch.empty_like(want))
            relative = ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()
            allowed = 1e-6 if dtype == "float32" else 1e-2  # one float32 rounding; one rounding of the dtype
            report(f"dequantize kernel vs ATen, int{bits} group {group}, {dtype}", relative <= allowed,
                   f"max |diff| / max |w| = {relative:.3g} (allowed {allowed:g}; equal elements "
                   f"{(got == want).float().mean().item():.4f})")
    for quantize in ("int4", "int8"):
        check_layer_kernels(config, quantize)


def check_layer_kernels(config, quantize="none") -> None:
    ids = random_batch(config.vocab_size, 4, 64, seed=9).input_ids.cuda()
    for dtype, tolerance in (("float32", 1e-4 if quantize == "none" else 1e-5), ("bfloat16", 3e-2)):
        model = prge.CausalLM.random(config, 0, "cuda", dtype, quantize)
        fused = model.logits(ids)
        model.layer_kernels = False
        aten = model.logits(ids)
        relative = ((fused - aten).abs().max() / aten.abs().max()).item()
        name = (f"fused layer kernels vs ATen path, {dtype} logits of a forward" if quantize == "none"
                else f"{quantize} base, kernels vs ATen path, {dtype} logits")
        report(name, relative <= tolerance, f"max |diff| / max |logits| = {relative:.3g} (allowed {tolerance:g})")


def family_specs():
    """(name, prge.ArchSpec) of small random models of every family, read from config.json files
    transformers writes, with the features that take other code paths switched on."""
    import tempfile
    from pathlib import Path

    import transformers as t

    common = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, max_position_embeddings=4096)
    configs = {
        "llama, biases": t.LlamaConfig(**common, attention_bias=True, mlp_bias=True),
        "mistral, window 48": t.MistralConfig(**common, sliding_window=48),
        "ministral, window 48 on layers 0 and 2": t.MinistralConfig(
            **common, sliding_window=48, layer_types=["sliding_attention", "full_attention"] * 2),
        "qwen2": t.Qwen2Config(**common),
        "qwen3, window 48 on layers 2-3": t.Qwen3Config(**common, use_sliding_window=True, sliding_window=48,
                                                        max_window_layers=2),
        "gemma3_text": t.Gemma3TextConfig(**common, sliding_window=48, query_pre_attn_scalar=48,
                                          final_logit_softcapping=30.0,
                                          layer_types=["sliding_attention", "full_attention"] * 2),
        "phi3": t.Phi3Config(**common, pad_token_id=0),
        "phi3, partial rotary": t.Phi3Config(**common, pad_token_id=0, partial_rotary_factor=0.5),
    }
    for name, config in configs.items():
        directory = Path(tempfile.mkdtemp())
        config.save_pretrained(directory)
        yield name, prge.ArchSpec.from_json_file(str(directory / "config.json"))


def check_families() -> None:
    """Every family's fast paths against its plain paths: fused layer kernels (where the family's
    norm and activation are the kernels') against ATen, the fused P-RGE step (copy stacks over
    biased and per-part projections) against the plain step, CUDA-graph replay against the
    uncaptured step; sequences of 64 tokens, so the 48-token windows take the masked path."""
    for name, spec in family_specs():
        ids = random_batch(spec.vocab_size, 4, 64, seed=9).input_ids.cuda()
        model = prge.CausalLM.random(spec, 0, "cuda", "float32")
        fused_logits = model.logits(ids)
        model.layer_kernels = False
        aten_logits = model.logits(ids)
        kernels = ((fused_logits - aten_logits).abs().max() / aten_logits.abs().max()).item()
        fused, fm = trainer(spec, "float32", 4, fused=True, graphs=False)
        plain, pm = trainer(spec, "float32", 4, fused=False, graphs=False)
        fr, fb = run(fused, fm, spec, 4, 4, 64)
        pr, pb = run(plain, pm, spec, 4, 4, 64)
        loss_diff = max(abs(a - b) for f, p in zip(fr, pr) for a, b in zip(f.losses, p.losses))
        graphed, gm = trainer(spec, "bfloat16", 4, fused=True, graphs=True)
        eager, em = trainer(spec, "bfloat16", 4, fused=True, graphs=False)
        gr, gb = run(graphed, gm, spec, 5, 4, 64)
        er, eb = run(eager, em, spec, 5, 4, 64)
        same = all(g.losses == e.losses for g, e in zip(gr, er)) and torch.equal(gb, eb)
        report(f"family {name}: layer kernels vs ATen (fp32), fused vs plain step (fp32), graphed == uncaptured (bf16)",
               kernels <= 1e-4 and loss_diff < 1e-4 and (fb - pb).abs().max().item() < 1e-4 * max(1.0, pb.abs().max().item())
               and same and graphed.uses_cuda_graphs,
               f"kernels {kernels:.3g}, max loss diff {loss_diff:.3g}, graphed identical {same}")
        compare_gated_kernel_on_off(name, spec)


def compare_gated_kernel_on_off(name, spec) -> None:
    """bf16 P-RGE steps with the gated low-rank kernel on (the default) and off, LoRA rank 32.
    Phi-3's one fused gate_up_proj has a single A: the kernel, which reads gate's and up's terms
    as two rank-r halves of A x, must not run there (identical losses); elsewhere it does, and
    the losses agree to bf16 rounding."""
    losses, calls = {}, {}
    for kernel in (True, False):
        t, model = trainer(spec, "bfloat16", 4, fused=True, graphs=False, gated_kernel=kernel,
                           adapter=prge.AdapterOptions(rank=32, alpha=64, init_seed=3))
        results, _ = run(t, model, spec, 3, 4, 64)
        losses[kernel] = [x for step in results for x in step.losses]
        calls[kernel] = model.gated_low_rank_kernel_calls
    diff = max(abs(a - b) for a, b in zip(losses[True], losses[False]))
    fused_gate_up = name.startswith("phi3")
    expected = (diff == 0 and calls[True] == 0) if fused_gate_up else (diff < 0.05 and calls[True] > 0)
    why = "identical expected: fused gate_up_proj" if fused_gate_up else "bf16 rounding"
    report(f"family {name}: gated low-rank kernel on vs off, bf16, rank 32", calls[False] == 0 and expected,
           f"max loss diff {diff:.3g} ({why}); MLP blocks through the kernel, on / off: {calls[True]} / {calls[False]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out")
    parser.add_argument("--only", nargs="+", metavar="CHECK",
                        help="run only these check functions (e.g. check_device_steps_many_shapes)")
    parser.add_argument("--start-at", metavar="CHECK",
                        help="run the whole sequence from the first call of this check on (the rest of a cut run)")
    args = parser.parse_args()
    def required(fn) -> int:
        return sum(p.default is p.empty and p.kind is not p.VAR_POSITIONAL
                   for p in inspect.signature(fn).parameters.values())

    # the checks --only can call: check_* taking nothing or the shape's config
    checks = {name: fn for name, fn in globals().items()
              if name.startswith("check_") and callable(fn) and required(fn) <= 1}
    unknown = [name for name in args.only or [] if name not in checks]
    if unknown:
        parser.error(f"unknown check(s) {unknown}; the checks: {', '.join(sorted(checks))}")
    if not prge.cuda_built or not torch.cuda.is_available():
        print("prge was built without CUDA or no GPU is visible: nothing to check")
        return 2
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    config = shape_config("smollm2-135m")
    config.num_hidden_layers = 4  # every code path, a fraction of the time
    if args.only:
        for name in args.only:
            fn = checks[name]
            fn(config) if required(fn) else fn()
        return write_and_exit(args.out)
    sequence = [  # every check, in order
        lambda: check_noise_kernel(),
        lambda: check_fused_vs_plain(config),
        lambda: check_query_counts(config),
        lambda: check_graphs(config, "float32"),
        lambda: check_graphs(config, "bfloat16"),
        lambda: check_torch_rng_fallback(config),
        lambda: check_default_path(config),
        lambda: check_patterned_adapters(config),
        lambda: check_mezo_no_drift(config),
        lambda: check_mezo_device_step(config),
        lambda: check_mezo_replay(config),
        lambda: check_first_order_device_step(config),
        lambda: check_device_steps_many_shapes(config),
        lambda: check_replays_keep_weights_at_lr_zero(config),
        lambda: check_kernels_vs_aten(),
        lambda: check_swiglu_every_bf16_gate(),
        lambda: check_gated_low_rank_kernel(),
        lambda: check_gated_low_rank_model(config),
        lambda: check_layer_kernels(config),
        lambda: check_fold_lora_a(config),
        lambda: check_dequantize_kernel(config),
        lambda: check_graphs(config, "bfloat16", quantize="int4"),
        lambda: check_graphs(config, "bfloat16", "queries", 4),
        lambda: check_graphs(config, "bfloat16", "sequential", 1),
        lambda: check_split_step(config),
        lambda: check_families(),
    ]
    first = 0
    if args.start_at:
        named = [i for i, fn in enumerate(sequence) if args.start_at in fn.__code__.co_names]
        if not named:
            parser.error(f"--start-at {args.start_at}: no such check in the sequence")
        first = named[0]
    for fn in sequence[first:]:
        fn()
    return write_and_exit(args.out)


def write_and_exit(out: str | None) -> int:
    """The report's lines into `out` (when given); 0 when every check passed, else 1."""
    if out:
        with open(out, "w") as f:
            f.write(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}\n" + "\n".join(LINES) + "\n")
    return 0 if all(line.startswith("PASS") for line in LINES) else 1


if __name__ == "__main__":
    sys.exit(main())
