"""Time per training step of the P-RGE step run by inference runtimes vs prge's eager C++
engine, measured in ONE run (same model, batch, seed) so the ratios are comparable.

  eager_engine   prge.Trainer (C++ LibTorch engine, estimator.rng: counter)
  eager_module   the exportable step module run eagerly by PyTorch
  onnx           ONNX Runtime (CPU provider), B fed back each step
  aoti           AOTInductor .pt2 (B in mutable buffers), via torch._inductor's loader
  executorch     ExecuTorch portable runtime (.pte, B in mutable buffers)

Weights are random at a real shape (speed does not depend on their values). Each row
also reports the first step's loss difference from the eager engine.

  python experiments/bench_runtimes.py --shape smollm2-135m --device cpu --runtimes onnx,aoti,executorch
  python experiments/bench_runtimes.py --shape smollm2-135m --device cuda --runtimes aoti
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import prge
from prge import run_summary
from prge.export import exporters, runners
from prge.export.step_module import FunctionalStep, MutableBufferStep, StepSpec
from prge.models import shape_config


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(step_fn, warmup, steps, device):
    for _ in range(warmup):
        step_fn(0)
    sync(device)
    times, first = [], None
    for s in range(steps):
        start = time.perf_counter()
        out = step_fn(s)
        sync(device)
        times.append(time.perf_counter() - start)
        first = first if first is not None else out
    return statistics.median(times), first


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="smollm2-135m")
    parser.add_argument("--layers", type=int, help="keep only this many layers of the shape "
                        "(AOTInductor compile time grows with depth)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--runtimes", default="onnx,aoti,executorch")
    parser.add_argument("--out", default="experiments/results")
    args = parser.parse_args()

    config = shape_config(args.shape)
    if args.layers:
        config.num_hidden_layers = args.layers
    model = prge.CausalLM.random(config, 0, args.device, "float32")
    model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, config.vocab_size, (args.batch, args.seq_len), generator=g)
    targets = torch.full_like(ids, -100)
    targets[:, -2] = ids[:, -1]
    lr, eps, seed = 1e-4, 1e-2, 42
    key = lambda s: prge.counter_step_key(seed, s)  # noqa: E731

    rows = []
    trainer = prge.Trainer(model, prge.EstimatorOptions("prge", args.queries, eps, "central", "dual",
                                                        "gaussian", "counter"),
                           prge.OptimizerOptions(lr=lr), seed)
    batch = prge.TokenBatch(ids, targets)
    # Step 0 of the engine is the loss every runtime's first call must reproduce.
    spec = StepSpec(args.queries, args.batch, args.seq_len, 1)
    names = [r for r in args.runtimes.split(",") if r]
    # Every step module copies the weights and B now, before the engine trains B.
    module = MutableBufferStep(model, spec)
    steps = {"aoti": MutableBufferStep(model, spec) if "aoti" in names else None,
             "onnx": FunctionalStep(model, spec) if "onnx" in names and args.device == "cpu" else None,
             "executorch": MutableBufferStep(model, StepSpec(args.queries, args.batch, args.seq_len, 1,
                                                             shift_mode="divide"))
             if "executorch" in names and args.device == "cpu" else None}
    reference = trainer.step(batch).loss
    seconds, _ = timed(lambda s: trainer.step(batch), args.warmup, args.steps, args.device)
    rows.append({"runtime": "eager_engine", "step_ms": seconds * 1e3, "first_loss_diff": 0.0})
    print(f"eager_engine  {seconds * 1e3:8.1f} ms/step", flush=True)

    def run_runner(name, runner, export_seconds):
        first = runner.step(ids, targets, lr, eps, key(0))[0]
        sec, _ = timed(lambda s: runner.step(ids, targets, lr, eps, key(s + 1)), args.warmup, args.steps, args.device)
        rows.append({"runtime": name, "step_ms": sec * 1e3, "first_loss_diff": abs(first - reference),
                     "export_seconds": export_seconds})
        print(f"{name:13s} {sec * 1e3:8.1f} ms/step  (export {export_seconds:.0f} s, "
              f"first-step loss diff {abs(first - reference):.2e})", flush=True)

    run_runner("eager_module", runners.EagerRunner(module), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            start = time.perf_counter()
            try:
                if name == "onnx":
                    if args.device != "cpu":
                        print("onnx: skipped (CPU provider only)")
                        continue
                    step = steps["onnx"]
                    path = exporters.export_onnx(step, Path(tmp) / "step.onnx")
                    runner = runners.OnnxRunner(path, step.initial_inputs())
                elif name == "aoti":
                    path = exporters.export_aoti(steps["aoti"], Path(tmp) / "step.pt2")
                    runner = runners.AotiRunner(path, args.device)
                elif name == "executorch":
                    if args.device != "cpu":
                        print("executorch: skipped (portable CPU kernels)")
                        continue
                    path = exporters.export_executorch(steps["executorch"], Path(tmp) / "step.pte")
                    runner = runners.ExecuTorchRunner(path)
                else:
                    raise ValueError(f"unknown runtime {name}")
            except ImportError as e:
                print(f"{name}: skipped ({e})")
                continue
            run_runner(name, runner, time.perf_counter() - start)

    base = rows[0]["step_ms"]
    for r in rows:
        r["ratio_vs_eager_engine"] = r["step_ms"] / base
    device_name = run_summary.device_name(args.device)
    shape_tag = args.shape + (f"-{args.layers}layers" if args.layers else "")
    tag = f"{shape_tag}_{args.device.split(':')[0]}_q{args.queries}_b{args.batch}_T{args.seq_len}"
    meta = {"shape": shape_tag, "device": args.device, "device_name": device_name, "dtype": "float32",
            "queries": args.queries, "batch": args.batch, "seq_len": args.seq_len,
            "sequences_per_step": 2 * args.queries * args.batch, "torch": torch.__version__,
            "warmup": args.warmup, "timed_steps": args.steps}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_engines_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# Training step through inference runtimes vs the eager engine ({tag})", "",
             f"{device_name}, torch {torch.__version__}, fp32, P-RGE dual q={args.queries}, batch {args.batch}, "
             f"T={args.seq_len} ({2 * args.queries * args.batch} sequences per step), median of {args.steps} "
             "steps after warm-up, all in one run.", "",
             "| runtime | ms/step | × eager engine | export s | first-step loss diff |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['runtime']} | {r['step_ms']:.1f} | {r['ratio_vs_eager_engine']:.2f} | "
                     f"{r.get('export_seconds', 0):.0f} | {r['first_loss_diff']:.1e} |")
    (out / f"bench_engines_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
