"""Time per step and peak memory of MeZO vs ZO LoRA-FA vs P-RGE (q = 1, 4, 16; single and
dual), all at q * batch = 16 and therefore all evaluating 2 * 16 sequences per step
("equal forward passes"), measured in ONE run so the ratios are comparable. With
--first-order, also first order on the adapters (16 sequences, forward and backward) beside
peft LoRA-FA with backprop; those rows are compared with each other only.

Baselines measured beside P-RGE in the same process:
  - mezo_eager_torch: MeZO as in its reference code: a transformers LlamaForCausalLM,
    in-place perturb / restore of every weight with torch.normal, one forward at a time;
  - mezo_cpp: the same algorithm through prge's C++ engine;
  - inference: one plain batched forward of the 32 sequences through prge's native model;
  - transformers forward (eager / torch.compile / torch.compile with CUDA graphs): the same
    32 sequences through transformers, logits at the answer positions only. The fastest of
    them is the floor a training step is compared with ("time / best forward");
  - paper P-RGE (eager / compiled): the paper's recipe on transformers (experiments/peers.py);
  - matmul: an 8192^3 matrix product, the device's achievable peak for FLOP/s ratios.

Weights are random at the real shape (speed does not depend on their values).

  python experiments/bench_step.py --device cuda --dtype bfloat16 --shape tinyllama-1.1b
  python experiments/bench_step.py --device cpu --dtype float32 --shape smollm2-135m --seq-len 64
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import torch

import prge
from prge import run_summary
from prge.models import SHAPES, shape_config
from prge.speed import random_batch

QB = 16  # queries * batch, the paper's setting


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_memory(device):
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def leftover_memory(device):
    """Memory still allocated before a row builds anything (caches of earlier rows, e.g.
    torch.compile's CUDA-graph pools): not the row's own, so subtracted from its peak. cuBLAS's
    cached workspaces (one per stream, 32 MiB on Hopper) are freed first, so that every row
    counts the workspaces it allocates itself, rather than the first row to use a stream."""
    gc.collect()
    if device.startswith("cuda"):
        torch._C._cuda_clearCublasWorkspaces()
        torch.cuda.empty_cache()
        return torch.cuda.memory_allocated()
    return 0


def peak_memory_gib(device, leftover):
    if device.startswith("cuda"):
        return (torch.cuda.max_memory_allocated() - leftover) / 2**30
    return None  # no per-method allocator statistics on the CPU


def timed(fn, warmup, steps, device):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_flops(config, sequences, seq_len):
    """2 * (non-embedding params) per token + causal attention (QK^T and PV)."""
    c = config
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    per_layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size
    tokens = sequences * seq_len
    attention = 2 * 2 * c.num_hidden_layers * sequences * seq_len * seq_len * q / 2
    return 2 * per_layer * c.num_hidden_layers * tokens + attention


def prge_step(args, config, kind, queries, parallel, graphs=True, rng="auto", fold=None, distribution="gaussian",
              gated=None):
    """One step of prge's trainer as a user builds it, as a function of nothing: estimator.rng
    defaults to auto, the counter RNG on CUDA (what the CUDA kernels and graph capture need);
    rng="torch" is the earlier default. fold: CausalLM.fold_lora_a (None: the default, off).
    distribution: of z (estimator.distribution). gated: CausalLM.gated_low_rank_kernel (None: the
    default, on: gate/up's term inside the gated activation where a compiled variant fits; False: the
    term's batched GEMM, as before it)."""
    model = prge.CausalLM.random(config, 0, args.device, args.dtype)
    if fold is not None:
        model.fold_lora_a = fold
    if gated is not None:
        model.gated_low_rank_kernel = gated
    if kind != "mezo":
        model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32))
    eps = 1e-3 if kind == "mezo" else 1e-2
    trainer = prge.Trainer(model, prge.EstimatorOptions(kind, queries, eps, "central", parallel, rng=rng,
                                                        distribution=distribution),
                           prge.OptimizerOptions(lr=1e-6 if kind == "mezo" else 5e-5), 0,
                           cuda_graphs=graphs)
    batch = random_batch(config.vocab_size, QB // queries, args.seq_len)
    return lambda: trainer.step(batch)


def bench_prge(args, config, kind, queries, parallel, warmup, steps, **options):
    """Seconds a step (median) and the step's own peak GiB of prge_step(..., **options)."""
    leftover = leftover_memory(args.device)
    step = prge_step(args, config, kind, queries, parallel, **options)
    reset_memory(args.device)
    seconds = timed(step, warmup, steps, args.device)
    peak = peak_memory_gib(args.device, leftover)
    del step
    return seconds, peak


def triton_kernels_built() -> bool:
    """Whether this build compiled the Triton kernels for this GPU (CausalLM.gated_low_rank_kernel has
    any effect on it)."""
    if not (prge.cuda_built and torch.cuda.is_available()):
        return False
    major, minor = torch.cuda.get_device_capability()
    return any(sm == 10 * major + minor for _, sm, *_ in prge._core.layer_kernels.triton_kernels())


def interleaved_ratios(args, config, qs, rounds):
    """The P-RGE dual step (each q: as built by default, with fold_lora_a, and without the gated
    low-rank kernel) over the torch.compile'd
    (reduce-overhead) transformers forward of the same 32 sequences, each ratio against the
    forward timed just before it, over `rounds` rounds, every step and the forward built once:
    drift of the machine between rows (about 1 ms in a 45 ms step between runs) cancels.
    Returns {row name: [ratio per round]}."""
    from peers import TransformersForward, transformers_model

    batch = random_batch(config.vocab_size, 2 * QB, args.seq_len)
    ids, targets = batch.input_ids.to(args.device), batch.targets.to(args.device)
    forward = TransformersForward(transformers_model(config, getattr(torch, args.dtype), args.device), ids, targets,
                                  "reduce-overhead")
    steps = {}
    variants = [("", {}), (" (fold_lora_a)", {"fold": True})]
    if triton_kernels_built():
        variants.append((" (no gated low-rank kernel)", {"gated": False}))
    for variant, options in variants:
        for q in qs:
            steps[f"prge_dual q={q}{variant}"] = prge_step(args, config, "prge", q, "dual", **options)
    timed(forward, args.warmup + 3, 1, args.device)
    for step in steps.values():
        timed(step, args.warmup, 1, args.device)
    ratios = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            floor = timed(forward, 1, args.steps, args.device)
            ratios[name].append(timed(step, 1, args.steps, args.device) / floor)
    del forward, steps
    torch._dynamo.reset()
    return ratios


def bench_inference(args, config, warmup, steps):
    leftover = leftover_memory(args.device)
    model = prge.CausalLM.random(config, 0, args.device, args.dtype)
    model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32))
    batch = random_batch(config.vocab_size, 2 * QB, args.seq_len)
    ids = batch.input_ids.to(args.device)
    reset_memory(args.device)
    seconds = timed(lambda: model.hidden_states(ids), warmup, steps, args.device)
    peak = peak_memory_gib(args.device, leftover)
    del model
    return seconds, peak


def bench_mezo_eager_torch(args, config, queries, warmup, steps):
    """MeZO's reference loop (Malladi et al. 2023, trainer.zo_step) on transformers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    leftover = leftover_memory(args.device)
    hf_config = LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim, tie_word_embeddings=config.tie_word_embeddings,
        max_position_embeddings=4096)
    dtype = getattr(torch, args.dtype)
    with torch.device(args.device):
        torch.set_default_dtype(dtype)
        model = LlamaForCausalLM(hf_config).eval()
        torch.set_default_dtype(torch.float32)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    batch = random_batch(config.vocab_size, QB // queries, args.seq_len)
    ids, targets = batch.input_ids.to(args.device), batch.targets.to(args.device)
    eps, lr = 1e-3, 1e-6

    def perturb(seed, scale):
        torch.manual_seed(seed)
        for _, p in params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            p.data = p.data + scale * z * eps

    def loss():
        logits = model(ids).logits
        return torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), targets, ignore_index=-100).item()

    @torch.inference_mode()
    def step():
        grads = []
        for i in range(queries):
            seed = 1000 * i + 7
            perturb(seed, 1)
            plus = loss()
            perturb(seed, -2)
            minus = loss()
            perturb(seed, 1)
            grads.append((seed, (plus - minus) / (2 * eps)))
        for seed, g in grads:
            torch.manual_seed(seed)
            for _, p in params:
                z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
                p.data = p.data - lr * g / queries * z

    reset_memory(args.device)
    seconds = timed(step, warmup, steps, args.device)
    peak = peak_memory_gib(args.device, leftover)
    del model, params
    return seconds, peak


def bench_peer(args, config, make, warmup, steps):
    """Time a peer built by make(model, ids, targets) on a fresh transformers model."""
    leftover = leftover_memory(args.device)
    from peers import transformers_model

    model = transformers_model(config, getattr(torch, args.dtype), args.device)
    runner = make(model, config)
    reset_memory(args.device)
    seconds = timed(runner, warmup, steps, args.device)
    peak = peak_memory_gib(args.device, leftover)
    del runner, model
    torch._dynamo.reset()
    return seconds, peak


def bench_matmul(args):
    if not args.device.startswith("cuda"):
        n = 2048
    else:
        n = 8192
    dtype = getattr(torch, args.dtype)
    a = torch.randn(n, n, device=args.device, dtype=dtype)
    b = torch.randn(n, n, device=args.device, dtype=dtype)
    seconds = timed(lambda: a @ b, 3, 10, args.device)
    return 2 * n**3 / seconds


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tinyllama-1.1b", choices=sorted(SHAPES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--queries", default="1,4,16")
    parser.add_argument("--skip-eager", action="store_true", help="skip the transformers MeZO baseline")
    parser.add_argument("--skip-peers", action="store_true",
                        help="skip the transformers forward and paper P-RGE peers")
    parser.add_argument("--peer-queries", default=None,
                        help="queries of the paper P-RGE peer rows (default: --queries; none: no such rows)")
    parser.add_argument("--compile-modes", default=None,
                        help="torch.compile modes for the peers (default: default,reduce-overhead "
                             "on CUDA, default on the CPU)")
    parser.add_argument("--dual-only", action="store_true",
                        help="of prge's rows only the default P-RGE dual step (a family's check against its floor)")
    parser.add_argument("--first-order", action="store_true",
                        help="also first order on the adapters (QB sequences, forward and backward): prge's "
                             "step beside peft LoRA-FA + backprop, eager and torch.compile'd")
    parser.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                        help="also the P-RGE dual rows (unfolded and folded) as ratios to the compiled "
                             "transformers forward timed just before each, over ROUNDS rounds (CUDA)")
    parser.add_argument("--out", default="experiments/results")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(torch.get_num_threads())
    config = shape_config(args.shape)
    qs = [int(q) for q in args.queries.split(",")]
    rows = []

    def record(name, kind, queries, parallel, seconds, peak, sequences=2 * QB):
        flops = forward_flops(config, sequences, args.seq_len)  # forward only (first order's backward not counted)
        rows.append(dict(method=name, estimator=kind, queries=queries,
                         batch=sequences if kind == "first_order" else QB // queries if queries else 2 * QB,
                         parallel=parallel, ms_per_step=1e3 * seconds,
                         tokens_per_s=sequences * args.seq_len / seconds,
                         tflops=flops / seconds / 1e12, peak_gib=peak))
        print(f"{name:32s} {1e3 * seconds:10.2f} ms  {peak or 0:7.2f} GiB", flush=True)

    peak_flops = bench_matmul(args)
    print(f"matmul peak: {peak_flops / 1e12:.1f} TFLOP/s ({args.dtype})", flush=True)
    s, m = bench_inference(args, config, args.warmup, args.steps)
    record("inference (2*16 seqs)", "none", 0, "-", s, m)
    forward_rows = []
    if not args.skip_peers:
        from peers import PaperPrgeStep, TransformersForward

        cuda = args.device.startswith("cuda")
        modes = (args.compile_modes or ("default,reduce-overhead" if cuda else "default")).split(",")
        batch = random_batch(config.vocab_size, 2 * QB, args.seq_len)
        ids, targets = batch.input_ids.to(args.device), batch.targets.to(args.device)
        for mode in [None] + modes:
            name = f"transformers forward {mode or 'eager'}"
            s, m = bench_peer(args, config, lambda model, c: TransformersForward(model, ids, targets, mode),
                              args.warmup + (3 if mode else 0), args.steps)
            record(name, "none", 0, "-", s, m)
            forward_rows.append(name)
        if args.peer_queries == "none":
            peer_qs = []
        else:
            peer_qs = [int(q) for q in args.peer_queries.split(",")] if args.peer_queries else qs
        for compiled in (False, True):
            for q in peer_qs:
                small = random_batch(config.vocab_size, QB // q, args.seq_len)
                sids, stargets = small.input_ids.to(args.device), small.targets.to(args.device)
                s, m = bench_peer(args, config, lambda model, c: PaperPrgeStep(
                    model, sids, stargets, q, 1e-2, 5e-5, compiled), args.warmup + (3 if compiled else 0),
                    args.steps)
                record(f"paper_prge_dual {'compiled' if compiled else 'eager'} q={q}", "prge", q, "dual", s, m)
    if not args.dual_only:
        if not args.skip_eager:
            for q in (1, max(qs)):
                s, m = bench_mezo_eager_torch(args, config, q, 1, max(2, args.steps // (2 * q)))
                record(f"mezo_eager_torch q={q}", "mezo", q, "sequential", s, m)
        s, m = bench_prge(args, config, "mezo", 1, "sequential", args.warmup, args.steps)
        record("mezo_cpp q=1", "mezo", 1, "sequential", s, m)
        if args.device.startswith("cuda") and prge.cuda_built:  # MeZO's earlier default: Philox, uncaptured
            s, m = bench_prge(args, config, "mezo", 1, "sequential", args.warmup, args.steps, rng="torch")
            record("mezo_cpp q=1 (rng torch)", "mezo", 1, "sequential", s, m)
        s, m = bench_prge(args, config, "prge", 1, "sequential", args.warmup, args.steps)
        record("zo_lora_fa q=1", "prge", 1, "sequential", s, m)
        if max(qs) > 1:
            s, m = bench_prge(args, config, "prge", max(qs), "sequential", 1, max(2, args.steps // 4))
            record(f"zo_lora_fa q={max(qs)} (sequential)", "prge", max(qs), "sequential", s, m)
    for parallel in ("dual",) if args.dual_only else ("queries", "dual"):
        for q in qs:
            s, m = bench_prge(args, config, "prge", q, parallel, args.warmup, args.steps)
            record(f"prge_{parallel} q={q}", "prge", q, parallel, s, m)
    if args.device.startswith("cuda"):
        for q in qs:  # what folding A under W gives: one GEMM for x W^T and A x (o, down, q/k/v)
            s, m = bench_prge(args, config, "prge", q, "dual", args.warmup, args.steps, fold=True)
            record(f"prge_dual q={q} (fold_lora_a)", "prge", q, "dual", s, m)
    gated_built = args.device.startswith("cuda") and triton_kernels_built()
    if args.device.startswith("cuda") and prge.cuda_built and not gated_built:
        print("no Triton kernels in this build: the default rows run without the gated low-rank kernel", flush=True)
    if gated_built:
        for q in qs:  # what the Triton gated activation with gate/up's term inside (the default) saves
            s, m = bench_prge(args, config, "prge", q, "dual", args.warmup, args.steps, gated=False)
            record(f"prge_dual q={q} (no gated low-rank kernel)", "prge", q, "dual", s, m)
    if args.device.startswith("cuda") and prge.cuda_built:
        # What drawing gaussian z costs at the largest q: Rademacher z (a hash and a sign, no
        # log / sqrt / cos; estimator.distribution: rademacher) in the same step.
        s, m = bench_prge(args, config, "prge", max(qs), "dual", args.warmup, args.steps, distribution="rademacher")
        record(f"prge_dual q={max(qs)} (rademacher z)", "prge", max(qs), "dual", s, m)
    if args.device.startswith("cuda") and prge.cuda_built and not args.dual_only:
        for q in qs:  # what the CUDA graph adds: the same fused step, uncaptured
            s, m = bench_prge(args, config, "prge", q, "dual", args.warmup, args.steps, graphs=False)
            record(f"prge_dual q={q} (no CUDA graph)", "prge", q, "dual", s, m)
        for q in qs:  # the earlier default, estimator.rng: torch (no fused kernels, no graph)
            s, m = bench_prge(args, config, "prge", q, "dual", args.warmup, args.steps, rng="torch")
            record(f"prge_dual q={q} (rng torch)", "prge", q, "dual", s, m)

    if args.first_order:
        s, m = bench_prge(args, config, "first_order", 1, "dual", args.warmup, args.steps)
        record(f"first_order ({QB} seqs)", "first_order", 0, "-", s, m, sequences=QB)
        if not args.skip_peers:
            from peers import LoraFaBackpropStep

            batch = random_batch(config.vocab_size, QB, args.seq_len)
            ids, targets = batch.input_ids.to(args.device), batch.targets.to(args.device)
            for mode in [None] + modes:
                s, m = bench_peer(args, config, lambda model, c: LoraFaBackpropStep(model, ids, targets, 5e-5, mode),
                                  args.warmup + (3 if mode else 0), args.steps)
                record(f"peft LoRA-FA backprop {mode or 'eager'} ({QB} seqs)", "first_order", 0, "-", s, m,
                       sequences=QB)

    interleaved = {}
    if args.interleave > 0 and args.device.startswith("cuda"):
        interleaved = interleaved_ratios(args, config, qs, args.interleave)
        for name, values in interleaved.items():
            print(f"{name:32s} {statistics.median(values):.3f} x the compiled forward "
                  f"({min(values):.3f}-{max(values):.3f} over {len(values)} rounds)", flush=True)

    by = {r["method"]: r for r in rows}
    base_eager = by.get("mezo_eager_torch q=1")
    base_cpp = by.get("mezo_cpp q=1")
    infer = by["inference (2*16 seqs)"]
    best_forward = min((by[n] for n in forward_rows), key=lambda r: r["ms_per_step"], default=infer)
    device_name = run_summary.device_name(args.device)
    for r in rows:
        if r["estimator"] == "first_order":  # other work than the 32-sequence forward: compared with each other only
            r.update(speedup_vs_mezo_eager_q1=None, speedup_vs_mezo_cpp_q1=None, time_vs_inference=None,
                     time_vs_best_forward=None, memory_vs_inference=None, tflops=None, fraction_of_matmul_peak=None)
            continue
        r["speedup_vs_mezo_eager_q1"] = base_eager["ms_per_step"] / r["ms_per_step"] if base_eager else None
        r["speedup_vs_mezo_cpp_q1"] = base_cpp["ms_per_step"] / r["ms_per_step"] if base_cpp else None
        r["time_vs_inference"] = r["ms_per_step"] / infer["ms_per_step"]
        r["time_vs_best_forward"] = r["ms_per_step"] / best_forward["ms_per_step"]
        r["memory_vs_inference"] = r["peak_gib"] / infer["peak_gib"] if r["peak_gib"] else None
        r["fraction_of_matmul_peak"] = r["tflops"] * 1e12 / peak_flops
    first_order = [r for r in rows if r["estimator"] == "first_order"]
    peers = [r for r in first_order if r["method"].startswith("peft")]

    tag = f"{args.shape}_{args.device.split(':')[0]}_{args.dtype}_T{args.seq_len}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(shape=args.shape, device=device_name, dtype=args.dtype, seq_len=args.seq_len,
                qb=QB, matmul_peak_tflops=peak_flops / 1e12, torch=torch.__version__,
                date=time.strftime("%Y-%m-%d"), params=config.parameter_count())
    (out / f"bench_step_{tag}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    lines = [f"# Step time: {args.shape} shape (random weights), {device_name}, {args.dtype}, "
             f"seq len {args.seq_len}, q*b = {QB} (every row evaluates {2 * QB} sequences per step"
             + (f"; first-order rows {QB}, forward and backward)" if args.first_order else ")"),
             "", f"torch {torch.__version__}; matmul peak measured in the same run: "
             f"{peak_flops / 1e12:.1f} TFLOP/s. Ratios are against rows of this same run; "
             f"'best forward' is the fastest inference forward of the same {2 * QB} sequences "
             f"({best_forward['method']}). Peak memory is the row's own: what earlier rows "
             f"left allocated (e.g. torch.compile's CUDA-graph pools) is subtracted, and cuBLAS's "
             f"per-stream workspaces are freed before each row, so each row counts its own.", "",
             "| method | q | b | ms/step | tokens/s | model TFLOP/s | % of matmul peak | peak GiB | "
             "× vs MeZO eager (q=1) | × vs MeZO C++ (q=1) | time / prge inference | time / best forward | "
             "memory / prge inference |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        eager = f"{r['speedup_vs_mezo_eager_q1']:.2f}" if r["speedup_vs_mezo_eager_q1"] else "-"
        share = "-" if r["fraction_of_matmul_peak"] is None else f"{100 * r['fraction_of_matmul_peak']:.0f}%"
        lines.append(f"| {r['method']} | {r['queries']} | {r['batch']} | {r['ms_per_step']:.1f} | "
                     f"{r['tokens_per_s']:.0f} | {fmt(r['tflops'], 1)} | {share} | "
                     f"{fmt(r['peak_gib'])} | {eager} | {fmt(r['speedup_vs_mezo_cpp_q1'])} | "
                     f"{fmt(r['time_vs_inference'])} | {fmt(r['time_vs_best_forward'])} | "
                     f"{fmt(r['memory_vs_inference'])} |")
    if first_order and peers:
        ours = next(r for r in first_order if r["method"].startswith("first_order"))
        best = min(peers, key=lambda r: r["ms_per_step"])
        lines += ["", f"First order ({QB} sequences, forward and backward; its rows leave the FLOP columns, which "
                  f"would count the forward only, and the ratio columns, which compare with the {2 * QB}-sequence "
                  f"forward, empty): prge's step {ours['ms_per_step']:.1f} ms = "
                  f"{ours['ms_per_step'] / best['ms_per_step']:.2f} x the fastest peer, {best['method']} "
                  f"({best['ms_per_step']:.1f} ms)."]
    if interleaved:
        lines += ["", f"Interleaved, the same process after the rows above: each P-RGE dual step against the "
                  f"transformers forward (torch.compile reduce-overhead) timed just before it, both built once, "
                  f"median of {args.steps} steps each, {args.interleave} rounds: the median ratio and its range.", "",
                  "| method | time / compiled forward, median | min | max |", "|---|---|---|---|"]
        lines += [f"| {name} | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} |"
                  for name, v in interleaved.items()]
    (out / f"bench_step_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
