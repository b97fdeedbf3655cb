"""The multi-GPU run through the product (issue 23, item 3): `prge train` on one GPU and
`torchrun --nproc-per-node N -m prge train` on N, query parallel and data parallel, for each
dtype, on one real task; per run the mean step time, the final accuracy and macro-F1, and the
final B against the one-GPU run of the same dtype (max |B_N - B_1| / max |B_1|).

Usage (GPU machine; model and data as experiments/device/model.sh leaves them):
  python experiments/multi_gpu_product.py --model DIR --data-dir DIR --gpus 2 --out OUT_DIR
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml


def config_for(args, dtype: str, data_parallel: int, out_dir: Path) -> Path:
    base = yaml.safe_load(Path("configs/quickstart.yaml").read_text())
    base["model"].update(name=str(args.model), dtype=dtype, device="cuda")
    base["estimator"].update(queries=args.queries, rng="counter")
    base["data"].update(data_dir=str(args.data_dir), batch_size=args.batch, eval_examples=400)
    base["run"].update(steps=args.steps, eval_every=0, data_parallel=data_parallel, output_dir=str(out_dir))
    path = out_dir.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def train(command: list[str], env: dict) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env)


def final_b(run_dir: Path):
    from safetensors.torch import load_file

    tensors = load_file(str(run_dir / "trained.safetensors"))
    return {k: v.double() for k, v in tensors.items() if not k.startswith("optimizer.")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    runs = args.out / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rows = []
    for dtype in args.dtypes.split(","):
        single = runs / f"{dtype}_1gpu"
        train([sys.executable, "-m", "prge", "train", str(config_for(args, dtype, 1, single)), "--no-progress",
               "--overwrite"], {**env, "CUDA_VISIBLE_DEVICES": "0"})
        reference = json.loads((single / "summary.json").read_text())
        b1 = final_b(single)
        scale = max(v.abs().max().item() for v in b1.values())
        rows.append((dtype, "1 GPU", reference, 0.0, 1.0))
        for mode, data_parallel in (("query parallel", 1), ("data parallel", args.gpus)):
            run = runs / f"{dtype}_{args.gpus}gpu_{mode.split()[0]}"
            train(["torchrun", "--standalone", f"--nproc-per-node={args.gpus}", "-m", "prge", "train",
                   str(config_for(args, dtype, data_parallel, run)), "--no-progress", "--overwrite"], env)
            summary = json.loads((run / "summary.json").read_text())
            bn = final_b(run)
            diff = max((bn[k] - b1[k]).abs().max().item() for k in b1) / scale
            rows.append((dtype, f"{args.gpus} GPUs, {mode}", summary, diff,
                         reference["mean_step_seconds"] / summary["mean_step_seconds"]))
    lines = [f"# prge train on 1 and {args.gpus} GPUs (SmolLM2-135M, fine_food, P-RGE dual q = {args.queries}, "
             f"batch {args.batch}, {args.steps} steps, 400 eval examples)", "",
             "| dtype | run | mean step (ms) | speed-up vs 1 GPU | accuracy before -> after | macro-F1 after | "
             "max abs(B - B_1GPU) / max abs(B_1GPU) |", "|---|---|---|---|---|---|---|"]
    for dtype, name, s, diff, speedup in rows:
        lines.append(f"| {dtype} | {name} | {1e3 * s['mean_step_seconds']:.2f} | {speedup:.2f} | "
                     f"{s['accuracy_before']:.4f} -> {s['accuracy_after']:.4f} | {s['macro_f1_after']:.4f} | "
                     f"{diff:.2e} |")
    table = "\n".join(lines)
    (args.out / "multi_gpu_product.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
