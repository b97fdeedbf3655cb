"""Your data in, your model out, end to end on a real data set a registry ships:
the Palmer penguins (Debian r-cran-modeldata, `penguins`, 344 birds, CC0) as a custom-file
task, P-RGE on SmolLM2-135M, the adapters exported in PEFT's format and loaded by
transformers + peft, accuracy computed by both.

  1. writes train.csv / test.csv (seeded 70 / 30 split, rows with missing values dropped)
     and a config with data.task: custom into OUT (data files are never committed);
  2. `prge train` on it; 3. `prge adapters export RUN --out OUT/peft`;
  4. transformers' LlamaForCausalLM + peft.PeftModel score the same label words on the same
     token ids; the two accuracies and the largest logit difference are written to
     experiments/results/custom_task_penguins.md.

    python experiments/custom_task_penguins.py --out runs/penguins [--steps 300]
"""
from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

import torch
import yaml

TEMPLATE = ("Penguin on {island} island: bill {bill_length_mm} mm long, {bill_depth_mm} mm deep, "
            "flipper {flipper_length_mm} mm, {body_mass_g} g. Species:")
LABEL_WORDS = {"Adelie": " Adelie", "Chinstrap": " Chinstrap", "Gentoo": " Gentoo"}
FIELDS = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "species"]


def write_data(out: Path, seed: int) -> None:
    from prge.data.r_lazyload import read_lazyload_object
    from prge.data.tasks import MODELDATA_DIR

    frame = read_lazyload_object(MODELDATA_DIR, "penguins")
    rows = [r for r in frame[FIELDS].to_dict("records") if all(r[f] == r[f] and r[f] is not None for f in FIELDS)]
    rows = [{**r, "body_mass_g": int(r["body_mass_g"]), "flipper_length_mm": int(r["flipper_length_mm"])}
            for r in rows if str(r["body_mass_g"]) != "<NA>"]
    random.Random(seed).shuffle(rows)
    cut = int(0.7 * len(rows))
    for name, part in (("train.csv", rows[:cut]), ("test.csv", rows[cut:])):
        with open(out / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(part)


def transformers_accuracy(run_dir: Path, peft_dir: Path):
    """Accuracy of transformers + peft on the run's eval examples, scoring each label word by
    its mean log-likelihood (prge's rule), from the token ids prge's encoder makes."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    from prge._core import load_run_config
    from prge.setup import setup_data

    config = load_run_config(str(run_dir / "config.yaml"))
    data = setup_data(config)
    model_dir, examples = data.model_dir, data.eval
    base = LlamaForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, str(peft_dir)).eval()
    correct = 0
    with torch.no_grad():
        for e in examples:
            scores = []
            for answer in e.options:
                ids = torch.tensor([e.prompt_ids + answer])
                logp = torch.log_softmax(model(ids).logits[0].float(), -1)
                start = len(e.prompt_ids) - 1
                scores.append(sum(logp[start + j, t].item() for j, t in enumerate(answer)) / len(answer))
            correct += int(max(range(len(scores)), key=scores.__getitem__) == e.label)
    return correct / len(examples), len(examples)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/penguins")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results", default="experiments/results/custom_task_penguins.md")
    args = parser.parse_args()
    from prge.cli import main as prge

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_data(out, args.seed)
    config = {
        "model": {"name": "smollm2-135m"},
        "adapter": {"rank": 8, "alpha": 16},
        "estimator": {"kind": "prge", "queries": 4, "parallel": "dual", "epsilon": 1e-2},
        "optimizer": {"lr": 1e-3},
        "data": {"task": "custom", "train_file": str(out / "train.csv"), "eval_file": str(out / "test.csv"),
                 "template": TEMPLATE, "label_field": "species", "label_words": LABEL_WORDS,
                 "train_examples": 1000, "eval_examples": 1000, "batch_size": 4, "max_length": 64},
        "run": {"steps": args.steps, "seed": args.seed, "eval_every": 100, "output_dir": str(out / "run")},
    }
    config_path = out / "penguins.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert prge(["train", str(config_path), "--no-progress"]) == 0
    assert prge(["adapters", "export", str(out / "run"), "--out", str(out / "peft")]) == 0
    summary = json.loads((out / "run" / "summary.json").read_text())
    hf_accuracy, n = transformers_accuracy(out / "run", out / "peft")
    lines = [
        "# Custom-file task end to end: Palmer penguins (r-cran-modeldata), SmolLM2-135M, P-RGE", "",
        f"`python experiments/custom_task_penguins.py --out {args.out} --steps {args.steps}` (CPU, fp32). "
        "The data files and the config are written by the script (never committed); the task is "
        "`data.task: custom` with the template and label words below, no code.", "",
        f"Template: `{TEMPLATE}`; label words: {', '.join(LABEL_WORDS.values())}; "
        f"{summary['estimator']} dual q={summary['queries']}, batch {summary['batch_size']}, "
        f"lr {summary['lr']}, {summary['steps']} steps, seed {summary['seed']}.", "",
        "| | accuracy on the test split |", "|---|---|",
        f"| always the majority species | {summary['majority_accuracy']:.4f} |",
        f"| prge, before training | {summary['accuracy_before']:.4f} |",
        f"| prge, after training | {summary['accuracy_after']:.4f} |",
        f"| transformers + peft with the exported adapter | {hf_accuracy:.4f} |", "",
        f"{n} test birds. Equal accuracy is what the export must give: "
        f"{'equal' if abs(hf_accuracy - summary['accuracy_after']) < 0.5 / n else 'NOT EQUAL'}.",
    ]
    Path(args.results).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
