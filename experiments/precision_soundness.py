"""Is the zeroth-order signal above the rounding noise of bf16 / fp16? (issue 23, item 2)

For the same batches, the same B and the same z, one P-RGE step's projected gradients
g_i = (L(B + eps z_i) - L(B - eps z_i)) / 2 eps are computed by the model in float32, bfloat16 and
float16. The float32 trainer trains (so B moves along a real trajectory); the low-precision
trainers run with lr = 0 and get the float32 trainer's B copied in before every step, so every
step compares the three precisions at one point. Reported per epsilon, over all steps and
queries: the Pearson correlation of g_low with g_fp32, the relative error ||g_low - g_fp32|| /
||g_fp32||, the share of queries whose g has the fp32 sign, and |g_fp32|'s median beside the
median rounding error |g_low - g_fp32|.

Usage (GPU machine, SmolLM2-135M converted, fine_food CSVs):
  python experiments/precision_soundness.py --model DIR --data-dir DIR --out results/precision
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import prge


def batches(model_dir: Path, data_dir: Path, count: int, batch_size: int, max_length: int, seed: int):
    """`count` training batches of fine_food through prge's own data path."""
    config = prge.parse_run_config(
        f"model: {{name: {json.dumps(str(model_dir))}}}\n"
        f"data: {{task: fine_food, data_dir: {json.dumps(str(data_dir))}, batch_size: {batch_size}, "
        f"max_length: {max_length}, train_examples: 4000, eval_examples: 16}}\n", "precision.yaml")
    from prge.setup import setup_data

    data = setup_data(config)
    from prge.data.batching import BatchSampler

    sampler = BatchSampler(len(data.train), batch_size, seed)
    return [data.encoder.batch([data.train[i] for i in sampler.next()]) for _ in range(count)]


def trainer_for(model_dir: Path, dtype: str, epsilon: float, queries: int, lr: float, seed: int, device: str):
    model = prge.CausalLM.from_pretrained(str(model_dir), device, dtype)
    model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32))
    estimator = prge.EstimatorOptions("prge", queries, epsilon, parallel="dual", rng="counter")
    return model, prge.Trainer(model, estimator, prge.OptimizerOptions(lr=lr), seed)


def compare(args, epsilon: float, data) -> dict:
    reference_model, reference = trainer_for(args.model, "float32", epsilon, args.queries, args.lr, args.seed,
                                             args.device)
    lows = {d: trainer_for(args.model, d, epsilon, args.queries, 0.0, args.seed, args.device)
            for d in args.dtypes}
    g = {"float32": [], **{d: [] for d in lows}}
    for batch in data:
        b = [a["lora_b"].clone() for a in reference_model.adapters()]
        for dtype, (model, trainer) in lows.items():
            for a, value in zip(model.adapters(), b):
                a["lora_b"].copy_(value)
            g[dtype].append(trainer.step(batch).projected_grads)
        g["float32"].append(reference.step(batch).projected_grads)
    ref = torch.tensor(g["float32"], dtype=torch.float64).flatten()
    out = {"epsilon": epsilon, "steps": len(data), "queries": args.queries,
           "median_abs_g_float32": ref.abs().median().item()}
    for dtype in lows:
        low = torch.tensor(g[dtype], dtype=torch.float64).flatten()
        error = low - ref
        out[dtype] = {
            "correlation": torch.corrcoef(torch.stack([low, ref]))[0, 1].item(),
            "relative_error": (error.norm() / ref.norm()).item(),
            "sign_agreement": (torch.sign(low) == torch.sign(ref)).double().mean().item(),
            "median_abs_error": error.abs().median().item(),
            "non_finite": int((~torch.isfinite(low)).sum()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epsilons", default="1e-3,1e-2,1e-1")
    parser.add_argument("--dtypes", default="bfloat16,float16")
    args = parser.parse_args()
    args.dtypes = args.dtypes.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    data = batches(args.model, args.data_dir, args.steps, args.batch, args.max_length, args.seed)
    rows = [compare(args, float(e), data) for e in args.epsilons.split(",")]
    (args.out / "precision_soundness.json").write_text(json.dumps(rows, indent=2))
    lines = ["| epsilon | median abs g (fp32) | " + " | ".join(
        f"{d}: corr / rel. error / sign agreement / median abs error" for d in args.dtypes) + " |",
             "|---|---|" + "---|" * len(args.dtypes)]
    for r in rows:
        cells = [f"{r[d]['correlation']:.4f} / {r[d]['relative_error']:.3f} / {r[d]['sign_agreement']:.3f} / "
                 f"{r[d]['median_abs_error']:.3g}" for d in args.dtypes]
        lines.append(f"| {r['epsilon']:g} | {r['median_abs_g_float32']:.3g} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (args.out / "precision_soundness.md").write_text(
        f"# g in low precision against float32 (same batches, B and z)\n\n{args.steps} steps x {args.queries} "
        f"queries, batch {args.batch}, max_length {args.max_length}, P-RGE dual, counter RNG, seed {args.seed}\n\n"
        f"{table}\n")
    print(table)


if __name__ == "__main__":
    main()
