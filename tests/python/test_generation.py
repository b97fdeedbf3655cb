"""Generation with the native model's KV cache must equal transformers' greedy decoding token
for token (a random GQA model and the real SmolLM2-135M); batching left-pads prompts of
different lengths without changing any sequence's tokens; sampling is seeded."""
import json

import pytest
import torch

from conftest import make_hf_llama, make_tiny_assets, write_config
from prge.cli import main

NEW = 12


def hf_greedy(hf, prompt: list[int], new: int) -> list[int]:
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                          pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


def test_greedy_equals_transformers_and_batching_changes_nothing(tmp_path):
    import prge

    path, hf = make_hf_llama(tmp_path, vocab=128)
    native = prge.CausalLM.from_pretrained(str(path))
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 128, (n,), generator=g).tolist() for n in (5, 9, 2)]
    one_by_one = [native.generate([p], max_new_tokens=NEW)[0] for p in prompts]
    assert one_by_one == [hf_greedy(hf, p, NEW) for p in prompts]
    assert native.generate(prompts, max_new_tokens=NEW) == one_by_one  # left-padded batch


def test_sampling_is_seeded_and_stop_tokens_end_a_sequence(tmp_path):
    import prge

    path, _ = make_hf_llama(tmp_path, vocab=128)
    native = prge.CausalLM.from_pretrained(str(path))
    prompt = [[5, 17, 3, 99]]
    a = native.generate(prompt, max_new_tokens=NEW, temperature=1.0, top_p=0.9, seed=7)
    assert a == native.generate(prompt, max_new_tokens=NEW, temperature=1.0, top_p=0.9, seed=7)
    assert native.generate(prompt, max_new_tokens=NEW, temperature=0.7, top_k=1) == native.generate(prompt, max_new_tokens=NEW)
    greedy = native.generate(prompt, max_new_tokens=NEW)[0]
    stopped = native.generate(prompt, max_new_tokens=NEW, stop_tokens=[greedy[3]])[0]
    assert stopped == greedy[: greedy.index(greedy[3])]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        native.generate([[500]])


def test_smollm2_greedy_equals_transformers():
    from transformers import LlamaForCausalLM

    import prge
    from installed import registered_model
    from prge.models import load_tokenizer

    path = registered_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    native = prge.CausalLM.from_pretrained(str(path))
    hf = LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    prompts = [tokenizer(t)["input_ids"] for t in ("The capital of France is", "Review: Great coffee. Sentiment:")]
    assert native.generate(prompts, max_new_tokens=16) == [hf_greedy(hf, p, 16) for p in prompts]


def test_generate_cli_from_a_run_and_generation_task_metrics(tmp_path, capsys):
    from prge.generation import exact_match, token_f1

    assert exact_match("The  Eiffel tower!", "eiffel Tower") == 1.0
    assert token_f1("paris france", "paris") == pytest.approx(2 / 3)
    model_dir, data_dir = make_tiny_assets(tmp_path)
    rows = [{"q": "good tasty", "a": "positive"}, {"q": "bad awful", "a": "negative"}] * 6
    for name in ("train.jsonl", "test.jsonl"):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config(tmp_path, model_dir, data_dir, run={"steps": 2, "eval_every": 0},
                          data={"task": "custom", "data_dir": str(tmp_path), "train_file": "train.jsonl",
                                "eval_file": "test.jsonl", "template": "Review : {q} Sentiment :",
                                "response_field": "a", "train_examples": 12, "eval_examples": 4})
    assert main(["train", str(config), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.0 <= summary["exact_match_after"] <= summary["token_f1_after"] <= 1.0
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "Review : good Sentiment :",
                 "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("Review : good Sentiment :")


def test_exact_match_takes_as_many_lines_as_the_reference_and_the_whole_reference():
    """A model that answers each reference exactly scores exact match 1 on a multi-line answer;
    on a one-line answer the prediction's first line counts (a model without a chat template runs
    on); a reference that data.max_length cut is scored whole, and generation runs long enough."""
    from types import SimpleNamespace

    from prge.data.batching import EncodedExample
    from prge.generation import answer_metrics

    replies = ["blue\nred", "positive\nReview : bad", "good " * 30]  # token i decodes to replies[i]
    references = ["blue\nred", "positive", "good " * 30]
    asked = []

    def generate(prompts, max_new_tokens, stop_tokens):
        asked.append(max_new_tokens)
        return [[p[0]] for p in prompts]

    tokenizer = SimpleNamespace(decode=lambda ids: replies[ids[0]])
    examples = [EncodedExample([0], -1, answer_ids=[5], reference=references[0], answer_length=1),
                EncodedExample([1], -1, answer_ids=[5], reference=references[1], answer_length=1),
                EncodedExample([2], -1, answer_ids=[5] * 4, reference=references[2], answer_length=31)]
    metrics = answer_metrics(SimpleNamespace(generate=generate), SimpleNamespace(tokenizer=tokenizer), examples, [])
    assert metrics == {"exact_match": 1.0, "token_f1": 1.0}
    assert asked == [31 + 8]
    # each chunk generates as far as its own longest reference, within the model's positions
    asked.clear()
    model = SimpleNamespace(generate=generate, spec=SimpleNamespace(max_position_embeddings=30))
    answer_metrics(model, SimpleNamespace(tokenizer=tokenizer), examples, [], batch_size=2)
    assert asked == [1 + 8, 30 - 1]


def test_an_answers_score_does_not_depend_on_the_examples_beside_it():
    """A chunk decodes as far as its longest reference needs, and each answer is cut to its own
    reference's length (+ 8): a short answer scores the same beside a long one as alone (a model
    that runs on past its answer gained words from a long neighbour before)."""
    from types import SimpleNamespace

    from prge.data.batching import EncodedExample
    from prge.generation import answer_metrics

    def generate(prompts, max_new_tokens, stop_tokens):  # every answer runs on: "paris paris paris ..."
        return [[7] * max_new_tokens for _ in prompts]

    tokenizer = SimpleNamespace(decode=lambda ids: " ".join(["paris"] * len(ids)))
    short = EncodedExample([1], -1, answer_ids=[7], reference="paris", answer_length=1)
    long = EncodedExample([2], -1, answer_ids=[7] * 40, reference="paris " * 40, answer_length=40)
    alone = answer_metrics(SimpleNamespace(generate=generate), SimpleNamespace(tokenizer=tokenizer), [short], [])
    beside = answer_metrics(SimpleNamespace(generate=generate), SimpleNamespace(tokenizer=tokenizer), [short, long], [])
    assert alone["token_f1"] == pytest.approx(2 * (1 / 9) / (1 + 1 / 9))  # 9 words against 1
    assert beside["token_f1"] == pytest.approx((alone["token_f1"] + 2 * 1 * (40 / 48) / (1 + 40 / 48)) / 2)


def test_generate_chat_prints_the_reply_alone(tmp_path, capsys):
    """`prge generate --chat` with one prompt prints the model's reply, not the prompt run into
    it (a plain prompt's continuation still follows its prompt); several prompts each get a
    header line."""
    model_dir, _ = make_tiny_assets(tmp_path)
    (model_dir / "chat_template.jinja").write_text(
        "<u>{{ messages[0]['content'] }}</u>{% if add_generation_prompt %}A:{% endif %}")
    args = ["generate", str(model_dir), "--max-new-tokens", "3", "--chat"]
    assert main(args + ["--prompt", "What is 2+2?"]) == 0
    reply = capsys.readouterr().out
    assert "What is 2+2?" not in reply
    assert main(args + ["--prompt", "What is 2+2?", "--prompt", "Hi"]) == 0
    both = capsys.readouterr().out.splitlines()
    assert both[0] == "--- 'What is 2+2?'" and "--- 'Hi'" in both
    assert main(["generate", str(model_dir), "--max-new-tokens", "3", "--prompt", "What is"]) == 0
    assert capsys.readouterr().out.startswith("What is")


@pytest.mark.parametrize("where", ["generation_config.json", "config.json"])
def test_the_models_generation_settings_apply_as_in_transformers(tmp_path, capsys, where):
    """transformers' generate() applies a model's repetition_penalty and no_repeat_ngram_size by
    default (from generation_config.json, else config.json); so does prge generate, and it names
    the settings it does not apply (do_sample, min_length, ...) instead of printing other text
    without a word."""
    from transformers import AutoModelForCausalLM

    from prge.data.tokens import ModelTokenizer

    model_dir, _ = make_tiny_assets(tmp_path)
    if where == "config.json":  # transformers reads config.json's only without a generation_config.json
        (model_dir / "generation_config.json").unlink(missing_ok=True)
    path = model_dir / where
    values = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**values, "repetition_penalty": 3.0, "no_repeat_ngram_size": 1}))
    prompt = "Review : great tasty Sentiment :"
    ids = ModelTokenizer(model_dir).prompt_ids([prompt])[0]
    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf.generate(torch.tensor([ids]), max_new_tokens=8, min_new_tokens=8, pad_token_id=0,
                               eos_token_id=None)[0, len(ids):].tolist()
        plain = hf.generate(torch.tensor([ids]), max_new_tokens=8, min_new_tokens=8, pad_token_id=0,
                            eos_token_id=None, repetition_penalty=1.0, no_repeat_ngram_size=0)[0, len(ids):].tolist()
    assert expected != plain  # the settings matter on this model
    import prge

    native = prge.CausalLM.from_pretrained(str(model_dir))
    assert native.generate([ids], max_new_tokens=8, repetition_penalty=3.0, no_repeat_ngram_size=1)[0] == expected
    assert native.generate([ids], max_new_tokens=8)[0] == plain
    assert main(["generate", str(model_dir), "--max-new-tokens", "3", "--prompt", prompt]) == 0
    assert "note:" not in capsys.readouterr().err  # both applied: nothing to name
    path.write_text(json.dumps({**values, "do_sample": True, "min_length": 2}))
    assert main(["generate", str(model_dir), "--max-new-tokens", "3", "--prompt", prompt]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "min_length 2" in err and "do_sample true" in err, err


def test_settings_at_values_that_do_nothing_are_not_named():
    """A generation_config.json that spells out the neutral values (as older transformers wrote
    every field) changes nothing in transformers' generate(), so nothing is named."""
    from transformers import GenerationConfig

    from prge.generation import unapplied_generation_settings

    neutral = GenerationConfig(min_length=0, num_beams=1, typical_p=1.0, encoder_repetition_penalty=1.0,
                               epsilon_cutoff=0.0, renormalize_logits=False, do_sample=False)
    assert unapplied_generation_settings(neutral) == []
    assert unapplied_generation_settings(GenerationConfig(num_beams=4)) == ["num_beams 4"]
