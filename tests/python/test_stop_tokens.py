"""Generation stops on every id transformers' `generate` stops on for the model, read from the
model's own files: generation_config.json's eos_token_id (an int or a list), else config.json's;
nothing when generation_config.json names none. Checked against transformers' generate on a
tiny random Llama whose end tokens are ordinary-looking ids with no special name, through the
native decoder, `prge generate` and the setup a generation task's evaluation uses."""
import json

import pytest
import torch

from conftest import make_hf_llama, make_tiny_assets
from prge.cli import main
from prge.data.tokens import stop_token_ids

NEW = 12


def hf_generate(model_dir, prompt: list[int]) -> list[int]:
    """transformers' greedy continuation, stopping as the model's files say."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.int64),
                          max_new_tokens=NEW, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def without_stop(tokens: list[int], stops: list[int]) -> list[int]:
    """transformers keeps the end token it emitted; prge's decoder ends before it."""
    return tokens[:-1] if tokens and tokens[-1] in stops else tokens


def pick_stops(greedy_a: list[int], greedy_b: list[int]) -> tuple[int, int]:
    """An id that ends prompt a's continuation early and another that ends b's, neither
    occurring earlier in the other continuation."""
    for i in range(2, NEW - 2):
        for j in range(2, NEW - 2):
            a, b = greedy_a[i], greedy_b[j]
            if (a != b and a not in greedy_a[:i] and b not in greedy_b[:j] and a not in greedy_b[: j + 1]
                    and b not in greedy_a[: i + 1]):
                return a, b
    pytest.fail("no distinct stop ids in the greedy continuations")


def write_json(path, tree):
    path.write_text(json.dumps(tree))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import prge

    model_dir, _ = make_hf_llama(tmp_path_factory.mktemp("stops"), vocab=128)
    native = prge.CausalLM.from_pretrained(str(model_dir))
    prompts = [[5, 17, 3, 99], [42, 8, 77]]
    greedy = native.generate(prompts, max_new_tokens=NEW)
    return model_dir, native, prompts, pick_stops(*greedy)


@pytest.mark.parametrize("layout", ["generation_config list", "config.json list", "generation_config int",
                                    "generation_config without eos"])
def test_native_generation_stops_where_transformers_generate_stops(tiny, layout):
    model_dir, native, prompts, (a, b) = tiny
    config = json.loads((model_dir / "config.json").read_text())
    config["eos_token_id"] = [a, b]
    write_json(model_dir / "config.json", config)
    generation = model_dir / "generation_config.json"
    generation.unlink(missing_ok=True)
    expected = {"generation_config list": [a, b], "config.json list": [a, b], "generation_config int": [b],
                "generation_config without eos": []}[layout]
    if layout == "generation_config list":
        write_json(generation, {"bos_token_id": 1, "eos_token_id": [a, b]})
    elif layout == "generation_config int":
        write_json(generation, {"eos_token_id": b})
    elif layout == "generation_config without eos":
        write_json(generation, {"bos_token_id": 1})
    stops = stop_token_ids(model_dir)
    assert stops == sorted(expected)
    stopped_early = 0
    for prompt in prompts:
        theirs = hf_generate(model_dir, prompt)
        ours = native.generate([prompt], max_new_tokens=NEW, stop_tokens=stops)[0]
        assert ours == without_stop(theirs, stops), (layout, prompt)
        stopped_early += len(ours) < NEW
    assert stopped_early == {2: 2, 1: 1, 0: 0}[len(expected)]  # every listed id ended a sequence


def test_prge_generate_and_generation_tasks_use_the_models_stop_ids(tmp_path, capsys):
    """`prge generate` on a model whose end tokens are plain words of a word-level vocabulary
    (generation_config.json lists two of them) prints what transformers' generate writes before
    its stop."""
    import prge
    from prge._core import parse_run_config
    from prge.data.tokens import ModelTokenizer
    from prge.setup import setup_data

    model_dir, _ = make_tiny_assets(tmp_path)
    tokens = ModelTokenizer(model_dir)
    prompt = "Review : good tasty Sentiment :"
    ids = tokens.prompt_ids([prompt])[0]
    greedy = prge.CausalLM.from_pretrained(str(model_dir)).generate([ids], max_new_tokens=NEW)[0]
    a = next(t for i, t in enumerate(greedy) if i >= 2 and t not in greedy[:i])  # ends the answer early
    b = next(t for t in range(len(tokens.tokenizer)) if t not in greedy)  # listed, not reached
    write_json(model_dir / "generation_config.json", {"eos_token_id": [a, b]})
    theirs = without_stop(hf_generate(model_dir, ids), [a, b])
    assert len(theirs) < NEW
    capsys.readouterr()
    assert main(["generate", str(model_dir), "--prompt", prompt, "--max-new-tokens", str(NEW)]) == 0
    assert capsys.readouterr().out == prompt + tokens.decode(theirs) + "\n"
    # a generation task's evaluation (answer_metrics) decodes with the ids of the same setup
    (tmp_path / "qa.jsonl").write_text(json.dumps({"q": "good", "a": "positive"}) + "\n")
    config = parse_run_config(
        f"model: {{name: {model_dir}}}\n"
        f"data: {{task: custom, train_file: {tmp_path / 'qa.jsonl'}, eval_file: {tmp_path / 'qa.jsonl'}, "
        "template: 'Review : {q} Sentiment :', response_field: a, train_examples: 1, eval_examples: 1, batch_size: 1}\n")
    assert setup_data(config).tokenizer.stop_ids == sorted([a, b])
