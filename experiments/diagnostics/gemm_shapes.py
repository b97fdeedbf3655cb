"""The frozen GEMMs of one decoder layer, each in the forms prge or transformers could call it:
at::linear (what the gated-kernel path and transformers call), an addmm into an output that already
holds the low-rank term (beta = 1, prge's GEMM path), and, for the fused gate_up projection, two
GEMMs writing the two halves of one output (column views, row stride 2f) or two separate outputs
(transformers' gate_proj and up_proj). Prints ms per call (CUDA events, median) and TFLOP/s.

A diagnosis tool for issue 22 item 6 (is cuBLAS's choice for the fused [gate | up] shape slower
than for its halves?), not a benchmark of prge's step.

    python experiments/diagnostics/gemm_shapes.py --shape qwen2.5-1.5b --rows 8192
"""
from __future__ import annotations

import argparse
import statistics

import torch

from prge.models import SHAPES


def timed(fn, repeats: int, calls: int = 10) -> float:
    """ms a call: the median over `repeats` of `calls` calls between two CUDA events (the host
    launches run ahead of the GPU, so launch overhead is not counted)."""
    for _ in range(5):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for start, end in zip(starts, ends):
        start.record()
        for _ in range(calls):
            fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-1.5b")
    parser.add_argument("--rows", type=int, default=8192, help="tokens in one forward (32 sequences x 256)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    head_dim = shape.get("head_dim", hidden // shape["num_attention_heads"])
    qkv = (shape["num_attention_heads"] + 2 * shape["num_key_value_heads"]) * head_dim
    opts = dict(device="cuda", dtype=torch.bfloat16)
    x_h = torch.randn(args.rows, hidden, **opts)
    x_i = torch.randn(args.rows, inter, **opts)
    print(f"{args.shape}: rows {args.rows}, hidden {hidden}, intermediate {inter}, qkv {qkv}; "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| projection | form | ms | TFLOP/s | x at::linear |")
    print("|---|---|---|---|---|")

    def report(name: str, flops: float, forms: dict) -> None:
        base = None
        for form, fn in forms.items():
            ms = timed(fn, args.repeats)
            base = base or ms
            print(f"| {name} | {form} | {ms:.3f} | {flops / ms / 1e9:.0f} | {ms / base:.3f} |")

    for name, x, out, bias in (("qkv", x_h, qkv, shape.get("qkv_bias", False)), ("o", x_h, hidden, False),
                               ("gate_up", x_h, 2 * inter, False), ("down", x_i, hidden, False)):
        w = torch.randn(out, x.size(1), **opts) * 0.02
        b = torch.randn(out, **opts) if bias else None
        y = torch.empty(args.rows, out, **opts)
        flops = 2.0 * args.rows * x.size(1) * out
        forms = {"at::linear": lambda: torch.nn.functional.linear(x, w, b)}
        if b is None:
            forms["addmm beta 1"] = lambda: y.addmm_(x, w.t())
        else:  # with a bias prge's GEMM path writes x W^T + bias first and the term adds into it
            forms["addmm with bias (prge's bias path)"] = lambda: torch.addmm(b, x, w.t(), out=y)
        if name == "gate_up":
            half = out // 2
            gate, up = w[:half], w[half:]
            forms["halves into one output"] = lambda: (torch.mm(x, gate.t(), out=y[:, :half]),
                                                       torch.mm(x, up.t(), out=y[:, half:]))
            forms["two outputs"] = lambda: (torch.nn.functional.linear(x, gate), torch.nn.functional.linear(x, up))
            forms["halves, addmm beta 1"] = lambda: (y[:, :half].addmm_(x, gate.t()), y[:, half:].addmm_(x, up.t()))
        report(name, flops, forms)


if __name__ == "__main__":
    main()
