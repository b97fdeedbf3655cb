"""Device-time budget of configs/sweeps/paper_accuracy.yaml before it runs: per task and method,
how long a run takes on the GPU, from what the CPU can measure exactly and the GPU step times
measured earlier.

Measured here, on the CPU (no model weights needed beyond the tokenizer):
  tokens     every training batch the run draws (the sweep's protocol, seed 42), padded to the
             batch's longest sequence and rounded up to 32 as the CUDA step pads it, times the
             2q copies the step evaluates; every evaluation chunk (16 examples, every option of
             every example where options are not single label-word tokens)
  host       the per-step work of the training loop besides the step (sampler, TokenBatch)
  setup      reading the task's files, the protocol's selection and the tokenization
  --cpu-run  optionally, real P-RGE steps and an evaluation on the CPU, timed, to check that
             step and evaluation time grow with these token counts

GPU constants (H200, SmolLM2-135M; STEP_MS names where each was measured): a step's time is
its time at T = 128, scaled by T / 128 when its padded sequences are longer (at 135M a step is
launch-bound below that: no credit for shorter ones); a fixed part (MeZO's weight-sized noise)
is not scaled. Evaluation forwards are eager: one per chunk of 16 examples. Each run adds its
setup and 10 s (model load, CUDA graph captures).

Usage: python experiments/paper_accuracy_budget.py [--model DIR] [--dtype sweep|bfloat16|float32]
           [--cpu-run] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

SWEEP = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "paper_accuracy.yaml"
# method: (batch size, sequences per example per step, steps)
METHODS = {"fo_sgd_lora_fa": (16, 1, 1000), "mezo": (16, 2, 5000), "lora_fa_q1": (16, 2, 5000),
           "prge_q4_dual": (4, 8, 5000), "prge_q16_dual": (1, 32, 5000)}
# (method, dtype): (ms per step at T <= 128, of which a fixed part that does not grow with tokens)
STEP_MS = {
    ("fo_sgd_lora_fa", "bfloat16"): (25.0, 0.0),   # not measured: a guess (~3 eager forwards of 16)
    ("fo_sgd_lora_fa", "float32"): (118.0, 0.0),   # H200, SST-2, Nov 24 (before the fused kernels): an upper bound
    ("mezo", "bfloat16"): (46.0, 41.0),            # 45.7 ms (bench, rng torch, before MeZO's device step): noise + 2 forwards
    ("mezo", "float32"): (56.0, 47.0),             # H200, SST-2, Nov 24 (paper_accuracy_sst2_short)
    ("lora_fa_q1", "bfloat16"): (7.0, 0.0),        # bench_step_smollm2-135m_cuda_bfloat16_T128: zo_lora_fa q=1
    ("lora_fa_q1", "float32"): (29.3, 0.0),        # scaled by P-RGE's float32 / bfloat16 ratio, 17.6 / 4.2
    ("prge_q4_dual", "bfloat16"): (5.0, 0.0),      # bench_step: prge_dual q=4
    ("prge_q4_dual", "float32"): (17.6, 0.0),      # precision_fine_food: float32 runs, H200
    ("prge_q16_dual", "bfloat16"): (5.4, 0.0),     # bench_step: prge_dual q=16
    ("prge_q16_dual", "float32"): (22.7, 0.0),     # scaled by 17.6 / 4.2
}
EVAL_MS_AT_4096 = {"bfloat16": 9.0, "float32": 37.8}  # prge's eager inference forward of 32 x 128 tokens (x 4.2)
EVAL_FLOOR_MS = 7.0
STEP_TOKENS = 32 * 128
EVALUATIONS = {"fo_sgd_lora_fa": 5, "default": 6}  # steps 0, 250 ... 1000; 0, 1000 ... 5000
GRAPH_MULTIPLE = 32


def padded(n: int) -> int:
    return -(-n // GRAPH_MULTIPLE) * GRAPH_MULTIPLE


def task_data(name: str, tokenizer, seed: int = 42):
    from prge.data.batching import PromptEncoder
    from prge.data.tasks import get_task
    from prge.setup import split_protocol

    start = time.perf_counter()
    task = get_task(name)
    data = SimpleNamespace(data_dir="", protocol="paper", train_examples=1000, dev_examples=500, eval_examples=1000,
                           train_from="train")
    train, _, evaluation = split_protocol(task, data, seed)
    encoder = PromptEncoder(task, tokenizer, 512)
    train, evaluation = encoder.encode_all(train, full=False), encoder.encode_all(evaluation)
    return encoder, train, evaluation, time.perf_counter() - start


def training_tokens(encoder, train, batch_size: int, copies: int, steps: int, seed: int = 42):
    """(mean tokens per step as the device step sees them, host seconds per step)."""
    from prge.data.batching import BatchSampler

    sampler = BatchSampler(len(train), min(batch_size, len(train)), seed)
    total, start = 0, time.perf_counter()
    for _ in range(steps):
        batch = encoder.batch([train[i] for i in sampler.next()])
        total += copies * batch.input_ids.shape[0] * padded(batch.input_ids.shape[1])
    return total / steps, (time.perf_counter() - start) / steps


def evaluation_ms(encoder, evaluation, dtype: str) -> float:
    """GPU milliseconds of one evaluation: one eager forward per chunk of 16 examples."""
    ms = 0.0
    for start in range(0, len(evaluation), 16):
        chunk = evaluation[start: start + 16]
        first = chunk[0].options
        if first and all(e.options == first for e in chunk) and all(len(o) == 1 for o in first):
            rows, width = len(chunk), max(len(e.prompt_ids) + 1 for e in chunk)
        else:
            rows = sum(len(e.options) for e in chunk)
            width = max(len(e.prompt_ids) + len(o) for e in chunk for o in e.options)
        ms += max(EVAL_FLOOR_MS, EVAL_MS_AT_4096[dtype] * rows * width / STEP_TOKENS)
    return ms


def cpu_run(model_dir: Path, task: str, steps: int, eval_examples: int) -> dict:
    """Real P-RGE q=4 dual steps and one evaluation on the CPU, timed, with their token counts."""
    import prge
    from prge.data.batching import BatchSampler
    from prge.evaluation import evaluate
    from prge.setup import setup_data, setup_model

    config = prge.parse_run_config(
        f"model: {{name: '{model_dir}'}}\nadapter: {{rank: 16, alpha: 32}}\n"
        "estimator: {kind: prge, queries: 4, parallel: dual, epsilon: 1.0e-2}\noptimizer: {lr: 1.0e-4}\n"
        f"data: {{task: {task}, train_examples: 1000, eval_examples: {eval_examples}, batch_size: 4, "
        "max_length: 512}\n")
    start = time.perf_counter()
    data = setup_data(config)
    trainer = prge.Trainer(setup_model(config, data), config.estimator, config.optimizer, 42)
    setup = time.perf_counter() - start
    sampler = BatchSampler(len(data.train), 4, 42)
    step_s, step_tokens = [], 0
    for _ in range(steps):
        batch = data.encoder.batch([data.train[i] for i in sampler.next()])
        step_tokens += 8 * batch.input_ids.numel()
        start = time.perf_counter()
        trainer.step(batch)
        step_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    evaluate(trainer, data.encoder, data.eval)
    eval_s = time.perf_counter() - start
    return {"task": task, "setup_s": setup, "step_s": sum(step_s[1:]) / (steps - 1),
            "step_tok_s": step_tokens / sum(step_s), "eval_s": eval_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory (default: smollm2-135m)")
    parser.add_argument("--sample-steps", type=int, default=500, help="training batches drawn per method to average")
    parser.add_argument("--dtype", choices=("sweep", "bfloat16", "float32"), default="sweep",
                        help="model.dtype of the GPU runs: each method's as the sweep sets it, or one for all")
    parser.add_argument("--cpu-run", action="store_true", help="also time short real runs on the CPU")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import yaml

    from prge.data.tokens import ModelTokenizer
    from prge.models import resolve_model

    model_dir = Path(args.model) if args.model else resolve_model("smollm2-135m")
    tokenizer = ModelTokenizer(model_dir)
    spec = yaml.safe_load(SWEEP.read_text())
    tasks, seeds = spec["grid"]["data.task"], len(spec["grid"]["run.seed"])
    dtypes = {v["name"]: (v.get("model.dtype", "float32") if args.dtype == "sweep" else args.dtype)
              for v in spec["variants"]}
    lines = ["GPU estimate, SmolLM2-135M, H200: minutes per run (ms per step, tokens per step); model.dtype: " +
             ", ".join(f"{m} {d}" for m, d in dtypes.items()), "",
             "| task | setup s | " + " | ".join(f"{m} min/run" for m in METHODS) + " |",
             "|---|---|" + "---|" * len(METHODS)]
    totals = {m: 0.0 for m in METHODS}
    host_ms = []
    for name in tasks:
        encoder, train, evaluation, setup_s = task_data(name, tokenizer)
        cells = []
        for method, (b, copies, steps) in METHODS.items():
            ms, fixed = STEP_MS[method, dtypes[method]]
            eval_s = evaluation_ms(encoder, evaluation, dtypes[method]) / 1000
            tokens, host = training_tokens(encoder, train, b, copies, args.sample_steps)
            host_ms.append(host * 1000)
            step_ms = fixed + (ms - fixed) * max(1.0, tokens / (b * copies * 128))
            evaluations = EVALUATIONS.get(method, EVALUATIONS["default"])
            seconds = steps * (step_ms / 1000 + host) + evaluations * eval_s + setup_s + 10  # + start, model load
            totals[method] += seconds * seeds
            cells.append(f"{seconds / 60:.1f} ({step_ms:.1f} ms/step, {tokens:.0f} tok, eval {eval_s:.1f} s)")
        lines.append(f"| {name} | {setup_s:.1f} | " + " | ".join(cells) + " |")
    lines.append("| **all tasks x %d seeds** | | " % seeds +
                 " | ".join(f"**{totals[m] / 3600:.2f} h**" for m in METHODS) + " |")
    text = "\n".join(lines)
    text += (f"\n\nSum over methods: {sum(totals.values()) / 3600:.2f} GPU-hours (one GPU; `--gpus 0,1` halves the "
             f"wall time). Host work per step measured here: {min(host_ms):.2f}-{max(host_ms):.2f} ms.\n")
    if args.cpu_run:
        runs = [cpu_run(model_dir, task, 4, 48) for task in ("sst2", "multirc", "arc_easy")]
        text += "\nShort CPU runs (P-RGE q=4 dual, 4 steps (the first not counted), an evaluation of 48 examples):\n"
        for r in runs:
            text += (f"- {r['task']}: setup {r['setup_s']:.1f} s, {r['step_s']:.2f} s/step "
                     f"({r['step_tok_s']:.0f} tokens/s), evaluation {r['eval_s']:.2f} s\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
