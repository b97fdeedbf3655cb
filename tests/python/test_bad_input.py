"""Bad input a user can cause ends as `prge: error: ...` (exit 2) naming the key or step,
and never as a run marked finished with non-finite results. Table-driven: one row a case."""
import json

import pytest

from conftest import make_tiny_assets, write_config
from prge.cli import main

# (config overrides, what the error must say)
CONFIG_CASES = [
    ({"estimator": {"epsilon": "inf"}}, "estimator.epsilon: expected a finite number, got 'inf'"),
    ({"optimizer": {"lr": "inf"}}, "optimizer.lr: expected a finite number, got 'inf'"),
    ({"optimizer": {"lr": "nan"}}, "optimizer.lr: expected a finite number, got 'nan'"),
    ({"adapter": {"alpha": "nan"}}, "adapter.alpha: expected a finite number, got 'nan'"),
    ({"optimizer": {"lr": "1e400"}}, "optimizer.lr: expected a finite number, got '1e400'"),
    # finite but absurd: no setting anyone means, rejected before anything runs
    ({"optimizer": {"lr": 1e40}}, "optimizer.lr must be <= 10"),
    ({"optimizer": {"weight_decay": 1e6}}, "optimizer.weight_decay must be <= 10"),
    ({"estimator": {"epsilon": 1e3}}, "estimator.epsilon must be <= 10"),
    ({"adapter": {"alpha": 0}}, "adapter.alpha: must be in (0, 10000]"),
    ({"adapter": {"alpha": 1e9}}, "adapter.alpha: must be in (0, 10000]"),
]


@pytest.fixture
def assets(tmp_path):
    return tmp_path, *make_tiny_assets(tmp_path)


@pytest.mark.parametrize("overrides, message", CONFIG_CASES)
def test_non_finite_config_values_are_rejected_when_read(assets, capsys, overrides, message):
    tmp_path, model_dir, data_dir = assets
    path = write_config(tmp_path, model_dir, data_dir, **overrides)
    path.write_text(path.read_text().replace("'inf'", "inf").replace("'nan'", "nan").replace("'1e400'", "1e400"))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: ") and message in err, err


def test_a_diverging_run_stops_naming_the_step_and_is_not_marked_finished(assets, capsys):
    """The largest accepted lr and epsilon in float16: the perturbed activations overflow."""
    tmp_path, model_dir, data_dir = assets
    path = write_config(tmp_path, model_dir, data_dir, model={"dtype": "float16"}, optimizer={"lr": 10},
                        estimator={"epsilon": 10}, run={"steps": 6, "eval_every": 0, "log_every": 1})
    assert main(["train", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: step ") and "the run diverged" in err, err
    run = tmp_path / "run"
    assert not (run / "summary.json").exists()
    for line in (run / "metrics.jsonl").read_text().splitlines():  # valid JSON, finite numbers only
        record = json.loads(line)
        assert all(v == v and abs(v) != float("inf") for v in record.values() if isinstance(v, float))


def test_cli_input_mistakes_are_named(assets, capsys):
    tmp_path, model_dir, data_dir = assets
    path = write_config(tmp_path, model_dir, data_dir)
    cases = [
        (["check", str(path), "--set", "run.steps="], "--set 'run.steps=': an empty value"),
        (["check", str(path), "--set", "estimator.queries=[1"], "the value is not valid YAML"),
        (["check", str(path), "--set", "run.output_dir=''"], "run.output_dir: must name a directory"),
    ]
    listed = tmp_path / "list.yaml"
    listed.write_text("- model\n- data\n")
    cases.append((["check", str(listed), "--set", "run.steps=3"], "expected a mapping of sections"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("prge: error: ") and message in err, (argv, err)


@pytest.mark.parametrize("label", ["-1", "2"])
def test_a_label_outside_the_label_words_is_named_at_load(tmp_path, label):
    from prge.data.tasks import get_task

    (tmp_path / "train.tsv").write_text(f"sentence\tlabel\ngood film\t1\nbad film\t{label}\n")
    with pytest.raises(ValueError, match=rf"^sst2: train split in {tmp_path}: record 2: label {label} is outside 0..1"):
        get_task("sst2").load("train", tmp_path)


def _damage(kind, model_dir):
    import json as _json

    weights, config = model_dir / "model.safetensors", model_dir / "config.json"
    if kind == "empty weights":
        weights.write_bytes(b"")
    elif kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif kind == "huge header length":
        data = bytearray(weights.read_bytes())
        data[:8] = (2**64 - 4).to_bytes(8, "little")
        weights.write_bytes(bytes(data))
    elif kind == "malformed config.json":
        config.write_text("{")
    elif kind == "config.json shape mismatch":
        tree = _json.loads(config.read_text())
        tree["intermediate_size"] += 8
        config.write_text(_json.dumps(tree))
    elif kind == "config.json value of the wrong type":
        tree = _json.loads(config.read_text())
        tree["hidden_size"] = "wide"
        config.write_text(_json.dumps(tree))
    elif kind == "tokenizer beyond the vocabulary":
        tree = _json.loads((model_dir / "tokenizer.json").read_text())
        tree["model"]["vocab"] = {w: i + 100 for w, i in tree["model"]["vocab"].items()}
        (model_dir / "tokenizer.json").write_text(_json.dumps(tree))


@pytest.mark.parametrize("kind, message", [
    ("empty weights", "truncated or not a safetensors file"),
    ("truncated weights", "model.safetensors"),
    ("huge header length", "truncated or not a safetensors file"),
    ("malformed config.json", "malformed config.json"),
    ("config.json shape mismatch", "shape"),
    ("config.json value of the wrong type", "config.json: hidden_size: not a number: wide"),
    ("tokenizer beyond the vocabulary", "is outside the model's vocabulary"),
])
def test_broken_model_files_are_named_not_tracebacks(assets, capsys, kind, message):
    tmp_path, model_dir, data_dir = assets
    _damage(kind, model_dir)
    path = write_config(tmp_path, model_dir, data_dir, run={"steps": 1, "eval_every": 0})
    assert main(["train", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: ") and message in err and str(model_dir) in err, err


def test_set_errors_point_at_the_users_file_or_the_set(assets, capsys):
    tmp_path, model_dir, data_dir = assets
    path = write_config(tmp_path, model_dir, data_dir, optimizer={"lr": "fast"})
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith("lr:"))
    assert main(["check", str(path), "--set", "run.steps=3"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}:" in err and "optimizer.lr: expected a finite number, got 'fast'" in err, err
    good = write_config(tmp_path, model_dir, data_dir)
    assert main(["check", str(good), "--set", "optimizer.lr=fast"]) == 2
    assert f"{good}: --set optimizer.lr: optimizer.lr: expected a finite number" in capsys.readouterr().err


def test_huge_values_and_malformed_json_lines_are_named_briefly(assets, capsys, tmp_path):
    from prge.data.tasks import get_task

    _, model_dir, data_dir = assets
    path = write_config(tmp_path, model_dir, data_dir)
    assert main(["check", str(path), "--set", "model.name=" + "m" * 10_000_000]) in (0, 2)
    capsys.readouterr()
    assert main(["train", str(path), "--no-progress", "--set", "model.name=" + "m" * 10_000_000]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: ") and len(err) < 2200, len(err)
    rte = tmp_path / "rte"
    rte.mkdir()
    (rte / "train.jsonl").write_text('{"premise": "a", "hypothesis": "b", "label": "entailment"}\n{oops\n')
    with pytest.raises(ValueError, match=r"train.jsonl:2: malformed JSON"):
        get_task("rte").load("train", rte)
    runs = tmp_path / "runs" / "r"
    runs.mkdir(parents=True)
    (runs / "summary.json").write_text('{"accuracy_before": 0.5, "accuracy_after": 0.5}')
    (runs / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    assert main(["report", str(tmp_path / "runs")]) == 2
    assert "metrics.jsonl:2: malformed JSON" in capsys.readouterr().err


def test_an_evaluation_that_scores_nan_is_an_error_not_an_accuracy(assets, capsys):
    """float16 weights whose activations overflow (the float32 model is finite): the evaluation
    before training names the split and the NaN count, and no accuracy is printed or saved."""
    from safetensors.torch import load_file, save_file

    tmp_path, model_dir, data_dir = assets
    weights = load_file(str(model_dir / "model.safetensors"))
    save_file({k: v * 300 if "proj" in k else v for k, v in weights.items()}, str(model_dir / "model.safetensors"))
    path = write_config(tmp_path, model_dir, data_dir, model={"dtype": "float16"}, run={"steps": 2, "eval_every": 0})
    assert main(["train", str(path), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("prge: error: eval: 16 of 16 examples scored NaN or inf"), captured.err
    assert "accuracy" not in captured.out
    assert not (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert main(["train", str(path), "--no-progress", "--set", "model.dtype=float32", "--overwrite"]) == 0


class _Scores:
    """A trainer stand-in: the scores of sequences that start with token 99 are NaN."""

    def answer_logprobs(self, batch, candidates):
        import torch

        out = torch.zeros(batch.input_ids.shape[0], len(candidates))
        out[batch.input_ids[:, 0] == 99] = float("nan")
        return out

    def score(self, batch):
        import torch

        nll = torch.ones(batch.input_ids.shape[0])
        nll[batch.input_ids[:, 0] == 99] = float("nan")
        return nll, torch.ones_like(nll)


@pytest.mark.parametrize("generation", [False, True])
def test_evaluate_names_the_split_and_counts_the_nan_examples(generation):
    from prge.data.batching import EncodedExample, PromptEncoder
    from prge.data.examples import Task
    from prge.data.kinds import CLASSIFICATION, GENERATION
    from prge.evaluation import evaluate

    task = Task("t", "", () if generation else (" a", " b"), str, str, response_field="r" if generation else None,
                kind=GENERATION if generation else CLASSIFICATION)
    encoder = PromptEncoder.__new__(PromptEncoder)  # no tokenizer needed: the examples come encoded
    encoder.task, encoder.pad_id, encoder.single_token_labels = task, 0, True
    examples = [EncodedExample([99 if i in (1, 4, 6) else 5, 6], -1 if generation else 0,
                               answer_ids=[7] if generation else None, options=None if generation else [[7], [8]])
                for i in range(8)]
    with pytest.raises(ValueError, match=r"^dev: 3 of 8 examples scored NaN or inf"):
        evaluate(_Scores(), encoder, examples, batch_size=3, split="dev")
    examples = [EncodedExample([5, 6], e.label, e.answer_ids, e.options) for e in examples]
    assert evaluate(_Scores(), encoder, examples, batch_size=3, split="dev")  # finite scores: a result


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


# (what goes wrong in the custom task's train file / config, what the error must say)
DATA_CASES = [
    ({"records": [{"text": "good", "sentiment": "positive"}, {"text": "", "sentiment": "negative"}]},
     "train.jsonl: record 2: field 'text' is empty"),
    ({"records": [{"text": "   ", "sentiment": "positive"}]}, "train.jsonl: record 1: field 'text' is empty"),
    ({"template": "  \n"}, "train.jsonl: record 1: the template renders to nothing (only whitespace)"),
    ({"label_words": {"positive": " ", "negative": " negative"}},
     "train.jsonl: record 1: label word ' ' (data.label_words) tokenizes to no tokens after the prompt"),
    ({"response": True, "records": [{"text": "good", "answer": "positive"}, {"text": "bad", "answer": ""}]},
     "train.jsonl: record 2: field 'answer' (data.response_field) is empty"),
]


@pytest.mark.parametrize("case, message", DATA_CASES)
def test_data_mistakes_name_file_record_and_field(assets, capsys, case, message):
    """The issue's case first: `"text": ""` once ended in 'every sequence needs at least one
    answer token' naming nothing."""
    import yaml

    tmp_path, model_dir, _ = assets
    records = case.get("records", [{"text": "good tasty", "sentiment": "positive"}])
    _jsonl(tmp_path / "train.jsonl", records)
    _jsonl(tmp_path / "test.jsonl", [{"text": "good", "sentiment": "positive", "answer": "positive"}])
    data = {"task": "custom", "train_file": str(tmp_path / "train.jsonl"), "eval_file": str(tmp_path / "test.jsonl"),
            "template": case.get("template", "{text}"), "train_examples": 2, "eval_examples": 1, "batch_size": 1}
    if case.get("response"):
        data["response_field"] = "answer"
    else:
        data.update(label_field="sentiment", label_words=case.get("label_words", {"positive": " positive",
                                                                                  "negative": " negative"}))
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": str(model_dir)}, "data": data,
                                    "run": {"steps": 1, "output_dir": str(tmp_path / "run")}}, sort_keys=False))
    assert main(["train", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: data.train_file: ") and message in err, err
    assert not (tmp_path / "run").exists()  # named before anything ran


def test_a_built_in_tasks_empty_field_names_task_split_and_record(tmp_path):
    from prge.data.tasks import get_task

    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood film\t1\n \t0\n")
    with pytest.raises(ValueError, match=rf"^sst2: train split in {tmp_path}: record 2: field 'text' is empty"):
        get_task("sst2").load("train", tmp_path)


@pytest.mark.parametrize("name, text, message", [
    ("generation_config.json", "{oops", "generation_config.json: cannot read the generation settings"),
    ("generation_config.json", '{"eos_token_id": "x"}', "generation_config.json: eos_token_id must be a token id"),
    ("chat_template.jinja", "{{ raise_exception('no turns') }}", "the chat template fails on a user conversation"),
    ("tokenizer_config.json", "{", "tokenizer_config.json: malformed tokenizer_config.json"),
])
def test_broken_tokenizer_side_files_are_named(assets, capsys, name, text, message):
    tmp_path, model_dir, _ = assets
    (model_dir / name).write_text(text)
    assert main(["generate", str(model_dir), "--prompt", "Review : good", "--chat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prge: error: {model_dir}") and message in err, err
