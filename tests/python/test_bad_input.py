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
    with pytest.raises(ValueError, match=r"record 2 of the train split .* has label .*outside 0..1"):
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
    ("config.json value of the wrong type", "config.json: not a number: wide"),
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
