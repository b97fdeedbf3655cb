"""GPU time of one run of configs/sweeps/paper_accuracy.yaml at a model shape whose weights these
machines do not hold (TinyLlama-1.1B, Llama-2-7B): issue 26's "expected GPU time per run measured
at those shapes".

What it does:
  1. makes a random-weight Llama model directory of the shape (transformers' LlamaForCausalLM at
     the shape's sizes, bfloat16 safetensors), with another model's tokenizer files and that
     tokenizer's vocabulary size (TinyLlama and Llama-2 have 32000 entries; the difference is one
     row block of the embedding and the LM head);
  2. runs every method of the sweep on one task and seed for a short part of its steps, with the
     same number of evaluations as the full run (every evaluation is the task's real eval set);
  3. extrapolates the full run: the short run's wall time (process start aside: load, CUDA-graph
     captures, evaluations, steps) + (full steps - short steps) x its mean step time.

Step time does not depend on weight values; how long evaluations take does not either. What a
random model does not reproduce: nothing the timing uses.

    python experiments/paper_run_time.py --shape tinyllama-1.1b --tokenizer-from DIR --model-dir /tmp/tl \
        --task sst2 --out experiments/results/paper_run_time_tinyllama-1.1b.md
    python experiments/paper_run_time.py --shape tiny-debug --device cpu --tokenizer-from DIR \
        --model-dir /tmp/tiny --steps 10 --set data.eval_examples=20     # a check of the script
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "configs" / "sweeps" / "paper_accuracy.yaml"
NOT_TOKENIZER = {"config.json", "generation_config.json", "model.safetensors", "prge_conversion.json",
                 "prge_quantized.safetensors"}


def make_model(shape: str, tokenizer_dir: Path, out: Path, device: str) -> Path:
    """A random-weight LlamaForCausalLM of `shape` (prge.models.SHAPES) in `out`, reused when
    `out` already holds one of that shape."""
    import torch
    import transformers

    from prge.models import SHAPES

    sizes = dict(SHAPES[shape])
    if sizes.get("model_type", "llama") != "llama":
        raise SystemExit(f"--shape {shape}: a Llama shape is needed (tinyllama-1.1b, llama2-7b, ...)")
    tokenizer_config = json.loads((tokenizer_dir / "config.json").read_text())
    sizes["vocab_size"] = tokenizer_config["vocab_size"]
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if tokenizer_config.get(key) is not None:
            sizes[key] = tokenizer_config[key]
    marker = out / "paper_run_time.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"shape": shape, "sizes": sizes}:
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = transformers.LlamaConfig(**sizes)
    started = time.monotonic()
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    del model
    for path in tokenizer_dir.iterdir():
        if path.is_file() and path.name not in NOT_TOKENIZER:
            shutil.copy(path, out / path.name)
    marker.write_text(json.dumps({"shape": shape, "sizes": sizes}))
    print(f"[paper_run_time] {shape}: random model written to {out} in {time.monotonic() - started:.0f} s", flush=True)
    return out


def short_sweep(task: str, seed: int, steps: int, path: Path) -> dict[str, tuple[int, int]]:
    """Writes the sweep at `path`: every variant of the paper sweep on one task and seed, each at
    `steps` steps (FO-SGD: a fifth of them) with its full run's number of evaluations. Returns
    {variant: (full steps, short steps)}."""
    spec = yaml.safe_load(SWEEP.read_text())
    spec["base"] = str((SWEEP.parent / spec["base"]).resolve())
    base_every = int(yaml.safe_load(Path(spec["base"]).read_text())["run"]["eval_every"])
    spec["grid"] = {"data.task": [task], "run.seed": [seed]}
    spec.pop("report", None)
    planned = {}
    for variant in spec["variants"]:
        full, every = int(variant["run.steps"]), int(variant.get("run.eval_every", base_every))
        evaluations = full // every  # besides the one before training
        short = max(evaluations, steps if full >= 5000 else steps // 5) // evaluations * evaluations
        variant["run.steps"], variant["run.eval_every"] = short, short // evaluations
        planned[variant["name"]] = (full, short)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return planned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", required=True)
    parser.add_argument("--tokenizer-from", required=True, type=Path,
                        help="a model directory whose tokenizer files (and vocab_size) the random model takes")
    parser.add_argument("--model-dir", required=True, type=Path, help="where the random model is written")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--steps", type=int, default=200, help="short run's steps (FO-SGD: a fifth)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out")
    args = parser.parse_args()

    from prge.sweep import run_sweep

    model = make_model(args.shape, args.tokenizer_from, args.model_dir, args.device)
    # A fixed place per shape, so that a second call (a device call's time limit) skips the
    # methods whose short runs finished and resumes the one in flight.
    work = Path(tempfile.gettempdir()) / "paper_run_time" / f"{args.shape}-{args.task}-{args.steps}"
    work.mkdir(parents=True, exist_ok=True)
    planned = short_sweep(args.task, args.seed, args.steps, work / "sweep.yaml")
    overrides = [("model.name", str(model)), ("model.device", args.device)]
    overrides += [tuple(item.split("=", 1)) for item in args.set]
    summaries = run_sweep(work / "sweep.yaml", progress=False, overrides=overrides, output_root=str(work / "runs"))
    by_variant = dict(zip(planned, summaries))  # one task and seed: one run per variant, in the sweep's order
    lines = [f"# GPU time per run of configs/sweeps/paper_accuracy.yaml at the {args.shape} shape (random weights)", "",
             f"`python experiments/paper_run_time.py --shape {args.shape} --task {args.task} --steps {args.steps}"
             f"{''.join(' --set ' + s for s in args.set)}`, device {args.device}. Each method ran its short run "
             "with the full run's number of evaluations; the full run's time is the short run's wall time + "
             "(full steps - short steps) x its mean step time.", "",
             "| method | dtype | short run steps | ms / step | short run wall s | full run steps | full run min (estimated) |",
             "|---|---|---|---|---|---|---|"]
    for name, (full, short) in planned.items():
        s = by_variant[name]
        step_s, wall = s["mean_step_seconds"], s["wall_seconds"]
        estimate = (wall + (full - short) * step_s) / 60
        lines.append(f"| {name} | {s.get('dtype')} | {short} | {1e3 * step_s:.1f} | {wall:.0f} | {full} | {estimate:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
