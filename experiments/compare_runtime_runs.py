"""Compare a run of the eager C++ engine with the same run through an inference runtime
(`prge train CONFIG` vs `prge train CONFIG --runtime RUNTIME`): per-step losses, accuracy,
seconds per step and the trained B. Writes a Markdown table.

  python experiments/compare_runtime_runs.py runs/runtime_fine_food/eager runs/runtime_fine_food/onnx \
      --out experiments/results/engine_fine_food.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eager")
    parser.add_argument("engine")
    parser.add_argument("--out")
    args = parser.parse_args()
    eager, engine = Path(args.eager), Path(args.engine)
    se, sr = (json.loads((p / "summary.json").read_text()) for p in (eager, engine))
    le, lr = losses(eager), losses(engine)
    common = sorted(set(le) & set(lr))
    rel = [abs(lr[s] - le[s]) / abs(le[s]) for s in common]
    be, br = (load_file(str(p / "trained.safetensors")) for p in (eager, engine))
    keys = sorted(k for k in be if "lora_b" in k)
    b_diff = max((be[k] - br[k]).abs().max().item() for k in keys)
    b_scale = max(be[k].abs().max().item() for k in keys)
    runtime = sr.get("runtime", sr.get("engine", "runtime"))
    lines = [
        f"# {se['model']} on {se['task']}: eager C++ engine vs {runtime} (same config, seed, batches)", "",
        f"P-RGE dual q={se['queries']}, {se['steps']} steps, counter RNG; CPU fp32. Accuracy is measured by prge's "
        "model with each run's trained B.", "",
        f"| engine | accuracy before | accuracy after | s/step |", "|---|---|---|---|",
        f"| eager (prge C++) | {se['accuracy_before']:.3f} | {se['accuracy_after']:.3f} | {se['mean_step_seconds']:.2f} |",
        f"| {runtime} | {sr['accuracy_before']:.3f} | {sr['accuracy_after']:.3f} | {sr['mean_step_seconds']:.2f} |", "",
        f"Per-step training loss, {len(common)} steps compared: max relative difference {max(rel):.1e} "
        f"(step 1: {rel[0]:.1e}, last: {rel[-1]:.1e}). Trained B: max |ΔB| = {b_diff:.1e} "
        f"({b_diff / b_scale:.1e} of max |B| = {b_scale:.3f}) over {len(keys)} LoRA-FA B matrices.",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
