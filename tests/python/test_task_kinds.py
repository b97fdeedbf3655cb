"""Task kinds (prge.data.kinds): multiple-choice candidates are scored as transformers' model
scores them (summed and mean log-likelihood of each candidate's tokens after the prompt, on
the same tiny weights), every candidate of a chunk in one forward; training targets are the
gold candidate's tokens; a custom task picks its kind from its keys; data.train_from:
validation splits the validation split in two disjoint seeded parts and is never implied."""
import json
import math
from dataclasses import replace
import re
from types import SimpleNamespace

import pytest
import torch

import prge
from conftest import make_tiny_assets
from prge._core import IGNORE_INDEX
from prge.data.batching import PromptEncoder
from prge.data.custom import custom_task
from prge.data.examples import Example, MissingSplit, Task
from prge.data.kinds import CLASSIFICATION, GENERATION, MULTIPLE_CHOICE
from prge.data.tokens import ModelTokenizer
from prge.evaluation import Scorer, evaluate
from prge.setup import split_protocol

TEMPLATE = "Review : {text} Sentiment :"
# Candidates of different counts and lengths, words of the tiny vocabulary (make_tiny_assets).
RECORDS = [
    {"text": "good tasty", "options": ["positive", "negative good", "great love it"], "answer": 2},
    {"text": "bad awful stale", "options": ["negative", "positive"], "answer": 0},
    {"text": "love it", "options": ["good", "bad", "awful hate", "tasty"], "answer": "tasty"},
    {"text": "hate it", "options": ["stale bad", "great"], "answer": "0"},
    {"text": "great", "options": ["love", "hate it bad"], "answer": 0},
]


def data_section(tmp_path, **keys):
    """A config's data section as custom_task reads it (the C++ config's fields)."""
    base = dict(task="custom", data_dir=str(tmp_path), train_file="train.jsonl", eval_file="train.jsonl",
                template=TEMPLATE, label_field="answer", label_words=[], response_field="", choices_field="options",
                chat_template=False)
    base.update(keys)
    return SimpleNamespace(**base)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def mc(tmp_path):
    """(task, encoder, encoded examples, model directory) of a custom multiple-choice task."""
    model_dir, _ = make_tiny_assets(tmp_path)
    write_jsonl(tmp_path / "train.jsonl", RECORDS)
    task = custom_task(data_section(tmp_path))
    encoder = PromptEncoder(task, ModelTokenizer(model_dir), 32)
    return task, encoder, encoder.encode_all(task.load("train")), model_dir


def trainer_of(model_dir):
    model = prge.CausalLM.from_pretrained(str(model_dir))
    model.attach_adapters(prge.AdapterOptions(rank=4, alpha=8))  # B = 0: the model is the base model
    return prge.Trainer(model, prge.EstimatorOptions("prge", 2), prge.OptimizerOptions(), 0)


def reference_logliks(model_dir, encoded) -> list[list[tuple[float, int]]]:
    """(summed log p, token count) of every candidate of every example, by transformers'
    LlamaForCausalLM on the same weights, one sequence at a time (plain log_softmax, float64)."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(str(model_dir)).float().eval()
    out = []
    with torch.no_grad():
        for e in encoded:
            row = []
            for option in e.options:
                ids = torch.tensor([e.prompt_ids + option])
                logp = torch.log_softmax(hf(ids).logits[0].double(), -1)
                start = len(e.prompt_ids)
                row.append((sum(logp[start - 1 + i, t].item() for i, t in enumerate(option)), len(option)))
            out.append(row)
    return out


def test_multiple_choice_encoding_is_the_whole_string_encoding(mc):
    task, encoder, encoded, model_dir = mc
    assert task.kind is MULTIPLE_CHOICE and [e.label for e in encoded] == [2, 0, 3, 0, 0]
    hf = encoder.tokenizer.tokenizer
    for record, e in zip(RECORDS, encoded):
        prompt = TEMPLATE.format(text=record["text"])
        assert e.prompt_ids == hf(prompt)["input_ids"]
        for text, option in zip(record["options"], e.options):  # candidates follow the prompt after one space
            assert e.prompt_ids + option == hf(prompt + " " + text)["input_ids"]
    batch = encoder.batch(encoded)  # training: one sequence per example, the gold candidate its target
    for row, e in enumerate(encoded):
        targets = batch.targets[row]
        assert targets[targets != IGNORE_INDEX].tolist() == e.options[e.label]
        assert batch.input_ids[row, len(e.prompt_ids): len(e.prompt_ids) + len(e.options[e.label])].tolist() == \
            e.options[e.label]


def test_multiple_choice_scores_equal_transformers_and_take_one_forward_per_chunk(mc):
    task, encoder, encoded, model_dir = mc
    trainer = trainer_of(model_dir)
    calls = []

    class Counting:  # the trainer, counting forwards and their rows
        def score(self, batch):
            calls.append(batch.input_ids.shape[0])
            return trainer.score(batch)

    sums, counts = Scorer(Counting(), encoder, batch_size=2).option_logliks(encoded)
    # chunks of 2, 2 and 1 examples: one forward each, over every candidate of the chunk
    assert calls == [3 + 2, 4 + 2, 2]
    reference = reference_logliks(model_dir, encoded)
    assert sums.shape == counts.shape == (5, 4)
    for i, row in enumerate(reference):
        for k, (logp, n) in enumerate(row):
            assert counts[i, k].item() == n
            assert sums[i, k].item() == pytest.approx(logp, abs=2e-4)
        assert torch.all(sums[i, len(row):] == -math.inf) and torch.all(counts[i, len(row):] == 0)
    metrics = evaluate(trainer, encoder, encoded, batch_size=2)
    mean_choice = [max(range(len(r)), key=lambda k: r[k][0] / r[k][1]) for r in reference]
    sum_choice = [max(range(len(r)), key=lambda k: r[k][0]) for r in reference]
    labels = [e.label for e in encoded]
    assert metrics["accuracy"] == pytest.approx(sum(c == y for c, y in zip(mean_choice, labels)) / 5)
    assert metrics["accuracy_raw"] == pytest.approx(sum(c == y for c, y in zip(sum_choice, labels)) / 5)
    # training loss of a batch: the gold candidate's NLL, as transformers computes it
    nll, count = trainer.score(encoder.batch(encoded))
    for i, e in enumerate(encoded):
        assert nll[i].item() == pytest.approx(-reference[i][e.label][0], abs=2e-4)
        assert count[i].item() == reference[i][e.label][1]


def test_multi_token_label_words_are_scored_in_one_forward_as_transformers_scores_them(tmp_path):
    model_dir, _ = make_tiny_assets(tmp_path)
    write_jsonl(tmp_path / "train.jsonl", [{"text": r["text"], "answer": i % 2} for i, r in enumerate(RECORDS)])
    task = custom_task(data_section(tmp_path, choices_field="", label_words=[("0", " good tasty"), ("1", " bad")]))
    assert task.kind is CLASSIFICATION
    encoder = PromptEncoder(task, ModelTokenizer(model_dir), 32)
    encoded = encoder.encode_all(task.load("train"))
    trainer = trainer_of(model_dir)
    calls = []

    class Counting:
        def score(self, batch):
            calls.append(batch.input_ids.shape[0])
            return trainer.score(batch)

    sums, counts = Scorer(Counting(), encoder, batch_size=4).option_logliks(encoded)
    assert calls == [8, 2]  # every label word of every example of a chunk in one forward
    reference = reference_logliks(model_dir, encoded)
    expected = torch.tensor([[s for s, _ in r] for r in reference], dtype=torch.float64)
    torch.testing.assert_close(sums, expected, rtol=0, atol=2e-4)
    assert counts.tolist() == [[2, 1]] * 5


@pytest.mark.parametrize("record, message", [
    ({"text": "good", "options": "positive", "answer": 0}, "is not a list of candidates (in CSV / TSV, write a JSON"),
    ({"text": "good", "options": ["positive", "negative"], "answer": 2}, "answer' = 2 is outside 0..1"),
    ({"text": "good", "options": ["positive", "negative"], "answer": "great"}, "is not one of its candidates"),
    ({"text": "good", "options": ["positive"], "answer": 0}, "1 candidate(s); multiple choice needs at least 2"),
    ({"text": "good", "options": ["positive", " "], "answer": 0}, "candidate 1 is empty"),
    ({"text": "good", "options": ["positive", "\u2060"], "answer": 0},
     "candidate 1 = '\\u2060' holds only invisible characters: no text"),
    ({"text": "good", "options": ["positive", "negative", " positive"], "answer": 0},
     "candidates 0 and 2 are the same text 'positive'"),
    ({"text": "good", "options": [], "answer": 0}, "holds 0 candidate(s); multiple choice needs at least 2"),
    ({"text": "good", "answer": 0}, "has no field 'options'"),
    ({"text": "good", "options": {"a": 1}, "answer": 0}, "must be a list of candidate texts"),
    ({"text": "good", "options": ["yes", True], "answer": 0}, "must be a list of candidate texts"),
    ({"text": ["good", "bad"], "options": ["positive", "negative"], "answer": 0},
     'field \'text\' = ["good", "bad"] is not text (a string or a finite number)'),
    ({"text": {"a": 1}, "options": ["positive", "negative"], "answer": 0}, "field 'text' = {\"a\": 1} is not text"),
    ({"text": ["x", None], "options": ["positive", "negative"], "answer": 0},  # as the file spells it: null
     'field \'text\' = ["x", null] is not text'),
    ({"text": True, "options": ["positive", "negative"], "answer": 0}, "field 'text' = true is not text"),
    ({"text": float("nan"), "options": ["positive", "negative"], "answer": 0}, "field 'text' = nan is not text"),
    ({"text": "good", "options": ["yes", float("nan")], "answer": 0}, "must be a list of candidate texts"),
    ({"text": "good", "options": ["a", "b", "c"], "answer": "²"}, "answer' = '²' is not one of its candidates"),
    ({"text": "good", "options": ["a", "b", "c"], "answer": 1.5}, "answer' = 1.5 is not an integer index (0..2)"),
])
def test_custom_multiple_choice_mistakes_name_file_record_and_key(tmp_path, record, message):
    write_jsonl(tmp_path / "train.jsonl", [RECORDS[0], record])
    with pytest.raises(ValueError, match="record 2") as error:
        custom_task(data_section(tmp_path)).load("train")
    assert str(error.value).startswith(f"data.train_file: {tmp_path / 'train.jsonl'}: record 2") and \
        message in str(error.value), str(error.value)


def test_custom_csv_candidates_as_a_json_list(tmp_path):
    (tmp_path / "train.csv").write_text('text,options,answer\ngood,"[""positive"", ""negative""]",negative\n')
    example = custom_task(data_section(tmp_path, train_file="train.csv")).load("train")[0]
    assert example.choices == (" positive", " negative") and example.label == 1


def test_a_label_among_numeric_candidates_is_read_by_its_json_type_and_refused_in_csv_where_both_readings_fit(tmp_path):
    """The answer "2" among candidates "1", "2", "3": in JSON lines a string is the candidate's
    text (index 1) and a number an index; in CSV, where every value is text, either could be
    meant, so the record is named rather than one reading guessed."""
    options = ["1", "2", "3"]
    write_jsonl(tmp_path / "train.jsonl", [{"text": "one plus one", "options": options, "answer": "2"},
                                           {"text": "two plus one", "options": options, "answer": 2},
                                           {"text": "zero plus one", "options": options, "answer": "1"},
                                           {"text": "one plus two", "options": ["x", "y", "z"], "answer": "2"},
                                           {"text": "as pandas writes it", "options": ["1.0", "x"], "answer": 1.0},
                                           {"text": "a dash", "options": ["--1", "b"], "answer": "--1"}])
    assert [e.label for e in custom_task(data_section(tmp_path)).load("train")] == [1, 2, 0, 2, 1, 0]
    (tmp_path / "train.csv").write_text('text,options,answer\nindex one,"[""7"", ""8"", ""9""]",1\n'
                                        'one plus one,"[""1"", ""2"", ""3""]",2\n')
    with pytest.raises(ValueError) as error:
        custom_task(data_section(tmp_path, train_file="train.csv")).load("train")
    assert str(error.value).startswith(f"data.train_file: {tmp_path / 'train.csv'}: record 2 (line 3): data.label_field "
                                       "'answer' = '2' is candidate 1's text and also the index of candidate 2 ('3')")
    (tmp_path / "train.csv").write_text('text,options,answer\nindex one,"[""7"", ""8"", ""9""]",1\n'
                                        'four plus one,"[""a"", ""b""]",1\n')
    assert [e.label for e in custom_task(data_section(tmp_path, train_file="train.csv")).load("train")] == [1, 1]


def test_numbers_reach_the_prompt_as_the_file_wrote_them_and_labels_match_by_value(tmp_path):
    """JSON's 1.50 and 2e3 are prompt text "1.50" and "2e3" (not Python's 1.5 and 2000.0), in
    a field, a candidate of a CSV row's JSON list and a JSON lines candidate; a label 1.50
    still matches the label_words key 1.5."""
    (tmp_path / "train.jsonl").write_text('{"text": 1.50, "options": [2e3, "b"], "answer": 0}\n'
                                          '{"text": "x", "options": ["a", 0.10], "answer": 1.0}\n')
    task = custom_task(data_section(tmp_path, template="Price : {text}"))
    first, second = task.load("train")
    assert task.template(first.fields) == "Price : 1.50" and first.choices == (" 2e3", " b")
    assert second.choices == (" a", " 0.10") and second.label == 1
    (tmp_path / "train.csv").write_text('text,options,answer\nx,"[1.50, 7]",0\n')
    assert custom_task(data_section(tmp_path, train_file="train.csv")).load("train")[0].choices == (" 1.50", " 7")
    write = lambda label: (tmp_path / "cls.jsonl").write_text(f'{{"text": 3.250, "answer": {label}}}\n')
    classify = lambda: custom_task(data_section(tmp_path, train_file="cls.jsonl", choices_field="", template="{text}",
                                                label_words=[("1.5", " low"), ("2", " high")])).load("train")[0]
    write("1.50")
    example = classify()
    assert example.label == 0 and example.fields == {"text": "3.250"}
    write("2.0")
    assert classify().label == 1


def test_a_label_matches_its_label_words_key_as_spelled_else_by_value(tmp_path):
    """A label spelled as a key is that class ("01" and "1" stay two, as zip or product codes);
    otherwise the one key of its value (JSON's 1.0 and a CSV's "1.0" are the key 1, true and TRUE
    the key True); a label of two keys' value but neither's spelling, one matching none, and one
    that is not a finite number are named with their record, as the file spells them."""
    def classify(name, words):
        task = custom_task(data_section(tmp_path, train_file=name, choices_field="", template="{text}",
                                        label_words=words))
        return [e.label for e in task.load("train")]

    words = [("1", " yes"), ("0", " no"), ("True", " maybe"), ("1.10", " v")]
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "answer": a}
                                       for a in (1, 1.0, "1.0", 0.0, "0", True, "1e0", "1.10", 1.1)])
    assert classify("a.jsonl", words) == [0, 0, 0, 1, 1, 2, 0, 3, 3]
    (tmp_path / "a.csv").write_text("text,answer\nx,1.0\nx,0.0\nx,TRUE\nx,true\nx,1.1\n")
    assert classify("a.csv", words) == [0, 1, 2, 2, 3]
    codes = [("01", " a"), ("1", " b")]
    (tmp_path / "codes.csv").write_text("text,answer\nx,01\nx,1\n")
    assert classify("codes.csv", codes) == [0, 1]
    for label, keys, message in (
            ("1.50", words, "answer = 1.50 is not one of data.label_words ('1', '0', 'True', '1.10')"),
            ('"001"', codes, "answer = '001' is the value of data.label_words '01' and '1', and the spelling of neither"),
            ("1e400", words, "answer = 1e400 is no label (a finite number or text)")):
        (tmp_path / "b.jsonl").write_text(f'{{"text": "x", "answer": {label}}}\n')
        with pytest.raises(ValueError, match=re.escape(f"record 1 (line 1): {message}")):
            classify("b.jsonl", keys)
    (tmp_path / "big.csv").write_text("text,answer\nx," + "9" * 5000 + "\n")  # compared as text: named, no traceback
    with pytest.raises(ValueError, match="is not one of data.label_words"):
        classify("big.csv", words)


def test_a_custom_json_file_is_an_array_or_json_lines_and_integers_keep_their_spelling(tmp_path):
    """pandas' to_json(orient="records") writes one array, to_json(lines=True) JSON lines: a
    custom task's .json reads either. -0 reaches the prompt as -0; an integer too long for
    Python is named with its file and line."""
    records = [{"text": -0, "options": ["a", "b"], "answer": 1}, {"text": "y", "options": ["c", "d"], "answer": 0}]
    (tmp_path / "array.json").write_text(json.dumps(records, indent=2).replace('"text": 0', '"text": -0'))
    write_jsonl(tmp_path / "lines.json", records)
    for name in ("array.json", "lines.json"):
        task = custom_task(data_section(tmp_path, train_file=name, template="n = {text}"))
        first, second = task.load("train")
        assert [first.label, second.label] == [1, 0] and second.choices == (" c", " d")
    assert task.template(custom_task(data_section(tmp_path, train_file="array.json", template="n = {text}"))
                         .load("train")[0].fields) == "n = -0"
    (tmp_path / "huge.jsonl").write_text('{"text": "x", "options": ["a", "b"], "answer": 0}\n'
                                         '{"text": ' + "9" * 5000 + ', "options": ["a", "b"], "answer": 0}\n')
    with pytest.raises(ValueError, match=r"huge\.jsonl:2: Exceeds the limit"):
        custom_task(data_section(tmp_path, train_file="huge.jsonl")).load("train")


def test_a_json_object_giving_a_key_twice_is_refused_naming_the_line(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps(RECORDS[0]) + "\n"
                                          '{"text": "good", "text": "bad", "options": ["a", "b"], "answer": 0}\n')
    with pytest.raises(ValueError, match=rf"^data.train_file: {tmp_path / 'train.jsonl'}:2: the key 'text' is given "
                                         "twice in one object"):
        custom_task(data_section(tmp_path)).load("train")


def test_custom_kind_follows_the_keys(tmp_path):
    assert custom_task(data_section(tmp_path)).kind is MULTIPLE_CHOICE
    assert custom_task(data_section(tmp_path, choices_field="", response_field="answer")).kind is GENERATION
    assert custom_task(data_section(tmp_path, choices_field="", label_words=[("a", " x")])).kind is CLASSIFICATION


def _split_task(n: int, train: bool) -> Task:
    """A classification task over n hand-made validation examples (and a train split or none)."""
    def reader(split):
        if split == "train" and not train:
            raise MissingSplit("t: /data/t/train.jsonl not found (expected train.jsonl, or a datasets.save_to_disk "
                               "directory)")
        return [Example({"text": f"{split} {i}"}, i % 2, where=f"{split} {i}") for i in range(n)]
    return Task("t", "", (" a", " b"), lambda f: f["text"], lambda r: r, reader=reader)


def test_train_from_validation_splits_it_in_disjoint_seeded_parts():
    data = SimpleNamespace(data_dir="", protocol="paper", train_examples=6, dev_examples=3, eval_examples=100,
                           train_from="validation")
    train, dev, test = split_protocol(_split_task(20, train=False), data, seed=1)
    assert (len(train), len(dev), len(test)) == (6, 0, 14)
    names = [e.where for e in train + test]
    assert len(set(names)) == 20 and all(n.startswith("eval") for n in names)  # all of it, each example once
    again, _, _ = split_protocol(_split_task(20, train=False), data, seed=1)
    other, _, _ = split_protocol(_split_task(20, train=False), data, seed=2)
    assert [e.where for e in again] == [e.where for e in train] != [e.where for e in other]
    mezo = SimpleNamespace(**{**vars(data), "protocol": "mezo", "eval_examples": 4})
    train, dev, test = split_protocol(_split_task(20, train=False), mezo, seed=1)
    assert (len(train), len(dev), len(test)) == (6, 3, 4)
    assert len({e.where for e in train + dev + test}) == 13
    with pytest.raises(ValueError, match="t: data.train_from: validation takes 6 train examples from the validation "
                                         "split, which has 6: none would be left to evaluate"):
        split_protocol(_split_task(6, train=False), data, seed=1)


def test_a_missing_training_split_is_an_error_naming_the_key_never_a_silent_fallback():
    data = SimpleNamespace(data_dir="", protocol="paper", train_examples=6, dev_examples=3, eval_examples=4,
                           train_from="train")
    with pytest.raises(MissingSplit, match=r"^t: /data/t/train.jsonl not found .*t has no training split there: set "
                                           r"data.train_from: validation"):
        split_protocol(_split_task(20, train=False), data, seed=1)
    train, _, test = split_protocol(_split_task(20, train=True), data, seed=1)
    assert all(e.where.startswith("train") for e in train) and all(e.where.startswith("eval") for e in test)


def test_prge_train_on_a_built_in_multiple_choice_task(tmp_path):
    """copa end to end: the first evaluation (B = 0) is transformers' choice on every example;
    the summary and metrics carry both accuracies and the chance baseline."""
    import yaml

    from conftest import write_config
    from prge.cli import main
    from prge.data.tasks import get_task

    model_dir, _ = make_tiny_assets(tmp_path)
    copa = tmp_path / "copa"
    copa.mkdir()
    words = ["good tasty", "bad awful", "great love it", "stale hate", "love it"]
    rows = [{"premise": f"{words[i % 5]}.", "choice1": words[(i + 1) % 5], "choice2": words[(i + 3) % 5],
             "question": ("cause", "effect")[i % 2], "label": i % 2, "idx": i} for i in range(12)]
    write_jsonl(copa / "train.jsonl", rows)
    write_jsonl(copa / "val.jsonl", rows[:7])
    config = write_config(tmp_path, model_dir, copa, data={"task": "copa", "train_examples": 12, "eval_examples": 7,
                                                           "batch_size": 2, "max_length": 16},
                          run={"steps": 2, "eval_every": 0})
    assert main(["train", str(config), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "copa" and summary["chance_accuracy"] == 0.5
    assert {"accuracy_before", "accuracy_after", "accuracy_best", "accuracy_raw_before", "accuracy_raw_after"} <= \
        set(summary)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval_accuracy" in r]
    assert [r["step"] for r in evaluations] == [0, 2] and all("eval_accuracy_raw" in r for r in evaluations)
    task = get_task("copa")
    encoder = PromptEncoder(task, ModelTokenizer(model_dir), 16)
    reference = reference_logliks(model_dir, encoder.encode_all(task.load("eval", copa)))
    labels = [r["label"] for r in rows[:7]]
    norm = [max(range(2), key=lambda k: r[k][0] / r[k][1]) for r in reference]
    raw = [max(range(2), key=lambda k: r[k][0]) for r in reference]
    assert summary["accuracy_before"] == pytest.approx(sum(a == y for a, y in zip(norm, labels)) / 7)
    assert summary["accuracy_raw_before"] == pytest.approx(sum(a == y for a, y in zip(raw, labels)) / 7)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["task"] == "copa"


needs_new_keys = pytest.mark.skipif(not hasattr(prge._core.DataOptions, "choices_field"),
                                    reason="the installed extension predates data.choices_field / data.train_from "
                                           "(csrc/prge/config.cpp): rebuild it")


@needs_new_keys
def test_config_keys_of_the_kinds_and_train_from():
    config = prge.parse_run_config("data: {task: custom, train_file: a.jsonl, eval_file: b.jsonl, template: '{q}', "
                                   "choices_field: options, label_field: gold}")
    assert config.data.choices_field == "options" and config.data.label_field == "gold"
    assert config.data.train_from == "train"
    again = prge.parse_run_config(config.to_yaml())
    assert again.data.choices_field == "options" and again.to_yaml() == config.to_yaml()
    assert prge.parse_run_config("data: {task: boolq, train_from: validation}").data.train_from == "validation"
    for text, message in [
        ("data: {task: boolq, train_from: test}", "data.train_from: unknown train_from 'test' (allowed: train, validation)"),
        ("data: {task: sst2, choices_field: options}", "data.choices_field: applies to task: custom only"),
        ("data: {task: custom, train_file: a, eval_file: b, template: '{q}', choices_field: o, response_field: r}",
         "data.response_field: task: custom needs exactly one of data.label_words (classification), "
         "data.response_field (generation) or data.choices_field"),
    ]:
        with pytest.raises(prge.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            prge.parse_run_config(text)


@needs_new_keys
def test_prge_train_with_train_from_validation_and_without(tmp_path, capsys):
    """boolq published without its training split: named, with the key to set; with the key,
    train and evaluation are disjoint parts of the validation split."""
    from conftest import write_config
    from prge.cli import main

    model_dir, _ = make_tiny_assets(tmp_path)
    capsys.readouterr()  # what writing the tiny model printed
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())  # BoolQ's label words known (else tied)
    vocab = tokenizer["model"]["vocab"]
    vocab["Yes"], vocab["No"] = vocab.pop("love"), vocab.pop("hate")
    (model_dir / "tokenizer.json").write_text(json.dumps(tokenizer))
    boolq = tmp_path / "boolq"
    boolq.mkdir()
    write_jsonl(boolq / "val.jsonl", [{"question": "good", "passage": f"tasty {i}", "label": i % 2 == 0, "idx": i}
                                      for i in range(10)])
    data = {"task": "boolq", "train_examples": 6, "eval_examples": 100, "batch_size": 2, "max_length": 16}
    config = write_config(tmp_path, model_dir, boolq, data=data, run={"steps": 1, "eval_every": 0})
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prge: error: boolq: {boolq / 'train.jsonl'} not found") and \
        "set data.train_from: validation" in err, err
    assert not (tmp_path / "run").exists()
    assert main(["train", str(config), "--no-progress", "--set", "data.train_from=validation"]) == 0
    assert "6 train / 0 dev / 4 eval examples" in capsys.readouterr().out


def test_answer_logprobs_names_candidates_that_are_not_one_row_of_token_ids(tmp_path):
    model_dir, _ = make_tiny_assets(tmp_path)
    trainer = trainer_of(model_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    batch = prge.TokenBatch(ids, torch.tensor([[-100, -100, -100, 5]]))
    assert trainer.answer_logprobs(batch, torch.tensor([4, 5])).shape == (1, 2)
    for candidates in (torch.tensor([[4, 5]]), torch.tensor([4.0, 5.0])):
        with pytest.raises(ValueError, match=r"answer_logprobs: candidates are a 1-D tensor \[C\] of token ids"):
            trainer.answer_logprobs(batch, candidates)


def test_macro_f1_averages_over_the_classes_labels_or_predictions_hold():
    """Hand-computed: a label word neither the labels nor the predictions hold is not an F1 of
    0 (sklearn's f1_score(average='macro') without `labels`)."""
    from prge.data.kinds import classification_metrics

    labels = torch.tensor([0, 0, 1, 1, 1])
    perfect = classification_metrics(labels.clone(), labels, classes=3)  # class 2 nowhere
    assert perfect == {"accuracy": 1.0, "macro_f1": 1.0}
    # class 0: TP 1, FP 1, FN 1 -> 0.5; class 1: TP 2, FP 0, FN 1 -> 0.8; class 2: TP 0, FP 1 -> 0
    mixed = classification_metrics(torch.tensor([0, 2, 0, 1, 1]), labels, classes=3)
    assert mixed["accuracy"] == 0.6 and abs(mixed["macro_f1"] - (0.5 + 0.8 + 0.0) / 3) < 1e-12
    majority = classification_metrics(torch.ones(5, dtype=torch.long), labels, classes=3)
    assert abs(majority["macro_f1"] - (0.0 + 0.75) / 2) < 1e-12  # class 1: 2·3 / (2·3 + 2)


WINOGRANDE = [  # sentences of the tiny vocabulary; options of one and two tokens
    {"sentence": "good tasty _ love it", "option1": "great", "option2": "stale", "answer": "1"},
    {"sentence": "bad it _ hate it awful", "option1": "awful", "option2": "love", "answer": "2"},
    {"sentence": "love _ good tasty", "option1": "positive it", "option2": "negative", "answer": "1"},
    {"sentence": "it _ it", "option1": "good", "option2": "bad", "answer": "2"},
    {"sentence": "Review : _ hate stale", "option1": "great love", "option2": "bad", "answer": "2"},
]


def test_winogrande_partial_scoring_is_lm_evaluation_harness_s_on_transformers(tmp_path):
    """accuracy_partial: lm-evaluation-harness's texts (the sentence up to the blank with each
    option, then " " + the rest), the continuation the tokens of both past the context's own (as
    lm-evaluation-harness splits them); the log-likelihoods equal transformers' on the same
    weights. accuracy and accuracy_raw, and the training targets, stay the whole candidate's."""
    from transformers import LlamaForCausalLM

    from prge.data.tasks import get_task

    model_dir, _ = make_tiny_assets(tmp_path)
    folder = tmp_path / "winogrande"
    folder.mkdir()
    write_jsonl(folder / "dev.jsonl", WINOGRANDE)
    task = get_task("winogrande")
    encoder = PromptEncoder(task, ModelTokenizer(model_dir), 32)
    encoded = encoder.encode_all(task.load("eval", folder))
    assert [[len(c) for c, _ in e.partial] for e in encoded] == [[3, 3], [3, 3], [3, 2], [2, 2], [4, 3]]
    trainer = trainer_of(model_dir)
    partial, counts = Scorer(trainer, encoder, batch_size=2).option_logliks(encoded, partial=True)

    hf_tokens = encoder.tokenizer.tokenizer
    hf = LlamaForCausalLM.from_pretrained(str(model_dir)).float().eval()
    reference = []
    with torch.no_grad():
        for record in WINOGRANDE:
            before, after = record["sentence"].split("_")
            row = []
            for option in (record["option1"], record["option2"]):
                context = hf_tokens(before + option)["input_ids"]  # lm-evaluation-harness's request
                whole = hf_tokens(before + option + " " + after.strip())["input_ids"]
                logp = torch.log_softmax(hf(torch.tensor([whole])).logits[0].double(), -1)
                row.append((sum(logp[t - 1, whole[t]].item() for t in range(len(context), len(whole))),
                            len(whole) - len(context)))
            reference.append(row)
    torch.testing.assert_close(partial, torch.tensor([[s for s, _ in r] for r in reference], dtype=torch.float64),
                               rtol=0, atol=2e-4)
    assert counts.tolist() == [[n for _, n in r] for r in reference]
    assert "accuracy_partial" not in evaluate(trainer, encoder, encoded, batch_size=2)  # a dev split's pick
    metrics = evaluate(trainer, encoder, encoded, batch_size=2, full=True)
    labels = [int(r["answer"]) - 1 for r in WINOGRANDE]
    chosen = [max(range(2), key=lambda k: r[k][0]) for r in reference]
    assert metrics["accuracy_partial"] == pytest.approx(sum(c == y for c, y in zip(chosen, labels)) / 5)
    whole = reference_logliks(model_dir, encoded)  # accuracy and accuracy_raw: the whole candidates
    assert metrics["accuracy_raw"] == pytest.approx(
        sum(max(range(2), key=lambda k: r[k][0]) == y for r, y in zip(whole, labels)) / 5)
    batch = encoder.batch(encoded)  # training: the gold candidate's every token
    for row, e in enumerate(encoded):
        targets = batch.targets[row]
        assert targets[targets != IGNORE_INDEX].tolist() == e.options[e.label]
    assert "(partial)" in task.kind.describe(metrics)
    assert task.kind.results(metrics, metrics)["accuracy_partial_after"] == metrics["accuracy_partial"]


def test_partial_scoring_texts_are_all_or_none_one_per_candidate_and_fit(tmp_path):
    from prge.data.tasks import get_task

    model_dir, _ = make_tiny_assets(tmp_path)
    task = get_task("winogrande")
    folder = tmp_path / "winogrande"
    folder.mkdir()
    write_jsonl(folder / "dev.jsonl", WINOGRANDE[:2])
    examples = task.load("eval", folder)
    encoder = PromptEncoder(task, ModelTokenizer(model_dir), 32)
    without = replace(examples[1], partial_scoring=(), where="record 2")
    with pytest.raises(ValueError, match="record 2: has no partial-scoring texts, and other examples of the split have"):
        encoder.encode_all([examples[0], without])
    short = replace(examples[1], partial_scoring=examples[1].partial_scoring[:1], where="record 2")
    with pytest.raises(ValueError, match="record 2: 1 partial-scoring pairs for 2 candidates"):
        encoder.encode_all([examples[0], short])
    # a context longer than data.max_length allows beside the continuation: its start dropped
    whole = encoder.encode_all(examples)[1].partial[0]  # "bad it awful" + " hate it awful": 3 + 3 tokens
    narrow = PromptEncoder(task, ModelTokenizer(model_dir), 5)
    context, continuation = narrow.encode_all(examples)[1].partial[0]
    assert (context, continuation) == (whole[0][1:], whole[1])
    cut = sum(len(c) + len(t) > 5 for e in encoder.encode_all(examples) for c, t in e.partial)
    assert cut and (f"prge: warning: data.max_length=5: {cut} of 4 partial-scoring contexts (accuracy_partial's "
                    "sentence up to each option) were cut to fit beside their continuations, to as few as"
                    in narrow.truncation_report())
    assert "partial-scoring" not in (encoder.truncation_report() or "")
    tiny = PromptEncoder(task, ModelTokenizer(model_dir), 3)
    with pytest.raises(ValueError, match="data.max_length=3 leaves no room for the context beside its 3-token "
                                         r"continuation \(partial scoring\)"):
        tiny.encode_partial(examples, [SimpleNamespace(options=[[1], [2]], partial=None)] * 2)


def test_prge_train_on_winogrande_reports_the_partial_accuracy(tmp_path):
    from conftest import write_config
    from prge.cli import main

    model_dir, _ = make_tiny_assets(tmp_path)
    folder = tmp_path / "winogrande"
    folder.mkdir()
    write_jsonl(folder / "dev.jsonl", WINOGRANDE * 3)
    config = write_config(tmp_path, model_dir, folder, data={"task": "winogrande", "train_from": "validation",
                                                             "train_examples": 8, "eval_examples": 7,
                                                             "batch_size": 2, "max_length": 16},
                          run={"steps": 2, "eval_every": 0})
    assert main(["train", str(config), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"accuracy_partial_before", "accuracy_partial_after"} <= set(summary)
    assert 0 <= summary["accuracy_partial_after"] <= 1
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_accuracy_partial" in r] == [0, 2]


def test_partial_scoring_pairs_are_encoded_for_the_eval_split_only(tmp_path):
    """Only the full evaluation (the eval split's) reads partial-scoring pairs: the training and dev
    splits' are not encoded, so a pair that could not be (its continuation no tokens of its own)
    refuses no record there; the eval split's are, and their token ids are checked against the
    vocabulary with the rest."""
    import prge
    from conftest import write_config
    from prge.setup import check_token_ids, setup_data

    model_dir, _ = make_tiny_assets(tmp_path)
    folder = tmp_path / "winogrande"
    folder.mkdir()
    write_jsonl(folder / "dev.jsonl", WINOGRANDE * 3)
    config = prge.load_run_config(str(write_config(tmp_path, model_dir, folder, data={
        "task": "winogrande", "train_from": "validation", "train_examples": 6, "dev_examples": 4,
        "eval_examples": 5, "batch_size": 2, "max_length": 16, "protocol": "mezo"})))
    data = setup_data(config)
    assert len(data.train) == 6 and len(data.dev) == 4
    assert all(e.partial is None for e in data.train + data.dev) and all(e.partial for e in data.eval)
    examples = data.task.load("eval", folder)[:2]
    broken = replace(examples[0], partial_scoring=tuple((c, "") for c, _ in examples[0].partial_scoring))
    with pytest.raises(ValueError, match="tokenize to no tokens after the sentence up to the option"):
        data.encoder.encode_all([broken, examples[1]])
    assert data.encoder.encode_all([broken, examples[1]], full=False)[0].options  # trained on as before
    e = data.eval[0]
    top = max(i for pair in e.partial for ids in pair for i in ids)
    only_partial = replace(e, prompt_ids=[0], options=[[0], [0]])  # its largest id in a partial pair
    check_token_ids(model_dir, top + 1, [only_partial])
    with pytest.raises(ValueError, match=f"token id {top} is outside the model's vocabulary"):
        check_token_ids(model_dir, top, [only_partial])
