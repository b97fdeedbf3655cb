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
    ({"optimizer": {"lr": 1e40}}, "optimizer.lr: must be <= 10"),
    ({"optimizer": {"weight_decay": 1e6}}, "optimizer.weight_decay: must be <= 10"),
    ({"estimator": {"epsilon": 1e3}}, "estimator.epsilon: must be <= 10"),
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
        # --set strips ASCII whitespace around key and value only: a no-break space reaches the reader
        (["check", str(path), "--set", "run.output_dir=runs/x\u00a0"],
         "--set run.output_dir: 'runs/x\\u00a0' starts or ends with whitespace"),
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
    with pytest.raises(ValueError, match=rf"^sst2: train split: {tmp_path}/train.tsv: record 2 \(line 3\): label {label} is outside 0..1"):
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
    ("malformed config.json", "not JSON: line 1, column 2: the file ends where JSON expects a key"),
    ("config.json shape mismatch", "shape"),
    ("config.json value of the wrong type", "config.json: hidden_size: the string \"wide\" where a number is expected"),
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
    assert f"{good}: --set optimizer.lr: expected a finite number" in capsys.readouterr().err


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
     "train.jsonl: record 2 (line 2): field 'text' is empty"),
    ({"records": [{"text": "   ", "sentiment": "positive"}]}, "train.jsonl: record 1 (line 1): field 'text' is empty"),
    ({"response": True, "records": [{"text": "good", "answer": "positive"}, {"text": "bad", "answer": ""}]},
     "train.jsonl: record 2 (line 2): field 'answer' (data.response_field) is empty"),
    # a zero-width space or a byte-order mark alone shows nothing either
    ({"records": [{"text": "\u200b", "sentiment": "positive"}]},
     "train.jsonl: record 1 (line 1): field 'text' = '\\u200b' holds only invisible characters"),
    ({"response": True, "records": [{"text": "good", "answer": " \ufeff"}]},
     "train.jsonl: record 1 (line 1): field 'answer' (data.response_field) = ' \\ufeff' holds only invisible "
     "characters"),
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
    with pytest.raises(ValueError, match=rf"^sst2: train split: {tmp_path}/train.tsv: record 2 \(line 3\): field 'text' is empty"):
        get_task("sst2").load("train", tmp_path)


def test_a_tokenizer_that_cannot_encode_is_named(assets, capsys):
    """transformers loads a word-level tokenizer whose unk token is not in its vocabulary, and
    encoding any unknown word then raises the tokenizers library's plain Exception."""
    from tokenizers import Tokenizer

    tmp_path, model_dir, data_dir = assets
    spec = json.loads(Tokenizer.from_file(str(model_dir / "tokenizer.json")).to_str())
    spec["model"]["vocab"].pop(spec["model"]["unk_token"])
    (model_dir / "tokenizer.json").write_text(json.dumps(spec))
    assert main(["train", str(write_config(tmp_path, model_dir, data_dir)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prge: error: {model_dir}: its tokenizer cannot encode the text ") and "Traceback" not in err


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


# Issue 24, "no silent no-op": settings under which training would do nothing or nearly nothing
# are errors naming the keys and numbers, decided when the config is read (check) or at the
# first step (train).
CUSTOM_SAME_WORDS = {"task": "custom", "train_file": "a.csv", "eval_file": "b.csv", "template": "{text}",
                     "label_words": {"great": " good", "other": " good"}}
NO_OP_CASES = [
    ({"optimizer": {"accumulate": 10}}, "check", "optimizer.accumulate: 10 exceeds run.steps = 6"),
    ({"optimizer": {"warmup_steps": 7}}, "check", "optimizer.warmup_steps: 7 exceeds the run's 6 updates"),
    ({"optimizer": {"lr": 0}}, "check", "optimizer.lr: 0 with run.steps = 6: no update would change a weight"),
    ({"optimizer": {"accumulate": 4}}, "check",
     "optimizer.accumulate: 4 does not divide run.steps = 6: the last 2 step(s) would spend forward passes on "
     "estimates that no update applies (run.steps 4 or 8)"),
    ({"estimator": {"kind": "mezo", "parallel": "sequential"}, "adapter": {"init_from": "/somewhere"}}, "check",
     "adapter.init_from: a PEFT adapter to start from, and estimator.kind mezo trains every weight without adapters"),
    ({"adapter": {"alpha_pattern": {"(?P<x>q_proj)": 16}}}, "train",
     "adapter.alpha_pattern: adapter pattern '(?P<x>q_proj)' is not a regular expression"),
    ({"adapter": {"alpha_pattern": {"layers\\.[[:digit:]]\\.self_attn\\.q_proj": 32}}}, "train",
     "adapter.alpha_pattern: module model.layers.0.self_attn.q_proj: rank 4, scaling 8 as prge matches the patterns, "
     "rank 4, scaling 2 as PEFT (Python's re) matches them"),
    ({"data": CUSTOM_SAME_WORDS}, "check",
     "data.label_words.other: label word ' good' is also the word of label 'great'"),
    ({"data": {**CUSTOM_SAME_WORDS, "label_words": {"great": " good"}}}, "check",
     "data.label_words: one label word: classification picks among at least two"),
    ({"data": {**CUSTOM_SAME_WORDS, "label_words": {"great": " good", "other": " "}}}, "check",
     "data.label_words.other: a label word of whitespace only scores the space after the prompt"),
    # Two words the word-level tokenizer does not know: both [UNK], every score tied.
    ({"data": {"task": "custom", "train_file": "{d}/train.csv", "eval_file": "{d}/test.csv",
               "template": "Review : {review} Sentiment :", "label_field": "score",
               "label_words": {"great": " wonderful", "other": " dreadful"}}}, "train",
     "label word ' dreadful' (data.label_words) and label word ' wonderful' (data.label_words) tokenize to the "
     "same tokens after the prompt ([0])"),
    ({"estimator": {"queries": 1000000}}, "check", "estimator.queries: 1000000 exceeds 4096"),
    ({"adapter": {"targets": ["qkv_proj"]}}, "train",  # Phi-3's fused name on a Llama: named at its line
     "run.yaml:5:3: adapter.targets: unknown adapter target 'qkv_proj' (allowed for model_type 'llama'"),
    ({"data": {"batch_size": 20000}}, "check", "data.batch_size: 20000 x 4 points of estimator.queries 2"),
    ({"data": {"max_length": 256}}, "train",
     "data.max_length: 256 exceeds the model's max_position_embeddings 128 ({m}/config.json)"),
    ({"data": {"max_length": 256}}, "check",
     "data.max_length: 256 exceeds the model's max_position_embeddings 128 ({m}/config.json)"),
    ({"estimator": {"epsilon": 1e-30}}, "train",
     "estimator.epsilon: 1e-30 is too small for model.dtype float32: at step 1 all 4 perturbed losses are "
     "bit-identical"),
]


@pytest.mark.parametrize("overrides, command, message", NO_OP_CASES, ids=[c[2].split(":")[0] + "-" + str(i)
                                                                          for i, c in enumerate(NO_OP_CASES)])
def test_settings_that_train_nothing_are_named(assets, capsys, overrides, command, message):
    tmp_path, model_dir, data_dir = assets
    overrides = json.loads(json.dumps(overrides).replace("{d}", str(data_dir)))
    path = write_config(tmp_path, model_dir, data_dir, **overrides)
    argv = [command, str(path)] + (["--no-progress"] if command == "train" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: ") and message.format(m=model_dir) in err, err
    assert not (tmp_path / "run" / "summary.json").exists()


# Issue 24, "files are checked where they are read": a NaN in a file prge reads back is named
# with the file and the tensor, by every command that reads it.
@pytest.fixture
def damaged_run(assets):
    """A finished run (checkpoints at 2 and 4), its adapter exported, then a NaN written into
    `what` (trained / checkpoint / adapter)."""
    from safetensors.torch import load_file, save_file

    tmp_path, model_dir, data_dir = assets
    config = write_config(tmp_path, model_dir, data_dir, run={"steps": 4, "eval_every": 0, "checkpoint_every": 2})
    assert main(["train", str(config), "--no-progress"]) == 0
    run = tmp_path / "run"
    assert main(["adapters", "export", str(run), "--out", str(tmp_path / "adapter")]) == 0

    def poison(path):
        tensors = load_file(str(path))
        name = sorted(k for k in tensors if "lora_b" in k.lower() or "lora_B" in k)[0]
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("nan")
        save_file(tensors, str(path))
        return name
    return tmp_path, config, run, poison


NONFINITE_CASES = [
    ("trained.safetensors", lambda t, c, r: ["generate", str(r), "--prompt", "good"]),
    ("trained.safetensors", lambda t, c, r: ["adapters", "export", str(r), "--out", str(t / "out")]),
    ("trained.safetensors", lambda t, c, r: ["adapters", "export", str(r), "--merge", "--out", str(t / "out")]),
    ("checkpoint-4/checkpoint.safetensors", lambda t, c, r: ["train", str(c), "--no-progress", "--resume"]),
    ("adapter/adapter_model.safetensors",
     lambda t, c, r: ["train", str(c), "--no-progress", "--overwrite", "--set", f"adapter.init_from={t / 'adapter'}"]),
]


@pytest.mark.parametrize("damaged, argv", NONFINITE_CASES,
                         ids=["generate", "adapters-export", "merge", "resume", "init_from"])
def test_non_finite_tensors_are_named_by_file_and_tensor(damaged_run, capsys, damaged, argv):
    tmp_path, config, run, poison = damaged_run
    path = (tmp_path if damaged.startswith("adapter/") else run) / damaged
    tensor = poison(path)
    if damaged.startswith("checkpoint"):
        (run / "summary.json").unlink()  # an unfinished run, resumable from its checkpoint
    assert main(argv(tmp_path, config, run)) == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: ") and str(path) in err and tensor in err and "non-finite" in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_resume_refuses_changed_data_unless_told(damaged_run, capsys):
    tmp_path, config, run, _ = damaged_run
    (run / "summary.json").unlink()
    train_csv = tmp_path / "food" / "train.csv"
    train_csv.write_text(train_csv.read_text().replace("good", "great", 1))
    assert main(["train", str(config), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prge: error: {run}: the train data differ from the checkpoint's") and \
        "--resume-changed-data" in err, err
    assert main(["train", str(config), "--no-progress", "--resume", "--resume-changed-data"]) == 0
    assert "the train data changed since the checkpoint" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["data_fingerprint"]) == {"train", "dev", "eval"}


# Issue 24, "every error names its place": one `prge: error:` line naming the file, key, line
# or option. (what to set up, argv, what the line must say)
def _bom_csv(tmp, model_dir):
    (tmp / "bom.csv").write_bytes("\ufefftext,label\ngood tasty,great\nbad awful,other\n".encode())
    return ["train", str(_custom(tmp, model_dir, "bom.csv")), "--no-progress"]


def _custom(tmp, model_dir, train_file):
    import yaml

    path = tmp / "custom.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": str(model_dir)}, "data": {
        "task": "custom", "train_file": str(tmp / train_file), "eval_file": str(tmp / train_file), "template": "{text}",
        "label_words": {"great": " good", "other": " bad"}, "train_examples": 2, "eval_examples": 2, "batch_size": 1},
        "run": {"steps": 1, "output_dir": str(tmp / "custom-run")}}))
    return path


def _bytes_in(name, data):
    def setup(tmp, model_dir):
        (tmp / name).write_bytes(data)
        if name.endswith(".yaml"):
            return ["check", str(tmp / name)]
        return ["train", str(_custom(tmp, model_dir, name)), "--no-progress"]
    return setup


def _check(name, text, *more):
    """A PLACE_CASES setup: `prge check` of a config file NAME holding TEXT, then MORE arguments."""
    return lambda tmp, model_dir: ["check", str(_write(tmp / name, text)), *more]


PLACE_CASES = [
    ("seed", lambda t, m: ["generate", str(m), "--prompt", "good", "--seed", "-1"],
     "--seed -1: must be an integer from 0 to 2^64-1"),
    ("huge max-new-tokens", lambda t, m: ["generate", str(m), "--prompt", "good", "--max-new-tokens", str(10**20)],
     f"--max-new-tokens {10**20}: must be an integer from 1 to 2147483647"),
    ("max-new-tokens beyond positions", lambda t, m: ["generate", str(m), "--prompt", "good", "--max-new-tokens", "500"],
     "--max-new-tokens 500: with the longest prompt's"),
    ("top-p", lambda t, m: ["generate", str(m), "--prompt", "good", "--top-p", "0"], "--top-p 0.0: must be"),
    ("top-k without sampling", lambda t, m: ["generate", str(m), "--prompt", "good", "--top-k", "5"],
     "--top-k 5 limits sampling, and without --temperature (> 0) decoding is greedy, so it would change nothing"),
    ("a prompt beyond positions", lambda t, m: ["generate", str(m), "--prompt", "good " * 5000],
     "--prompt: the longest prompt is 5000 tokens, which leaves no position to generate at"),
    ("non-UTF-8 config", _bytes_in("latin1.yaml", "run:\n  output_dir: caf\xe9\n".encode("latin-1")),
     "latin1.yaml:2:18: not UTF-8 text (byte 0xe9)"),
    ("non-UTF-8 JSONL", _bytes_in("train.jsonl", b'{"text": "good", "label": "great"}\n{"text": "caf\xe9"}\n'),
     "train.jsonl:2: not UTF-8 text (byte 0xe9"),
    ("non-UTF-8 CSV", _bytes_in("train.csv", b"text,label\ncaf\xe9,great\n"), "train.csv: not UTF-8 text (byte 0xe9"),
    ("non-UTF-8 TSV of a built-in task", lambda t, m: _sst2_latin1(t, m), "train.tsv: not UTF-8 text (byte 0xe9"),
    ("a CSV with a byte-order mark reads", _bom_csv, None),
    ("empty config with --set", _check("empty.yaml", "# nothing\n", "--set", "run.steps=3"),
     "empty.yaml: the config is empty"),
    ("duplicate key", _check("dup.yaml", "run:\n  steps: 3\n  steps: 4\n"),
     "dup.yaml:3:3: run.steps: duplicate key: it is also at line 2"),
    # YAML's null (an empty value, ~, null) is no value: never silently the key's default.
    ("empty value", _check("null.yaml", "optimizer:\n  lr:\n  momentum: 0.9\n"),
     "null.yaml:2:3: optimizer.lr: no value (YAML reads an empty value, ~ and null as null); leave the key out"),
    ("tilde in a flow mapping", _check("null.yaml", "run: {steps: ~}\n"),
     "null.yaml:1:7: run.steps: no value"),
    ("null choice", _check("null.yaml", "estimator:\n  parallel: null\n"),
     "null.yaml:2:3: estimator.parallel: no value"),
    # A .gguf that is none: refused by check from its first bytes; one cut short, by train, naming the key.
    ("not a GGUF file", lambda t, m: _gguf_run(t, "check", b"abc"),
     "gguf.yaml:1:15: model.name: '" + "{tmp}/m.gguf' is not a GGUF file (it does not begin with the bytes 'GGUF')"),
    ("a GGUF file cut short", lambda t, m: _gguf_run(t, "train", b"GGUF\x03\x00\x00\x00"),
     "gguf.yaml:1:15: model.name: {tmp}/m.gguf: not a readable GGUF file"),
    ("empty choice", _check("null.yaml", "estimator:\n  kind: ''\n"),
     "null.yaml:2:9: estimator.kind: empty; leave the key out for its default"),
    ("empty section", _check("null.yaml", "run: {steps: 3}\noptimizer:\nmodel: {}\n"),
     "null.yaml:2:1: optimizer: no value"),
    ("empty list", _check("null.yaml", "adapter:\n  targets:\n"),
     "null.yaml:2:3: adapter.targets: no value"),
    ("null rank_pattern", _check("null.yaml", "adapter: {rank_pattern: ~}\n"),
     "null.yaml:1:11: adapter.rank_pattern: no value"),
    ("empty module pattern", _check("null.yaml", "adapter: {rank_pattern: {~: 4}}\n"),
     "null.yaml:1:26: adapter.rank_pattern: a module pattern may not be empty"),
    ("no adapters for P-RGE", _check("ok.yaml", "run: {steps: 3}\n", "--set", "adapter=null"),
     "ok.yaml: --set adapter: null (no adapters) is for estimator.kind mezo; 'prge' trains LoRA-FA B"),
    ("tagged !!null", _check("null.yaml", "data:\n  data_dir: !!null\n"),
     "null.yaml:2:3: data.data_dir: no value"),
    ("null section filled by a --set", _check("null.yaml", "run: ~\n", "--set", "run.steps=3"),
     "null.yaml:1:1: run: no value"),
    ("null pattern value", _check("null.yaml", "adapter:\n  rank_pattern:\n    q_proj:\n  rank: 4\n"),
     "null.yaml:3:5: adapter.rank_pattern.q_proj: no value"),
    ("empty list item", _check("null.yaml", "adapter:\n  targets:\n    - q_proj\n    -\n"),
     "null.yaml:2:3: adapter.targets: an empty item"),
    ("a second document", _check("two.yaml", "---\nrun: {steps: 3}\n---\nrun: {steps: 4}\n"),
     "two.yaml:4:1: a second YAML document"),
    ("duplicate key in a --set", _check("ok.yaml", "run: {steps: 3}\n", "--set", "run={steps: 3, steps: 5}"),
     "run.steps: duplicate key"),
    ("empty model name", _check("ok.yaml", "model: {name: ''}\n"),
     "ok.yaml:1:15: model.name: empty (a model directory, a .gguf file or a registered name"),
    ("empty custom-task field", _check("c.yaml", "data: {task: custom, train_file: a, eval_file: b, template: x, "
                                                 "label_field: '', label_words: {a: b, c: d}}\n"),
     "c.yaml:1:77: data.label_field: empty (task: custom reads a file, template or field name here)"),
    ("a column counts characters", _check("u.yaml", "model: {name: \"\u00e9\u00e9\", dtype: ''}\n"), "u.yaml:1:28: model.dtype: empty"),
    ("--set null", _check("ok.yaml", "run: {steps: 3}\n", "--set", "optimizer.lr=null"),
     "ok.yaml: --set optimizer.lr: no value"),
]


def _sst2_latin1(tmp, model_dir):
    import yaml

    (tmp / "sst2").mkdir()
    (tmp / "sst2" / "train.tsv").write_bytes("sentence\tlabel\nun caf\xe9\t1\n".encode("latin-1"))
    (tmp / "sst2" / "validation.tsv").write_text("sentence\tlabel\ngood\t1\n")
    path = _write(tmp / "sst2.yaml", yaml.safe_dump({"model": {"name": str(model_dir)},
                                                     "data": {"task": "sst2", "data_dir": str(tmp / "sst2")},
                                                     "run": {"output_dir": str(tmp / "sst2-run")}}))
    return ["train", str(path), "--no-progress"]


def _gguf_run(tmp, command, data):
    (tmp / "m.gguf").write_bytes(data)
    config = _write(tmp / "gguf.yaml", f"model: {{name: {tmp / 'm.gguf'}}}\nrun: {{output_dir: {tmp / 'run'}}}\n")
    return [command, str(config)] + (["--no-progress"] if command == "train" else [])


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, setup, message", PLACE_CASES, ids=[c[0] for c in PLACE_CASES])
def test_every_error_names_its_place(assets, capsys, name, setup, message):
    tmp_path, model_dir, _ = assets
    argv = setup(tmp_path, model_dir)
    code = main(argv)
    err = capsys.readouterr().err
    if message is None:
        assert code == 0, err
        return
    message = message.replace("{tmp}", str(tmp_path))
    assert code == 2 and err.startswith("prge: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_an_unparseable_option_value_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["generate", "m", "--prompt", "x", "--max-new-tokens", "10^20"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: argument --max-new-tokens: invalid int value: '10^20'"), err


def test_damaged_run_files_are_named(assets, capsys):
    """A cut-off checkpoint pointer and an empty summary.json name their file."""
    tmp_path, model_dir, data_dir = assets
    config = write_config(tmp_path, model_dir, data_dir, run={"steps": 4, "eval_every": 0, "checkpoint_every": 2})
    assert main(["train", str(config), "--no-progress"]) == 0
    run = tmp_path / "run"
    (run / "summary.json").write_text("")
    assert main(["report", str(tmp_path)]) == 2
    assert f"prge: error: {run / 'summary.json'}: empty" in capsys.readouterr().err
    (run / "summary.json").unlink()
    (run / "checkpoint.json").write_text('{"step": 4, "direc')
    assert main(["train", str(config), "--no-progress", "--resume"]) == 2
    assert f"prge: error: {run / 'checkpoint.json'}: malformed at line 1" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a torch without CUDA")
def test_a_cuda_device_on_a_cpu_only_torch_names_the_key(assets, capsys):
    tmp_path, model_dir, data_dir = assets
    path = write_config(tmp_path, model_dir, data_dir, model={"device": "cuda"})
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "device: cuda" in text)
    for argv in (["check", str(path)], ["train", str(path), "--no-progress"],
                 ["export", str(path), "--runtime", "onnx"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"prge: error: {path}:{line}:") and "model.device: cuda: " in err, err
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("section, value, wanted", [
    ("data", {"task": "finefood"}, "data.task: unknown task 'finefood' (known: "),
    ("model", {"name": "nosuchmodel"}, "model.name: unknown model 'nosuchmodel': not a directory"),
    ("model", {"name": "/"}, "model.name: model directory '/' has no config.json"),
])
def test_check_refuses_what_train_would_naming_file_line_and_key(assets, capsys, section, value, wanted):
    """`prge check` refuses a config whose task, model or device `prge train` would refuse
    before loading anything, with the same one-line error naming the file, line and key; a
    --set value is named as the override it came from."""
    tmp_path, model_dir, data_dir = assets
    path = write_config(tmp_path, model_dir, data_dir, **{section: value})
    key = next(iter(value))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith(f"{key}:")
                and str(value[key]) in text)
    for command in ("check", "train"):
        assert main([command, str(path)] + (["--no-progress"] if command == "train" else [])) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"prge: error: {path}:{line}:") and wanted in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "good").mkdir(exist_ok=True)
    good = write_config(tmp_path / "good", model_dir, data_dir)
    assert main(["check", str(good), "--set", f"{section}.{key}={value[key]}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prge: error: {good}: --set {section}.{key}") and wanted in err, err


@pytest.mark.parametrize("change, wanted", [
    ({"model_type": "mamba"}, "model_type 'mamba' is not supported"),
    ({"rope_scaling": {"rope_type": "su_yarn", "factor": 2.0}}, "rope_scaling"),
    ({"hidden_activation": "relu"}, "key 'hidden_activation' is not supported for model_type 'llama'"),
])
def test_check_reads_a_model_directorys_config_as_the_loader_does(assets, capsys, change, wanted):
    """`prge check` reads a model directory's config.json as train's loader would and refuses
    what it refuses, naming the file (no weights read)."""
    import shutil

    tmp_path, model_dir, data_dir = assets
    changed = tmp_path / "changed_model"
    shutil.copytree(model_dir, changed)
    config_json = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config_json, **change}))
    path = write_config(tmp_path, changed, data_dir)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "changed_model" in text)
    for command in ("check", "train"):
        assert main([command, str(path)] + (["--no-progress"] if command == "train" else [])) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"prge: error: {path}:{line}:") and f"model.name: {changed / 'config.json'}: " in err, err
        assert wanted in err and len(err.strip().splitlines()) == 1, err


def test_check_reads_a_converted_models_config_without_converting(assets, capsys, monkeypatch):
    """A .gguf file (or registered name) already converted into the cache: `prge check` reads the
    conversion's config.json; one not converted yet is left to train (nothing converted here)."""
    import shutil

    from prge.models import gguf_cache_dir
    from prge.models.gguf_convert import CONVERTER_VERSION, MARKER

    tmp_path, model_dir, data_dir = assets
    monkeypatch.setenv("PRGE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))  # only its first bytes are read by check
    path = write_config(tmp_path, gguf, data_dir)
    assert main(["check", str(path)]) == 0
    capsys.readouterr()
    assert not (tmp_path / "cache").exists()
    out = gguf_cache_dir(gguf)
    shutil.copytree(model_dir, out)
    (out / MARKER).write_text(json.dumps({"converter": CONVERTER_VERSION}))
    config_json = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config_json, "rope_scaling": {"rope_type": "su_yarn"}}))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prge: error: {path}:") and f"model.name: {out / 'config.json'}: rope_scaling" in err, err
    assert "su_yarn" in err, err
    for marker in ("null", "[]", b"\xff\xfe"):  # a damaged marker: not a finished conversion, left to train
        (out / MARKER).write_bytes(marker if isinstance(marker, bytes) else marker.encode())
        assert main(["check", str(path)]) == 0, marker
    capsys.readouterr()


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from prge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("limit, checkpoint_every, wanted", [(4000, 2, "checkpoint.safetensors"),
                                                              (4000, 0, "trained.safetensors"),
                                                              (300, 0, "config.yaml")])
def test_a_full_disk_names_the_file(assets, limit, checkpoint_every, wanted):
    """Every file over `limit` bytes fails to write, as on a full disk (RLIMIT_FSIZE in a child):
    the checkpoint, the final weights (C++ writer) or config.yaml (Python's) is named."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tmp_path, model_dir, data_dir = assets
    path = write_config(tmp_path, model_dir, data_dir, run={"steps": 2, "eval_every": 0,
                                                            "checkpoint_every": checkpoint_every})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent)] + sys.path)}
    done = subprocess.run([sys.executable, "-c", FULL_DISK.format(limit=limit), "train", str(path), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("prge: error: ")]
    assert len(errors) == 1 and str(tmp_path / "run") in errors[0] and wanted in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


# (built-in task, file and its text, what the error must say): a row that does not parse as the
# published format is an error naming the file, record and line, never a record trained on.
FILE_CASES = [
    ("fine_food", "train.csv", 'review,score\nlovely tea,great\n"unclosed quote,other\nfine,other\n',
     "train.csv:3: malformed CSV"),
    ("fine_food", "train.csv", '"review,score\nlovely tea,great\n', "train.csv:1: malformed CSV"),
    ("fine_food", "train.csv", "review,review\nlovely tea,great\n", "train.csv:1: the header line names a column twice: 'review'"),
    ("fine_food", "train.csv", "\nreview,\nlovely tea,great\n", "train.csv:2: the header line names a column with an empty name"),
    ("fine_food", "train.csv", "review,score\nlovely tea,great\ntruncated row\n",
     "train.csv:3: 1 fields where the header line has 2 ('review', 'score')"),
    ("fine_food", "train.csv", "review,score\nlovely tea,great,extra\n",
     "train.csv:2: 3 fields where the header line has 2"),
    ("fine_food", "train.csv", "review,score\nlovely tea,great\ngood,excellent\n",
     "train.csv: record 2 (line 3): score 'excellent' is not 'great' or 'other'"),
    ("fine_food", "train.csv", "review,stars\nlovely tea,great\n",
     "train.csv: record 1 (line 2): no field 'score' (it has: 'review', 'stars')"),
    ("sst2", "train.tsv", "sentence\tlabel\ngood film\t1\nbad film\n",
     "train.tsv:3: 1 fields where the header line has 2 ('sentence', 'label')"),
    ("rte", "train.jsonl", '{"premise": "p", "hypothesis": "h", "label": "entailment"}\n\n'
                           '{"premise": null, "hypothesis": "h", "label": "entailment"}\n',
     "train.jsonl: record 2 (line 3): field 'premise' is null"),
    ("sst2", "train.tsv", "sentence\tlabel\ngood film\tpositive\n",
     "train.tsv: record 1 (line 2): label 'positive' is not a class index (0, 1, ...)"),
    ("boolq", "train.jsonl", '{"question": "q", "passage": "p", "label": null}\n',
     "train.jsonl: record 1 (line 1): field 'label' is null"),
]


def test_a_long_field_and_blank_lines_read_as_published(tmp_path):
    """A field longer than the csv module's default limit (128 Ki characters) is a review like any
    other, and blank lines (before the header too) are skipped with the line numbers kept."""
    from prge.data.tasks import get_task

    (tmp_path / "train.csv").write_text(f'\nreview,score\n"{"good " * 40_000}",great\n\nfine,other\n')
    examples = get_task("fine_food").load("train", tmp_path)
    assert [e.label for e in examples] == [0, 1] and len(examples[0].fields["text"]) > 150_000
    assert examples[1].where.endswith("train.csv: record 2 (line 5)")


@pytest.mark.parametrize("task, file, text, message", FILE_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FILE_CASES)])
def test_malformed_rows_of_a_built_in_tasks_files_are_named(tmp_path, task, file, text, message):
    from prge.data.tasks import get_task

    (tmp_path / file).write_text(text)
    with pytest.raises(ValueError) as error:
        get_task(task).load("train", tmp_path)
    assert message in str(error.value) and str(tmp_path / file) in str(error.value), str(error.value)


# The same mistakes in a custom task's file, through the CLI: `prge: error:` naming key, file and line.
CUSTOM_FILE_CASES = [
    ("train.csv", 'text,sentiment\ngood,positive\n"unclosed,negative\nbad,negative\n', "train.csv:3: malformed CSV"),
    ("train.csv", "text,sentiment\ngood,positive\nbad\n", "train.csv:3: 1 fields where the header line has 2"),
    ("train.jsonl", '{"text": "good", "sentiment": "positive"}\n{"text": "bad", "sentiment": null}\n',
     "train.jsonl: record 2 (line 2): field 'sentiment' is null"),
    ("train.jsonl", '{"text": "good", "sentiment": "positive"}\n\n{"sentiment": "negative"}\n',
     "train.jsonl: record 2 (line 3) has no field 'text'"),
    ("train.csv", "text,sentiment\ngood,positive\nba\x00d,negative\n",
     "NUL character"),  # 3.11+: "train.csv: record 2 (line 3): field 'text' holds ..."; 3.10's csv: "train.csv:3: ..."
    ("train.jsonl", '{"text": "good", "sentiment": "positive"}\n{"text": "ba\\u0000d", "sentiment": "negative"}\n',
     "train.jsonl: record 2 (line 2): field 'text' holds a NUL character"),
    ("train.jsonl", '{"text": "good", "sentiment": "positive"}\n{"text": "ba\x00d", "sentiment": "negative"}\n',
     "train.jsonl:2: a NUL character (\\x00) at column 13"),
    ("train.jsonl", '{"text": "good \\ud83d\\ude00", "sentiment": "positive"}\n{"text": "ba\\ud800d", '
     '"sentiment": "negative"}\n', "train.jsonl:2: a \\uD800-\\uDFFF escape that is not half of a surrogate pair"),
    ("train.json", '[{"text": "good", "sentiment": "positive"}, {"text": "ba\\ud800d", "sentiment": "negative"}]',
     "train.json: record 2: field 'text' holds a lone UTF-16 surrogate"),
]


@pytest.mark.parametrize("file, text, message", CUSTOM_FILE_CASES)
def test_malformed_rows_of_a_custom_tasks_file_are_named(assets, capsys, file, text, message):
    tmp_path, model_dir, _ = assets
    (tmp_path / file).write_text(text)
    (tmp_path / "test.jsonl").write_text('{"text": "fine", "sentiment": "positive"}\n')
    config = write_config(tmp_path, model_dir, None, data={
        "task": "custom", "data_dir": str(tmp_path), "train_file": file, "eval_file": "test.jsonl",
        "template": "{text}", "label_field": "sentiment",
        "label_words": {"positive": " positive", "negative": " negative"}})
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: data.train_file: ") and message in err, err


def test_a_multiple_choice_cell_spelling_a_lone_surrogate_is_named(tmp_path):
    """A CSV cell holding the candidates as a JSON list is text to the file reader; the list's own
    \\uD800 escape is found when the candidates are read, named by record and candidate."""
    import types

    from prge.data.custom import custom_task

    (tmp_path / "train.csv").write_text('q,options,answer\nWhich?,"[""fine"", ""b\\ud800d""]",0\n')
    data = types.SimpleNamespace(task="custom", data_dir=str(tmp_path), train_file="train.csv", eval_file="",
                                 template="Q: {q} A:", label_field="answer", label_words=[], response_field="",
                                 choices_field="options", chat_template=False, train_from="")
    with pytest.raises(ValueError) as error:
        custom_task(data).load("train")
    assert "record 1 (line 2): data.choices_field 'options': candidate 1 holds a lone UTF-16 surrogate, which " \
        "encodes no character" in str(error.value), str(error.value)


def test_a_quoted_field_over_several_lines_is_read_and_noted(tmp_path, capsys):
    """Valid CSV whose quoted field spans lines (a review with a line break, or a stray quote that
    a later quote closed) is read as CSV reads it, with a note naming where, so that rows merged
    by a stray quote do not pass unseen; a file without one says nothing."""
    from prge.data.sources import read_delimited

    path = tmp_path / "train.csv"
    path.write_text('text,sentiment\ngood,positive\n"stray,negative\nbad,negative\nfine",positive\nok,positive\n')
    records = read_delimited(path, ",")
    assert [r["sentiment"] for _, r in records] == ["positive", "positive", "positive"]
    assert records[1][1]["text"] == "stray,negative\nbad,negative\nfine"
    err = capsys.readouterr().err
    assert f"{path}: record 2 (line 3): a quoted field spans lines 3-5 (1 record(s)" in err
    from prge.data.custom import read_records

    read_records(path, "train")  # a custom task's file: the note names the config key too
    assert f"[prge] note: data.train_file: {path}: record 2 (line 3)" in capsys.readouterr().err
    path.write_text("text,sentiment\ngood,positive\n")
    read_delimited(path, ",")
    assert capsys.readouterr().err == ""



def test_names_from_a_data_file_are_shown_escaped_cut_and_counted(tmp_path):
    """A column or field name a file holds (a header of a thousand columns, a name with an escape
    sequence or a line break) is shown in a message escaped (no raw control character, one line),
    cut past 80 characters, and a list of them past 20 names by its count."""
    from prge.data.sources import read_delimited
    from prge.whitespace import shown_name, shown_names

    assert shown_name("a\x1b\nb") == "a\\x1b\\nb" and shown_name("n" * 81) == "n" * 80 + "... (81 bytes)"
    assert shown_names(["a, b", "c"]) == "'a, b', 'c'" and shown_names(range(25)).endswith(", 19, ... and 5 more")
    path = tmp_path / "train.csv"
    header = ["h\x1b\nz" + "x" * 100] + [f"c{i}" for i in range(30)]
    path.write_text(",".join(f'"{h}"' for h in header) + "\n" + "a,b\n")
    with pytest.raises(ValueError) as e:
        read_delimited(path, ",")
    message = str(e.value)
    assert f"{path}:3: 2 fields where the header line has 31 ('h\\x1b\\nz{'x' * 76}...' (104 bytes), 'c0', " in message, message
    assert message.count(", 'c") == 19 and ", 'c18', ... and 11 more): a missing or extra CSV field" in message, message
    assert "\x1b" not in message and "\n" not in message, message
    path.write_text("\x1bh,\x1bh,text\nx,y,z\n")
    with pytest.raises(ValueError, match=r"the header line names a column twice: '\\x1bh'$"):
        read_delimited(path, ",")

def test_a_nul_character_in_a_json_array_is_named(tmp_path):
    from prge.data.sources import read_delimited, read_json_array

    path = tmp_path / "train.json"
    path.write_text('[{"question": "q", "choices": {"text": ["a", "b\\u0000"]}}]')
    with pytest.raises(ValueError, match=r"train.json: record 1: field 'choices.text' holds a NUL character"):
        read_json_array(path)
    path.write_text('[{"question": "q", "choi\\u0000ces": {"text": ["a", "b"]}}]')
    with pytest.raises(ValueError, match=r"train.json: record 1: the field name 'choi\\x00ces' holds a NUL"):
        read_json_array(path)
    path = tmp_path / "train.tsv"
    path.write_text("te\x00xt\tlabel\ngood\t1\n")
    with pytest.raises(ValueError, match=r"train.tsv:1: (the header line holds a NUL character|a NUL character)"):
        read_delimited(path, "\t", quoted=False)


def test_prompts_cut_to_fit_max_length_are_reported(assets, capsys):
    """A max_length that cuts prompts to a few tokens is a warning with the counts, not a silent
    run on the prompts' last tokens; one that cuts none says nothing."""
    from prge import parse_run_config
    from prge.setup import setup_data

    tmp_path, model_dir, data_dir = assets
    for length, expected in ((4, "prge: warning: data.max_length=4: "), (64, None)):
        config = parse_run_config(write_config(tmp_path, model_dir, data_dir, data={"max_length": length}).read_text())
        data = setup_data(config)
        err = capsys.readouterr().err
        if expected is None:
            assert "were cut" not in err, err
        else:
            assert expected in err and f"of {data.encoder.fitted} prompts were cut" in err, err
            assert data.encoder.cut > 0 and "to as few as 3 tokens" in err


def test_a_missing_data_folder_lists_each_place_looked_in_once(tmp_path, monkeypatch):
    """From the checkout, ../shared beside it and beside the working directory are one place."""
    from pathlib import Path

    from prge.data.locations import find_task_dir

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("PRGE_DATA", str(tmp_path / "user"))
    with pytest.raises(FileNotFoundError) as error:
        find_task_dir("no-such-task")
    looked = str(error.value).split("looked in ")[1].split(")")[0].split(", ")
    assert len(looked) == len(set(looked)), looked
