"""The gated low-rank kernel's own time at a bench_step.py shape, for each tile configuration.

prge compiles csrc/prge/cuda/triton/gated_low_rank.py ahead of time with one tile (compile_kernels.py's
GATED_BLOCK_M, GATED_BLOCK_N, GATED_WARPS, GATED_STAGES). Session 33's profile of a Qwen2.5-1.5B
P-RGE step showed the then-compiled tile (64 x 128) at 203 us a call with one copy of B and 251 us
with 32, where session 30's autotuned probe of the same computation took 141-144 us; session 34
ran this and compiled the tile it chose (32 x 128) instead. This times, at the
shape's MLP (32 sequences x T rows, the shape's f, rank 16 per part, as bench_step.py):
  - the compiled variant, through prge._core.layer_kernels.gated_low_rank;
  - the same source, compiled here by Triton's JIT, at each tile configuration below (its output
    compared with the compiled variant's: the same source must give the same bits at its tile);
  - session 30's probe (experiments/attempts/gated_low_rank/, no masks, autotuned over its own
    seven tiles), with the tile its autotuning chose;
  - prge's SwiGLU kernel (no term) and torch.compile's silu(gate) * up, as floors.
Prints microseconds a call (CUDA events around 10 calls, median) and the bandwidth each reaches over
the bytes the kernel must move (gate_up read, output written; with 32 copies each tile also reads
its copy's B, mostly from L2, which the figure leaves out).

    python experiments/diagnostics/gated_kernel_tiles.py --shape qwen2.5-1.5b [--seq-len 256] [--json T.json]
    python experiments/diagnostics/gated_kernel_tiles.py --choose T1.json T2.json   # prints "M N WARPS STAGES"

--choose picks, from the JSON files of several shapes, the JIT tile with the least summed time at the
largest copy count all of them measured (the P-RGE step's case; it says which on stderr), the summed
one-copy time breaking ties; only tiles measured at every shape take part. compile_kernels.py's
GATED_* constants are where a choice lands (session 34: 32 128 4 1, from bf16, rank 16, SiLU).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

import prge
from prge.models import SHAPES

from gemm_shapes import timed  # this folder's: CUDA events, median, in ms

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "csrc/prge/cuda/triton/gated_low_rank.py"
PROBE = ROOT / "experiments/attempts/gated_low_rank/bench_gated_low_rank_triton.py"  # session 30's, autotuned
SEQUENCES, RANK, SCALING = 32, 16, 2.0
TILES = [  # BLOCK_M, BLOCK_N, num_warps, num_stages; the first was the build's until session 34. Registers a thread
    # (ptxas for sm_90, Triton 3.6): 64 x 128 / 4 warps 255 with a spill (8 warps an SM can hold);
    # 16 x 64 / 4: 48, 32 x 64 / 8: 40, 16 x 128 / 8: 55, 32 x 64 / 4: 72, 32 x 128 / 8: 78, 32 x 128 / 4
    # (the build's since session 34): 126.
    (64, 128, 4, 2), (64, 128, 8, 1), (64, 64, 4, 1), (64, 64, 8, 1), (32, 128, 8, 1), (32, 128, 4, 1),
    (32, 64, 8, 1), (32, 64, 4, 1), (16, 128, 8, 1), (16, 128, 4, 1), (16, 64, 4, 1), (16, 256, 8, 1),
    (32, 128, 4, 2), (32, 128, 8, 2)]  # the last two added after session 34 (the probe's pick has 2 stages)


def timed_us(fn) -> float:
    return timed(fn, repeats=20) * 1e3


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-1.5b")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--copies", default="1,32", help="copies of B (1: unperturbed, 32: P-RGE dual q = 16)")
    parser.add_argument("--ttgir", type=Path, help="write each JIT tile's Triton GPU IR here (its layouts)")
    parser.add_argument("--json", type=Path, help="also write each JIT tile's time here, for --choose")
    parser.add_argument("--choose", type=Path, nargs="+", metavar="JSON",
                        help="print the tile to compile, chosen from these files' times (nothing is run)")
    args = parser.parse_args()
    if args.choose:
        try:
            shapes = [json.loads(path.read_text()) for path in args.choose]
        except (OSError, ValueError) as error:
            sys.exit(f"gated_kernel_tiles: error: {error}")
        print(*choose(shapes, [str(path) for path in args.choose]))
        return
    import triton  # here: --choose runs where Triton is not installed

    f = SHAPES[args.shape]["intermediate_size"]
    rows = SEQUENCES * args.seq_len
    # As the build compiles it: rows and rows_per_copy without the JIT's divisibility specialization.
    kernel = triton.jit(load(SOURCE, "prge_gated_low_rank_source").gated_low_rank.fn,
                        do_not_specialize=["rows", "rows_per_copy"])
    probe = load(PROBE, "prge_gated_low_rank_probe")
    gen = torch.Generator(device="cuda").manual_seed(0)
    opts = dict(device="cuda", dtype=torch.bfloat16)
    gate_up = torch.randn(rows, 2 * f, generator=gen, **opts)
    ax = torch.randn(rows, 2 * RANK, generator=gen, **opts)
    moved = (gate_up.numel() + rows * f) * gate_up.element_size()
    print(f"{args.shape}: {rows} rows, f {f}, rank {RANK} per part, bf16; {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}; bytes a call must move: {moved / 1e6:.0f} MB")
    print("| copies | kernel | tile (M, N, warps, stages) | registers, spills | us | TB/s | same bits as compiled |")
    print("|---|---|---|---|---|---|---|")

    timings = {"shape": args.shape, "seq_len": args.seq_len, "tiles": []}  # JIT tiles, for --choose

    def row(copies, name, tile, us, same="-", registers="-"):
        if name == "the source, Triton JIT":
            timings["tiles"].append({"copies": copies, "tile": list(tile), "us": us})
        print(f"| {copies} | {name} | {tile} | {registers} | {us:.1f} | {moved / us / 1e6:.2f} | {same} |")

    swiglu = prge._core.layer_kernels.swiglu
    row("-", "prge SwiGLU (no term)", "-", timed_us(lambda: swiglu(gate_up)))
    compiled_silu = torch.compile(lambda gu: torch.nn.functional.silu(gu[:, :f]) * gu[:, f:])
    row("-", "torch.compile silu(gate) * up (no term)", "-", timed_us(lambda: compiled_silu(gate_up)))
    for copies in (int(c) for c in args.copies.split(",")):
        stack = torch.zeros(copies, 2 * f, 2 * RANK, device="cuda")
        stack[:, :f, :RANK] = 0.02 * torch.randn(copies, f, RANK, generator=gen, device="cuda")
        stack[:, f:, RANK:] = 0.02 * torch.randn(copies, f, RANK, generator=gen, device="cuda")
        stack = stack.to(torch.bfloat16)
        aot = prge._core.layer_kernels.gated_low_rank
        per_copy = rows // copies
        gate_up3, ax3 = gate_up.view(copies, per_copy, -1), ax.view(copies, per_copy, -1)
        want = aot(gate_up3, ax3, stack, SCALING, "silu")
        row(copies, "compiled variant (prge)", "build's", timed_us(lambda: aot(gate_up3, ax3, stack, SCALING, "silu")))
        if rows % 128 == 0 and f % 256 == 0 and per_copy % 128 == 0:  # what the probe's tiles need
            us = timed_us(lambda: probe.fused(gate_up, ax, stack, per_copy))
            best = probe.gated_low_rank.best_config
            tile = (best.kwargs["BLOCK_M"], best.kwargs["BLOCK_N"], best.num_warps, best.num_stages)
            row(copies, "session 30's probe, autotuned", tile, us, "n/a (silu(g) not rounded first)")
        out = torch.empty(rows, f, **opts)
        for bm, bn, warps, stages in TILES:
            if copies > 1 and per_copy < bm:
                continue

            def launch(bm=bm, bn=bn, warps=warps, stages=stages):
                grid = (triton_cdiv(rows, bm), triton_cdiv(f, bn))
                return kernel[grid](gate_up, ax, stack, out, rows, f, per_copy, SCALING, gate_up.stride(0),
                                    ax.stride(0), stack.stride(0), stack.stride(1), out.stride(0), R=RANK, GELU=0,
                                    BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)
            us = timed_us(launch)
            compiled = launch()
            if args.ttgir:
                args.ttgir.mkdir(parents=True, exist_ok=True)
                (args.ttgir / f"gated_low_rank_{bm}x{bn}_w{warps}_s{stages}.ttgir").write_text(compiled.asm["ttgir"])
            same = bool(torch.equal(out.view_as(want), want))
            row(copies, "the source, Triton JIT", (bm, bn, warps, stages), us, same,
                f"{compiled.n_regs}, {compiled.n_spills}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(timings, indent=1))


def choose(shapes: list[dict], names: list[str]) -> tuple[int, ...]:
    """The tile (M, N, warps, stages) with the least time summed over `shapes` (the --json files'
    contents, `names` their paths) at the largest copy count that every shape measured, ties broken
    by the summed one-copy time, then by the tile. Says on stderr which copy count decided. Exits
    with a message naming the file when one holds no tile times, and when no tile was measured at
    that count at every shape."""
    times: dict[tuple, dict[tuple[int, int], float]] = {}  # tile -> (shape index, copies) -> us
    counts = []
    for index, (shape, name) in enumerate(zip(shapes, names)):
        tiles = shape.get("tiles") if isinstance(shape, dict) else None
        if not isinstance(tiles, list) or not tiles:
            sys.exit(f"gated_kernel_tiles: error: {name}: no tile times (expected --json's output)")
        try:
            for t in tiles:
                times.setdefault(tuple(t["tile"]), {})[(index, int(t["copies"]))] = float(t["us"])
        except (KeyError, TypeError, ValueError) as error:
            sys.exit(f"gated_kernel_tiles: error: {name}: a tile entry without tile / copies / us ({error!r})")
        counts.append({int(t["copies"]) for t in tiles})
    common = set.intersection(*counts)
    if not common:
        sys.exit("gated_kernel_tiles: error: the files share no copy count: " +
                 "; ".join(f"{name}: {sorted(c)}" for name, c in zip(names, counts)))
    most = max(common)
    scored = []
    for tile, by in times.items():
        if all((i, most) in by for i in range(len(shapes))):
            at_one = sum(by[(i, 1)] for i in range(len(shapes))) if all((i, 1) in by for i in range(len(shapes))) \
                else float("inf")
            scored.append((sum(by[(i, most)] for i in range(len(shapes))), at_one, tile))
    if not scored:
        sys.exit(f"gated_kernel_tiles: error: no tile was measured with {most} copies at every shape given to --choose")
    print(f"gated_kernel_tiles: chosen at {most} copies of B over {len(shapes)} shape(s)", file=sys.stderr)
    return min(scored)[2]


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


if __name__ == "__main__":
    main()
