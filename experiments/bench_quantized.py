"""P-RGE over quantized frozen weights (issue 25): step time and peak memory of a P-RGE dual step
over an int4 / int8 / dense base, beside the first-order peer a user would pick instead (peft
LoRA with backprop on transformers, same sequences), and the frozen-GEMM choice itself: a layer's
weight dequantized right before a dense GEMM (what prge runs) against ATen's weight-only int4 /
int8 matmuls, at P-RGE's token counts and at a decoding step's. Every row of a table comes from
one run; each model row runs in its own process, so peak memory is its own.

  python experiments/bench_quantized.py --device cuda --shape llama2-7b --seq-len 256 --out DIR
  python experiments/bench_quantized.py --device cpu --shape smollm2-135m --seq-len 64 --out DIR
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

QB = 16  # q * b: sequences per estimate, as in bench_step.py


def timed(fn, warmup: int, steps: int, device: str) -> float:
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def reset_peak(device: str) -> None:
    """Start counting the peak here: the CUDA allocator's, or (Linux) the process's resident
    high-water mark, so weights made dense before quantizing at load do not count."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")


def peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    status = Path("/proc/self/status")
    if status.exists():  # VmHWM, reset by reset_peak
        line = next(l for l in status.read_text().splitlines() if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 2**20  # KiB -> GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def one_row(args) -> dict:
    """One model row, in this process: P-RGE dual over the base, or the peft LoRA peer."""
    import prge
    from prge.models import shape_config
    from prge.speed import random_batch

    spec = shape_config(args.shape)
    queries = args.queries
    batch = random_batch(spec.vocab_size, QB // queries, args.seq_len)
    if args.row == "peft":
        return peft_row(args, spec, batch)
    quantize, group = {"bf16": ("none", 0), "fp32": ("none", 0), "int8": ("int8", 0),
                       "int4": ("int4", 64), "int4g128": ("int4", 128)}[args.row]
    dtype = "float32" if args.row == "fp32" or (args.device == "cpu" and args.row != "bf16") else args.dtype
    model = prge.CausalLM.random(spec, 0, args.device, dtype, quantize, group)
    model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32))
    trainer = prge.Trainer(model, prge.EstimatorOptions("prge", queries, 1e-2, parallel="dual"),
                           prge.OptimizerOptions(lr=5e-5), 0)
    reset_peak(args.device)  # the steps' peak: random() makes dense weights before quantizing
    seconds = timed(lambda: trainer.step(batch), args.warmup, args.steps, args.device)
    base = f"{quantize} group {group}" if quantize == "int4" else args.row
    return {"row": f"P-RGE dual, {base} base", "queries": queries, "ms": 1e3 * seconds,
            "peak_gib": peak_gib(args.device), "projection_gib": model.projection_bytes / 2**30,
            "step_path": trainer.step_path}


def peft_row(args, spec, batch) -> dict:
    """peft LoRA (rank 16, all 7 projections) with backprop, bf16, the estimate's QB sequences."""
    from peft import LoraConfig, get_peft_model

    sys.path.insert(0, str(Path(__file__).parent))
    from peers import transformers_model

    dtype = getattr(torch, args.dtype)
    base = transformers_model(spec, dtype, args.device)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = batch.input_ids.repeat(args.queries, 1).to(args.device)
    targets = batch.targets.repeat(args.queries, 1).to(args.device)

    def step():
        logits = model(ids).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                 targets[:, 1:].reshape(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed(step, args.warmup, args.steps, args.device)
    return {"row": f"peft LoRA + backprop, {args.dtype}, {QB} sequences", "queries": 0, "ms": 1e3 * seconds,
            "peak_gib": peak_gib(args.device), "projection_gib": float("nan"), "step_path": "autograd"}


def gemm_rows(args) -> list[dict]:
    """One projection [out, in] of the shape, M tokens: dequantize + dense GEMM against ATen's
    weight-only kernels (int4: _weight_int4pack_mm, bf16 on CUDA; int8: _weight_int8pack_mm)."""
    import prge
    from prge.models import shape_config

    spec = shape_config(args.shape)
    out_f, in_f = spec.intermediate_size, spec.hidden_size
    dtype = getattr(torch, args.dtype if args.device.startswith("cuda") else "float32")
    w = torch.randn(out_f, in_f, device=args.device, dtype=dtype) * 0.02
    rows = []
    for tokens in (2 * QB * args.seq_len, 16):
        x = torch.randn(tokens, in_f, device=args.device, dtype=dtype)
        dense = timed(lambda: x @ w.t(), 3, 20, args.device)
        row = {"tokens": tokens, "shape": f"{out_f}x{in_f}", "dense_ms": 1e3 * dense}
        for bits, group in ((4, 64), (8, in_f)):
            q = prge.quantize_weight(w, bits, group)
            name = str(dtype).removeprefix("torch.")
            row[f"int{bits}_aten_dequant_gemm_ms"] = 1e3 * timed(lambda: x @ q.dequantize(name).t(), 3, 20, args.device)
            if args.device.startswith("cuda") and prge.cuda_built:  # what prge runs on the GPU: one kernel, one buffer
                buffer = torch.empty_like(w)
                row[f"int{bits}_dequant_gemm_ms"] = 1e3 * timed(
                    lambda: x @ prge._core.layer_kernels.dequantize(q, buffer).t(), 3, 20, args.device)
            else:
                row[f"int{bits}_dequant_gemm_ms"] = row[f"int{bits}_aten_dequant_gemm_ms"]
            try:
                row[f"int{bits}_aten_ms"] = 1e3 * timed(aten_weight_only(x, w, bits, group), 3, 20, args.device)
            except (RuntimeError, NotImplementedError, AttributeError) as e:
                row[f"int{bits}_aten_ms"] = f"n/a ({type(e).__name__})"
        rows.append(row)
    return rows


def aten_weight_only(x, w, bits, group):
    """ATen's weight-only matmul on w quantized its way, as a callable."""
    if bits == 8:
        scales = (w.abs().amax(1).float() / 127).clamp_min(1e-12)
        q = torch.round(w.float() / scales[:, None]).clamp(-127, 127).to(torch.int8)
        return lambda: torch.ops.aten._weight_int8pack_mm(x, q, scales.to(x.dtype))
    from torch.ao.quantization.fx._decomposed import quantize_per_channel_group  # noqa: F401 (presence check)

    n, k = w.shape
    wf = w.float().view(n, k // group, group)
    low, high = wf.amin(-1), wf.amax(-1)
    scale = ((high - low) / 15).clamp_min(1e-12)
    q = torch.round((wf - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).view(n, k)
    zero = low + 8 * scale  # tinygemm: w = (q - 8) * scale + zero
    scales_and_zeros = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(x.dtype)
    if x.is_cuda:
        packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)
        return lambda: torch.ops.aten._weight_int4pack_mm(x, packed, group, scales_and_zeros)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 8)
    return lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group, scales_and_zeros)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", default="tinyllama-1.1b")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--queries", default="4,16")
    parser.add_argument("--rows", default="bf16,int8,int4,int4g128,peft")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--row", help=argparse.SUPPRESS)  # child process: one row
    args = parser.parse_args()
    if args.row:
        args.queries = int(args.queries)
        print(json.dumps(one_row(args)))
        return
    results = []
    for row in args.rows.split(","):
        for q in ([4] if row == "peft" else [int(v) for v in args.queries.split(",")]):
            child = [sys.executable, __file__, "--device", args.device, "--shape", args.shape, "--seq-len",
                     str(args.seq_len), "--dtype", args.dtype, "--queries", str(q), "--row", row,
                     "--warmup", str(args.warmup), "--steps", str(args.steps)]
            done = subprocess.run(child, capture_output=True, text=True)
            if done.returncode != 0:
                results.append({"row": row, "queries": q, "error": done.stderr.strip().splitlines()[-1][:200]})
            else:
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    gemm = gemm_rows(args)
    peak = ("the CUDA allocator's peak during the steps" if args.device.startswith("cuda") else
            "the process's resident high-water mark during the steps (VmHWM, libtorch and the unquantized "
            "embedding included)")
    lines = [f"# P-RGE over quantized bases: {args.shape}, T = {args.seq_len}, {args.device}, q·b = {QB}",
             "", f"Peak GiB: {peak}.", "", "| row | q | ms / step | peak GiB | frozen projections GiB | step path |", "|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['queries']} | error: {r['error']} | | | |")
        else:
            lines.append(f"| {r['row']} | {r['queries'] or '-'} | {r['ms']:.1f} | {r['peak_gib']:.2f} | "
                         f"{r['projection_gib']:.2f} | {r['step_path']} |")
    lines += ["", "Frozen GEMM of one MLP projection (ms): dense; dequantize + dense GEMM, as prge runs it (one "
              "kernel into a buffer on the GPU) and with ATen's elementwise ops; ATen's weight-only kernels",
              "", "| tokens | shape | dense | int4 dequant+GEMM | int4 ATen dequant+GEMM | int4 ATen weight-only "
              "| int8 dequant+GEMM | int8 ATen dequant+GEMM | int8 ATen weight-only |",
              "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    for g in gemm:
        cells = [g["tokens"], g["shape"], fmt(g["dense_ms"])]
        for bits in (4, 8):
            cells += [fmt(g[f"int{bits}_{k}_ms"]) for k in ("dequant_gemm", "aten_dequant_gemm", "aten")]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"bench_quantized_{args.shape}_{args.device.split(':')[0]}_T{args.seq_len}"
        (args.out / f"{stem}.md").write_text(table)
        (args.out / f"{stem}.json").write_text(json.dumps({"models": results, "gemm": gemm}, indent=2))


if __name__ == "__main__":
    main()
