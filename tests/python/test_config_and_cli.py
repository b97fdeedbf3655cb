"""Bad input gets a readable error naming the problem; the CLI trains end to end on a
tiny model + tokenizer + labelled CSV made here, writes results and resumes sweeps."""
import csv
import shutil
import json
import platform
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

import prge
from prge import run_summary
from prge.cli import main
from conftest import make_tiny_assets, write_config

ROOT = Path(__file__).resolve().parents[2]


def test_config_errors_name_the_key():
    with pytest.raises(prge.ConfigError, match=r"run.yaml:2:3: estimator.querys: unknown key"):
        prge.parse_run_config("estimator:\n  querys: 4\n", "run.yaml")
    with pytest.raises(prge.ConfigError, match="optimizer.lr: expected a finite number, got 'fast'"):
        prge.parse_run_config("optimizer: {lr: fast}")
    with pytest.raises(prge.ConfigError, match="malformed YAML"):
        prge.parse_run_config("model: {name: [x\n")
    with pytest.raises(prge.ConfigError, match="config file not found"):
        prge.load_run_config("/no/such/file.yaml")


def test_normalised_yaml_round_trips():
    """to_yaml (written beside every run) parses back to the same config, in C++ and PyYAML."""
    config = prge.parse_run_config(
        "model: {name: 'odd \"dir\"'}\nestimator: {epsilon: 1.0e-5, rng: counter}\noptimizer: {lr: 3}\n"
        "data: {protocol: mezo, data_dir: 'a b'}\nadapter: {targets: [q_proj, v_proj], alpha: 16}\n")
    text = config.to_yaml()
    assert prge.parse_run_config(text).to_yaml() == text
    tree = yaml.safe_load(text)
    assert tree["estimator"]["epsilon"] == 1e-5 and tree["optimizer"]["lr"] == 3.0
    assert tree["model"]["name"] == 'odd "dir"' and tree["adapter"]["targets"] == ["q_proj", "v_proj"]
    assert tree["estimator"]["rng"] == "counter" and tree["data"]["protocol"] == "mezo"
    assert prge.parse_run_config("adapter: null\nestimator: {kind: mezo, parallel: sequential}\n").to_yaml().count("adapter: null") == 1


def test_a_key_holding_a_dot_is_quoted_in_set_and_grid_paths():
    """--set data.label_words."1.5"=good reaches the label 1.5 (unquoted, the path would be
    1 then 5); a sweep's grid key names its runs by the key it reaches."""
    from prge.sweep import grid_label

    text = "data: {task: custom, train_file: t.csv, eval_file: e.csv, template: '{text}', label_words: {'1.5': a, '2': b}}\n"
    config = prge.parse_run_config(text, "c.yaml", [('data.label_words."1.5"', "good")])
    assert yaml.safe_load(config.to_yaml())["data"]["label_words"] == {"1.5": "good", "2": "b"}
    with pytest.raises(prge.ConfigError, match=r'--set data.label_words.1.5: data.label_words.1: expected a non-empty '
                       r'label word, got a mapping \(a --set or grid path to a label that holds a dot quotes it'):
        prge.parse_run_config(text, "c.yaml", [("data.label_words.1.5", "good")])
    assert grid_label('data.label_words."1.5"', "good") == "1.5good"
    assert grid_label("estimator.queries", 4) == "queries4"
    assert grid_label('data."a"', 1) == "a1"  # the config reader's own split (key_path), not a second grammar


def test_a_grid_key_the_reader_refuses_is_named_where_the_sweep_writes_it(tmp_path, capsys):
    """A grid key with an empty part or an open quote: refused at its line in the sweep file
    before any run is named after it."""
    sweep = tmp_path / "sweep.yaml"
    for key in ("data..task", 'data."task'):
        sweep.write_text(f"base: {{}}\ngrid:\n  '{key}': [sst2]\n")
        assert main(["sweep", str(sweep), "--no-progress"]) == 2
        assert f"prge: error: {sweep}:3:3: grid: '{key}' is not a key" in capsys.readouterr().err


def test_a_grid_value_with_line_breaks_names_its_run_on_one_line(tmp_path):
    """Prompt templates as grid values: a run of control characters is one _ in the run's
    directory name; a run started when the name kept them keeps its directory; a name longer than
    a directory name may be is refused at expansion, naming the run."""
    from prge.sweep import expand_sweep

    base = {"data": {"task": "custom", "train_file": "t.csv", "eval_file": "e.csv",
                     "label_words": {"0": " no", "1": " yes"}}}
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": base, "output_root": str(tmp_path / "runs"),
                                     "grid": {"data.template": ["Review:\n\n{text}\tSentiment:", "{text} Good?"]}}))
    labels = [label for label, _ in expand_sweep(sweep)]
    assert labels == ["run-templateReview:_{text}_Sentiment:", "run-template{text} Good?"]
    old = "run-templateReview:\n\n{text}\tSentiment:"
    start_run_as(tmp_path / "runs" / old, expand_sweep(sweep)[0][1])
    assert [label for label, _ in expand_sweep(sweep)][0] == old
    sweep.write_text(yaml.safe_dump({"base": base, "grid": {"data.template": ["{text} " + "very " * 60 + "good?"]}}))
    with pytest.raises(ValueError, match=r"would be named run-template\{text\} very .* longer than a directory name "
                                         r"may be \(255 bytes\): give a long grid value its own variant with a short name"):
        expand_sweep(sweep)
    sweep.write_text(yaml.safe_dump({"base": base, "grid": {"data.template": ["{text}" + "\U0001f600" * 62]}}))
    with pytest.raises(ValueError, match=r"would be named run-template\{text\}\U0001f600{62} \(266 bytes\), longer"):
        expand_sweep(sweep)  # 80 characters, 266 bytes: shown whole, with its length in bytes


def start_run_as(out_dir: Path, config) -> None:
    """out_dir as a run of config's settings started there (its config.yaml), as a sweep of an
    earlier version named it."""
    out_dir.mkdir(parents=True)
    stored = prge.parse_run_config(config.to_yaml(), "config.yaml", [("run.output_dir", json.dumps(str(out_dir)))])
    (out_dir / "config.yaml").write_text(stored.to_yaml())


def test_a_grid_value_that_is_not_a_path_names_its_run_by_all_of_it(tmp_path, capsys):
    """Label words and templates as grid values: a value of a key that is not a path is named by
    all of its text, a / as _ (named as a path, by its last part, the \\xa0 of a no-break space in
    a mapping's text or a / in a label word made two values that end alike one run, refused with
    a hint about paths); a run started under an earlier version's name keeps it when its
    config.yaml holds this run's settings, and only then; values named alike are refused with a
    hint that says why; --set of a varied key gives an --only hint that a shell passes as prge
    needs it (quotes and brackets in the names)."""
    from prge.sweep import expand_sweep, select_runs

    base = {"data": {"task": "custom", "train_file": "t.csv", "eval_file": "e.csv", "template": "{text}"}}
    words = [{"0": "\u00a0no", "1": "\u00a0yes"}, {"0": "\u00a0bad", "1": "\u00a0yes"}, {"0": " n/a", "1": " ok"}]
    sweep, root = tmp_path / "sweep.yaml", tmp_path / "runs"
    sweep.write_text(yaml.safe_dump({"base": base, "output_root": str(root), "grid": {"data.label_words": words}},
                                    allow_unicode=True))
    runs = expand_sweep(sweep)
    assert [label for label, _ in runs] == ["run-label_words{'0': '\\xa0no', '1': '\\xa0yes'}",
                                           "run-label_words{'0': '\\xa0bad', '1': '\\xa0yes'}",
                                           "run-label_words{'0': ' n_a', '1': ' ok'}"]
    assert [dict(config.data.label_words) for _, config in runs] == words

    # Named as paths before: ' n/a' by what follows its /; the first two mappings both end in \xa0yes'}.
    start_run_as(root / "run-label_wordsa', '1': ' ok'}", runs[2][1])
    start_run_as(root / "run-label_wordsxa0yes'}", runs[1][1])  # the second's settings, not the first's
    assert [label for label, _ in expand_sweep(sweep)] == [
        runs[0][0], "run-label_wordsxa0yes'}", "run-label_wordsa', '1': ' ok'}"]

    # Named as a path before, with a template's line break already _.
    sweep.write_text(yaml.safe_dump({"base": base, "output_root": str(root), "grid": {
        "data.template": ["Review: {text}\nSentiment:"], "data.label_words": words[:1]}}, allow_unicode=True, sort_keys=False))
    old = "run-templateReview: {text}_Sentiment:-label_wordsxa0yes'}"
    start_run_as(root / old, expand_sweep(sweep)[0][1])
    assert expand_sweep(sweep)[0][0] == old

    labelled = {"data": {**base["data"], "label_words": {"0": " no", "1": " yes"}}}
    sweep.write_text(yaml.safe_dump({"base": labelled, "grid": {"data.template": ["Good/bad? {text}", "Positive/bad? {text}"]}}))
    assert [label for label, _ in expand_sweep(sweep)] == ["run-templateGood_bad? {text}", "run-templatePositive_bad? {text}"]
    sweep.write_text(yaml.safe_dump({"base": base, "grid": {
        "data.label_words": [{"0": "n/a", "1": "ok"}, {"0": "n_a", "1": "ok"}]}}))
    with pytest.raises(ValueError, match=r"two runs would share the directory .*: make the grid values or keys distinct "
                                         r"\(a path is named by its last part, and a / in another value, control "
                                         r"characters and whitespace other than a space are _"):
        expand_sweep(sweep)

    lists = tmp_path / "lists.yaml"
    lists.write_text(yaml.safe_dump({"base": base, "output_root": str(root), "grid": {
        "adapter.targets": [["q_proj"], ["q_proj", "v_proj"]], "data.label_words": words[:2]}}, allow_unicode=True, sort_keys=False))
    labels = [label for label, _ in expand_sweep(lists)]
    for option, picked in (("data.label_words={'0': a, '1': b}", [0, 2]), ("adapter.targets=[k_proj]", [0, 1])):
        assert main(["sweep", str(lists), "--no-progress", "--set", option]) == 2
        hint = capsys.readouterr().err.split("e.g. --only ")[1].rsplit(")", 1)[0]
        [pattern] = shlex.split(hint)  # what a shell hands prge
        assert [label for label, _ in select_runs(lists, expand_sweep(lists), [pattern])] == [labels[i] for i in picked]


def test_a_run_named_by_an_earlier_version_keeps_its_directory_only_where_that_is_safe(tmp_path):
    """Earlier namings (sweep.NAMINGS): a run whose directory an earlier prge named keeps it when
    its config.yaml holds this run's grid values (other settings there are refused by name when
    the run starts, as under the current name), never a directory of another grid point (one the
    current prge named for a value since dropped from the grid); an old name that is now another
    run's is refused, saying what to rename; an old name the reader refuses as a path (ending in a
    space), or one too long, is passed over; a name too long is refused as such even when the
    output root exists; a / in a grid key's part is _ (it made a directory one level down)."""
    from prge.sweep import expand_sweep

    data = {"task": "custom", "train_file": "t.csv", "eval_file": "e.csv", "label_words": {"0": " no", "1": " yes"}}
    sweep, root = tmp_path / "sweep.yaml", tmp_path / "runs"

    def write(templates, lr=0.01):
        sweep.write_text(yaml.safe_dump({"base": {"data": data, "optimizer": {"lr": lr}}, "output_root": str(root),
                                         "grid": {"data.template": templates}}, allow_unicode=True))

    # 2026-12-04 to 12-06 ("controls"): a line break was _, a no-break space kept.
    write(["Review:\u00a0{text}\nSentiment:"])
    start_run_as(root / "run-templateReview:\u00a0{text}_Sentiment:", expand_sweep(sweep)[0][1])
    write(["Review:\u00a0{text}\nSentiment:"], lr=0.02)  # the only run that could be there: kept, refused when it starts
    assert [label for label, _ in expand_sweep(sweep)] == ["run-templateReview:\u00a0{text}_Sentiment:"]

    # "Good/bad? {text}" was named "bad? {text}", which is now the other value's name.
    write(["Good/bad? {text}"])
    start_run_as(root / "run-templatebad? {text}", expand_sweep(sweep)[0][1])
    write(["Good/bad? {text}", "bad? {text}"])
    with pytest.raises(ValueError, match=r"runs/run-templatebad\? \{text\} holds the run run-templateGood_bad\? \{text\} "
                                         r"\(its grid values, under the name an earlier prge gave it\), and that is now "
                                         r"another run's name in this sweep: rename the directory to .*"
                                         r"runs/run-templateGood_bad\? \{text\}, or delete it"):
        expand_sweep(sweep)

    # Two values named alike before, a third's settings there: neither takes the directory.
    write(["A/same {text}", "B/same {text}"])
    start_run_as(root / "run-templatesame {text}", expand_sweep(sweep)[0][1])
    write(["C/same {text}", "B/same {text}"])
    assert [label for label, _ in expand_sweep(sweep)] == ["run-templateC_same {text}", "run-templateB_same {text}"]

    # A run the current prge named for "{text} It was", a value since dropped: not the other value's.
    write(["{text} It was", "Review/{text} It was"])
    start_run_as(root / "run-template{text} It was", expand_sweep(sweep)[0][1])
    write(["Review/{text} It was"])
    assert [label for label, _ in expand_sweep(sweep)] == ["run-templateReview_{text} It was"]

    sweep.write_text(yaml.safe_dump({"base": {"data": {**data, "template": "{text}", "label_words": {"pos/neg": " good", "neg": " bad"}}},
                                     "grid": {'data.label_words."pos/neg"': [" good", " great"]}}))
    assert [label for label, _ in expand_sweep(sweep)] == ["run-pos_neg good", "run-pos_neg great"]

    # Grid values compared as the reader writes them (label-word keys 0 -> '0'), other settings refused later.
    sweep.write_text(yaml.safe_dump({"base": {"data": {**data, "template": "{text}"}}, "output_root": str(root),
                                     "grid": {"data.label_words": [{0: " bad/x", 1: " good"}]}}))
    run = expand_sweep(sweep, [("run.steps", "7")])[0][1]
    start_run_as(root / "run-label_wordsx', 1: ' good'}", run)
    assert [label for label, _ in expand_sweep(sweep)] == ["run-label_wordsx', 1: ' good'}"]
    # Two runs whose earlier names were one: the directory goes to the run whose values it holds, once.
    sweep.write_text(yaml.safe_dump({"base": {"data": {**data, "template": "{text}"}}, "output_root": str(root),
                                     "grid": {"data.label_words": [{0: " x_y", 1: " u/v"}, {"0": " x/y", "1": " u/v"}]}}))
    start_run_as(root / "run-label_wordsv'}", expand_sweep(sweep)[0][1])
    assert [label for label, _ in expand_sweep(sweep)] == ["run-label_wordsv'}", "run-label_words{'0': ' x_y', '1': ' u_v'}"]
    # Values the reader writes alike (keys 0 and '0'): the first run takes the directory, the second its own name.
    sweep.write_text(yaml.safe_dump({"base": {"data": {**data, "template": "{text}"}}, "output_root": str(root),
                                     "grid": {"data.label_words": [{0: " x_y", 1: " u/v"}, {"0": " x_y", "1": " u/v"}]}}))
    assert [label for label, _ in expand_sweep(sweep)] == ["run-label_wordsv'}", "run-label_words{'0': ' x_y', '1': ' u_v'}"]
    (root / "run-label_wordsv'}" / "config.yaml").write_bytes(b"\xff not UTF-8\n")  # unreadable: passed over
    assert [label for label, _ in expand_sweep(sweep)][0] == "run-label_words{0: ' x_y', 1: ' u_v'}"

    # A grid key inside label_words (written as one flow mapping): another value there is another run's.
    sweep.write_text(yaml.safe_dump({"base": {"data": {**data, "template": "{text}"}}, "output_root": str(root),
                                     "grid": {'data.label_words."1"': [" A/good"]}}))
    start_run_as(root / "run-1good", expand_sweep(sweep)[0][1])
    assert [label for label, _ in expand_sweep(sweep)] == ["run-1good"]
    sweep.write_text(yaml.safe_dump({"base": {"data": {**data, "template": "{text}"}}, "output_root": str(root),
                                     "grid": {'data.label_words."1"': [" B/good", " A/good"]}}))
    assert [label for label, _ in expand_sweep(sweep)] == ["run-1 B_good", "run-1good"]

    write(["{text} trailing "])  # raw: 'run-template{text} trailing ', which the reader refuses as a path
    (root / "run-template{text} trailing ").mkdir()
    (root / "run-template{text} trailing " / "config.yaml").write_text("data: {}\n")
    assert [label for label, _ in expand_sweep(sweep)] == ["run-template{text} trailing_"]
    write(["{text} " + "very " * 60 + "good?"])
    with pytest.raises(ValueError, match=r"longer than a directory name may be \(255 bytes\)"):
        expand_sweep(sweep)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("estimator: {kind: adam}\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "estimator.kind" in err and "allowed: prge, fzoo, mezo, first_order" in err
    assert main(["check", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("estimator: {queries: 2}\n")
    assert main(["check", str(good), "--set", "estimator.parallel=single"]) == 0  # old spelling
    out, err = capsys.readouterr()
    assert "parallel: queries" in out
    assert "prge: warning:" in err and "parallel mode 'single' is now spelled 'queries'" in err


def test_train_end_to_end(tmp_path):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    config = write_config(tmp_path, model_dir, data_dir)
    assert main(["train", str(config), "--no-progress"]) == 0
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and 0.0 <= summary["accuracy_after"] <= 1.0
    assert [h["step"] for h in summary["eval_history"]] == [0, 3, 6]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [2, 4, 6]
    # forward passes and sequences are cumulative: one dual forward of 16 sequences a step
    assert all(x["forward_passes"] == x["step"] and x["sequences"] == 16 * x["step"]
               for x in lines if "step" in x)
    assert summary["best_step"] in (0, 3, 6) and summary["sequences"] == 96
    # which processor the step times were measured on (a CUDA run names its card)
    assert summary["device"] == "cpu" and summary["device_name"] == run_summary.device_name("cpu")
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "model name" in cpuinfo:  # Linux: the CPU's model, not only its architecture
        assert f": {summary['device_name']}\n" in cpuinfo
    else:
        assert summary["device_name"] in (platform.processor(), platform.machine())
    # The checkpoint holds the trained B and loads back into a fresh trainer.
    cfg = prge.load_run_config(str(config))
    model = prge.CausalLM.from_pretrained(str(model_dir))
    model.attach_adapters(cfg.adapter)
    trainer = prge.Trainer(model, cfg.estimator, cfg.optimizer, 1)
    trainer.load_checkpoint(str(run / "trained.safetensors"))
    assert any(float(a["lora_b"].abs().max()) > 0 for a in model.adapters())


def test_mezo_and_missing_data(tmp_path, capsys):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    config = write_config(tmp_path, model_dir, data_dir,
                          estimator={"kind": "mezo", "queries": 1, "epsilon": 1e-3, "parallel": "sequential"},
                          run={"steps": 2, "eval_every": 0})
    assert main(["train", str(config), "--no-progress", "--engine", "eager"]) == 0  # the old flag
    assert "--engine is now spelled --runtime" in capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["estimator"] == "mezo" and summary["runtime"] == "eager" and summary["parallel"] == "sequential"
    config = write_config(tmp_path, model_dir, tmp_path / "nowhere")
    assert main(["train", str(config), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err
    config = write_config(tmp_path, model_dir, data_dir, data={"task": "imdb"})
    assert main(["train", str(config), "--no-progress"]) == 2
    assert "unknown task 'imdb'" in capsys.readouterr().err


def test_sweep_resumes(tmp_path, capsys):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    base = write_config(tmp_path, model_dir, data_dir, run={"steps": 2, "eval_every": 0})
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": base.name, "output_root": str(tmp_path / "sweep"),
        "grid": {"estimator.queries": [1, 2]},
        "variants": [{"name": "dual"}, {"name": "queries", "estimator.parallel": "queries"}]}))
    assert main(["sweep", str(sweep)]) == 0
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [
        "dual-queries1", "dual-queries2", "queries-queries1", "queries-queries2"]
    capsys.readouterr()
    assert main(["sweep", str(sweep)]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipping") == 4
    assert main(["report", str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "sweep.md").read_text()
    assert table.count("| dual-queries1 |") == 2 and table.count("| queries-queries2 |") == 2  # method + run rows
    with open(tmp_path / "report" / "sweep_runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run"] for r in rows) == ["dual-queries1", "dual-queries2", "queries-queries1", "queries-queries2"]
    for figure in ("sweep_loss_vs_step.png", "sweep_accuracy_vs_forward_passes.png"):
        assert (tmp_path / "report" / figure).read_bytes()[:4] == b"\x89PNG"
    assert main(["report", str(tmp_path / "empty")]) == 2
    capsys.readouterr()  # --only: the matching runs, in the sweep's order; a pattern matching none is named
    assert main(["sweep", str(sweep), "--only", "*-queries2", "--only", "dual-queries1"]) == 0
    assert [line.split(") ", 1)[1].split(":")[0] for line in capsys.readouterr().out.splitlines()
            if "skipping" in line] == ["dual-queries1", "dual-queries2", "queries-queries2"]
    assert main(["sweep", str(sweep), "--only", "dual-queries3"]) == 2
    err = capsys.readouterr().err
    assert "prge: error: " in err and "--only 'dual-queries3' matches none of the sweep's 4 runs" in err
    sweep.write_text(yaml.safe_dump({"base": base.name, "grids": {}}))
    assert main(["sweep", str(sweep)]) == 2


def test_a_failed_run_is_named_and_the_sweep_goes_on_with_the_others(tmp_path, capsys):
    """One run's data file is damaged: the sweep names that run's error as it happens, trains
    the runs after it, and ends with an error (exit 2) naming the failed run; started again, it
    skips the finished runs and names the failed one again."""
    model_dir, data_dir = make_tiny_assets(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    with open(broken / "train.csv", "a") as f:
        f.write("P99,a review with no score\n")
    base = write_config(tmp_path, model_dir, data_dir, run={"steps": 2, "eval_every": 0})
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": base.name, "output_root": str(tmp_path / "sweep"),
                                     "variants": [{"name": "a"}, {"name": "b", "data.data_dir": str(broken)},
                                                  {"name": "c", "estimator.queries": 1}]}))
    for again in (False, True):
        assert main(["sweep", str(sweep), "--no-progress"]) == 2
        captured = capsys.readouterr()
        assert f"prge: error: (2/3) b: fine_food: train split: {broken / 'train.csv'}:42: 2 fields" in captured.err, \
            captured.err
        assert captured.err.rstrip().endswith("prge: error: 1 of 3 runs failed (each error above): (2/3) b"), captured.err
        assert [(tmp_path / "sweep" / name / "summary.json").is_file() for name in "abc"] == [True, False, True]
        assert captured.out.count("finished earlier, skipping") == (2 if again else 0)
    # the report names the failed run with its error, not as not started; mended, the run trains
    assert main(["report", str(sweep), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "Failed: 1 run(s): b (fine_food: train split: " in out and ":42: 2 fields" in out, out
    assert "Not started" not in out and "Not in the tables" not in out, out
    shutil.copy(data_dir / "train.csv", broken / "train.csv")
    assert main(["sweep", str(sweep), "--no-progress"]) == 0
    assert not (tmp_path / "sweep" / "b" / ".prge.failed").exists()
    assert main(["report", str(sweep), "--no-figures"]) == 0
    assert "Failed" not in capsys.readouterr().out


def test_a_finished_run_on_a_model_saved_over_since_is_named_not_skipped(tmp_path, capsys):
    """The model directory's weights regenerated after a sweep's run finished: the sweep names
    that run (its results are another model's), as it names a custom task's changed data, and
    skips it again once the model is the one it trained on."""
    from safetensors.torch import load_file, save_file

    model_dir, data_dir = make_tiny_assets(tmp_path)
    base = write_config(tmp_path, model_dir, data_dir, run={"steps": 2, "eval_every": 0})
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": base.name, "output_root": str(tmp_path / "s"), "variants": [{"name": "a"}]}))
    assert main(["sweep", str(sweep), "--no-progress"]) == 0
    weights = model_dir / "model.safetensors"
    original = weights.read_bytes()
    save_file({k: torch.randn_like(v) for k, v in load_file(weights).items()}, weights)
    capsys.readouterr()
    assert main(["sweep", str(sweep), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"prge: error: (1/1) a: {tmp_path / 's' / 'a' / 'summary.json'}: the run trained on another model than " \
           f"{model_dir} holds now" in err and "run into another --output-root" in err
    weights.write_bytes(original)
    assert main(["sweep", str(sweep), "--no-progress"]) == 0
    assert "finished earlier, skipping" in capsys.readouterr().out
    summary_path = tmp_path / "s" / "a" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "model_fingerprint": "not one"}))
    assert main(["sweep", str(sweep), "--no-progress"]) == 2  # a damaged summary is named as such
    assert f"(1/1) a: {summary_path}: its model fingerprint is not what prge writes" in capsys.readouterr().err


def test_a_sweeps_report_names_its_runs_not_started(tmp_path, capsys):
    """`prge report SWEEP` after `prge sweep --only`: the runs the sweep has not started are
    named, so a table over part of a sweep does not pass for the whole."""
    model_dir, data_dir = make_tiny_assets(tmp_path)
    base = write_config(tmp_path, model_dir, data_dir, run={"steps": 2, "eval_every": 0})
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": base.name, "output_root": str(tmp_path / "s"),
                                     "variants": [{"name": "a"}, {"name": "b", "estimator.queries": 1},
                                                  {"name": "c", "estimator.queries": 3}]}))
    assert main(["sweep", str(sweep), "--no-progress", "--only", "a"]) == 0
    capsys.readouterr()
    assert main(["report", str(sweep), "--out", str(tmp_path / "report"), "--no-figures"]) == 0
    assert "Not started: 2 of the sweep's runs: b, c" in capsys.readouterr().out


def test_a_report_counts_one_seed_once(tmp_path, capsys):
    """A copied run directory is one method, task and seed twice: the report counts the seed once
    (not a narrower ± and a doubled weight) and names the run it leaves out."""
    model_dir, data_dir = make_tiny_assets(tmp_path)
    config = write_config(tmp_path, model_dir, data_dir, run={"steps": 2, "eval_every": 0,
                                                              "output_dir": str(tmp_path / "runs" / "full")})
    assert main(["train", str(config), "--no-progress"]) == 0
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    shutil.copytree(tmp_path / "runs" / "full", tmp_path / "runs" / "copy")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report2")]) == 0
    out = capsys.readouterr().out
    assert "Left out: 1 run(s) repeating an earlier run's method, task and seed (each seed counts once): full (as " \
           "copy)" in out, out
    with open(tmp_path / "report2" / "runs_runs.csv") as f:
        assert [r["run"] for r in csv.DictReader(f)] == ["copy"]
    with open(tmp_path / "report2" / "runs_methods.csv") as f:
        assert [r["seeds"] for r in csv.DictReader(f)] == ["1"]


def test_single_forward_option_scores_match_per_option_scoring(tmp_path):
    """The one-forward evaluation path must score label words exactly as scoring each
    prompt + label word sequence separately does (mean answer log-likelihood)."""
    from prge.data.batching import PromptEncoder
    from prge.data.tasks import get_task
    from prge.data.tokens import ModelTokenizer
    from prge.evaluation import option_scores

    model_dir, data_dir = make_tiny_assets(tmp_path)
    model = prge.CausalLM.from_pretrained(str(model_dir))
    model.attach_adapters(prge.AdapterOptions(rank=4, alpha=8))
    trainer = prge.Trainer(model, prge.EstimatorOptions("prge", 2), prge.OptimizerOptions(), 0)
    task = get_task("fine_food")
    encoder = PromptEncoder(task, ModelTokenizer(model_dir), 16)
    examples = encoder.encode_all(task.load("eval", data_dir))
    assert all(len(o) == 1 for e in examples for o in e.options)  # the one-forward path applies
    fast = option_scores(trainer, encoder, examples, batch_size=5)
    encoder.single_token_labels = False
    slow = option_scores(trainer, encoder, examples, batch_size=5)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype,epsilon,warned", [
    ("bfloat16", "1.0e-3", True), ("bfloat16", "1.0e-2", False), ("float16", "1.0e-4", True),
    ("float16", "1.0e-3", False), ("float32", "1.0e-5", False)])
def test_an_epsilon_below_the_dtypes_rounding_is_warned_about(dtype, epsilon, warned):
    """bf16 g at eps 1e-3 correlates 0.49 with fp32 g (experiments/results/precision/): a warning
    names the key, its line and the floor."""
    config = prge.parse_run_config(f"model: {{dtype: {dtype}}}\nestimator:\n  epsilon: {epsilon}\n", "test.yaml")
    warnings = [w for w in config.warnings if "estimator.epsilon" in w]
    assert bool(warnings) == warned
    if warned:
        assert warnings[0].startswith("test.yaml:3:") and "mostly noise" in warnings[0]


# Issue 24: a config is read once and means one thing on every path (check, train with or
# without --set, sweeps): --set edits the parsed mapping in the C++ reader (YAML 1.2 scalars).
YES_NO = ("data:\n  task: custom\n  train_file: a.csv\n  eval_file: b.csv\n  template: '{text}'\n"
          "  label_words: {positive: yes, negative: no}\n")


def test_a_value_means_the_same_with_and_without_set_and_in_a_sweep(tmp_path, capsys, monkeypatch):
    path = tmp_path / "yes.yaml"
    path.write_text(YES_NO)
    monkeypatch.chdir(tmp_path)  # its data files, which prge check finds
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text("text,label\ngood,positive\n")
    shown = []
    for extra in ([], ["--set", "run.steps=3"], ["--set", "data.label_words={positive: yes, negative: off}"]):
        assert main(["check", str(path), *extra]) == 0
        shown.append(yaml.safe_load(capsys.readouterr().out)["data"]["label_words"])
    assert shown[0] == shown[1] == {"positive": "yes", "negative": "no"}
    assert shown[2] == {"positive": "yes", "negative": "off"}
    from prge.sweep import expand_sweep

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: yes.yaml\ngrid:\n  data.template: ['{text} on', yes]\n"
                     "variants:\n  - {name: a, data.label_words: {positive: on, negative: no}}\n")
    runs = expand_sweep(sweep, [("run.steps", "2")])
    assert [c.data.template for _, c in runs] == ["{text} on", "yes"]
    assert all(c.data.label_words == [("positive", "on"), ("negative", "no")] and c.run.steps == 2 for _, c in runs)


def test_a_range_error_names_the_key_and_the_place_that_wrote_its_value(tmp_path, capsys):
    """optimizer.lr and estimator.epsilon out of range are named at their own line, or as the
    --set or the sweep's grid value that wrote them, not at their section's first key."""
    path = tmp_path / "run.yaml"
    path.write_text("estimator:\n  kind: prge\n  epsilon: 1.0e-3\noptimizer:\n  kind: sgd\n  lr: -1\n")
    assert main(["check", str(path)]) == 2
    assert f"prge: error: {path}:6:7: optimizer.lr: must be >= 0" in capsys.readouterr().err
    path.write_text("estimator:\n  kind: prge\n  epsilon: 1.0e-3\noptimizer:\n  kind: sgd\n  lr: 1.0e-3\n")
    assert main(["check", str(path), "--set", "estimator.epsilon=-1"]) == 2
    assert f"prge: error: {path}: --set estimator.epsilon: must be > 0" in capsys.readouterr().err
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: run.yaml\ngrid:\n  optimizer.lr: [1.0e-3, -1]\n")
    assert main(["check", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert f"{sweep}:3:26: grid optimizer.lr: must be >= 0 (run run-lr-1)" in err, err


def test_duplicate_keys_and_empty_configs_are_errors_on_every_path(tmp_path, capsys):
    duplicate = tmp_path / "dup.yaml"
    duplicate.write_text("optimizer:\n  lr: 0.1\nrun: {steps: 2}\noptimizer:\n  lr: 0.5\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# a comment, nothing else\n")
    for path, message in ((duplicate, f"{duplicate}:4:1: optimizer: duplicate key: it is also at line 1"),
                          (empty, f"{empty}: the config is empty")):
        for extra in ([], ["--set", "optimizer.lr=0.2"]):
            assert main(["check", str(path), *extra]) == 2
            err = capsys.readouterr().err
            assert err.startswith("prge: error: ") and message in err, err
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: dup.yaml\n")
    assert main(["sweep", str(sweep)]) == 2
    assert "dup.yaml:4:1: optimizer: duplicate key" in capsys.readouterr().err
    sweep.write_text("base: {run: {steps: 1}}\ngrid: {run.seed: [1]}\ngrid: {run.seed: [2]}\n")
    assert main(["sweep", str(sweep)]) == 2
    assert "duplicate key 'grid' (first at line 2)" in capsys.readouterr().err


# A value of the right type but out of range says what range; a message about a mode says what
# the code does (MeZO forms θ ± εz inside the forward; it never perturbs in place).
VALUE_MESSAGES = [
    ("run.seed=-1", "run.seed: expected a non-negative integer, got '-1'"),
    ("adapter.init_seed=-3", "adapter.init_seed: expected a non-negative integer, got '-3'"),
    ("run.steps=many", "run.steps: expected an integer, got 'many'"),
]


@pytest.mark.parametrize("assignment,message", VALUE_MESSAGES)
def test_a_bad_value_names_the_range_it_must_be_in(tmp_path, capsys, assignment, message):
    path = tmp_path / "run.yaml"
    path.write_text("run: {steps: 2}\n")
    assert main(["check", str(path), "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prge: error: {path}: --set {assignment.split('=')[0]}: ") and message in err, err


def test_the_mezo_parallel_error_says_what_mezo_does():
    with pytest.raises(prge.ConfigError) as error:
        prge.parse_run_config("estimator: {kind: mezo, parallel: dual}\n", "run.yaml")
    message = str(error.value)
    assert "must be 'sequential' for mezo" in message and "one point per forward" in message
    assert "in place" not in message  # README: prge forms θ ± εz inside the forward


# prge check lists every key with the value a run uses, defaults included; run directories keep
# the shorter to_yaml() (finished and resumable runs are recognised by that text).
CHECK_CASES = [
    ("model: {dtype: float32}\n",
     {("model", "quantize"): "none", ("model", "group_size"): 0, ("adapter", "init_from"): "",
      ("adapter", "use_rslora"): False, ("adapter", "rank_pattern"): {}, ("adapter", "alpha_pattern"): {},
      ("estimator", "rng"): "auto"}),
    ("model: {quantize: int4}\n", {("model", "quantize"): "int4", ("model", "group_size"): 64}),
    ("model: {quantize: int8}\n", {("model", "group_size"): 0}),  # one scale per output channel
    ("model: {quantize: int4, group_size: 32}\nadapter: {use_rslora: true, rank_pattern: {q_proj: 8}}\n",
     {("model", "group_size"): 32, ("adapter", "use_rslora"): True, ("adapter", "rank_pattern"): {"q_proj": 8}}),
    (YES_NO, {("data", "label_words"): {"positive": "yes", "negative": "no"}, ("data", "response_field"): "",
              ("data", "choices_field"): "", ("data", "chat_template"): False}),
    ("data: {task: custom, train_file: a.jsonl, eval_file: b.jsonl, template: '{q}', response_field: a}\n",
     {("data", "label_words"): None, ("data", "response_field"): "a", ("data", "choices_field"): ""}),
]


@pytest.mark.parametrize("text,expected", CHECK_CASES)
def test_check_shows_every_effective_value(tmp_path, capsys, monkeypatch, text, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)  # a custom task's files, which prge check finds
    for name in ("a.csv", "b.csv", "a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text("")
    assert main(["check", str(path)]) == 0
    shown = capsys.readouterr().out
    tree = yaml.safe_load(shown)
    for (section, key), value in expected.items():
        assert tree[section][key] == value, (section, key, shown)
    config = prge.parse_run_config(text)
    again = prge.parse_run_config(shown)  # the listing is a config meaning the same
    assert again.to_yaml(every_key=True) == shown and again.model.effective_group_size == config.model.effective_group_size
    stored = config.to_yaml()  # what run directories hold is unchanged by the listing
    assert ("quantize" in stored) == (config.model.quantize != "none") and "use_rslora" not in stored.replace(
        "use_rslora: true", "")
    assert "rng: auto  # torch on cpu" in prge.parse_run_config("model: {}\n").to_yaml(every_key=True)
    mezo = prge.parse_run_config("estimator: {kind: mezo, parallel: sequential}").to_yaml(every_key=True)
    assert "quantize: none  # mezo: a checkpoint's own quantized blocks load dequantized" in mezo


def _run_with_stdout_closed(args):
    """`prge ARGS` with its stdout a pipe whose reader has already gone (as `| head -1` leaves it)."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "prge", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [["data", "list"], ["check", "configs/quickstart.yaml"]])
def test_a_closed_stdout_ends_quietly(args):
    """`prge data list | head -1`: no traceback, no error line; the exit status of a command
    stopped by SIGPIPE (128 + 13), as `yes | head -1` gives."""
    from pathlib import Path

    args = [str(Path(__file__).parents[2] / a) if a.endswith(".yaml") else a for a in args]
    result = _run_with_stdout_closed(args)
    assert result.returncode == 141 and result.stderr == "", result.stderr


# A sweep whose runs would share a directory is refused when it is expanded, naming the file.
SWEEP_COLLISIONS = [
    ("variants:\n  - {name: a, run.steps: 1}\n  - {name: b}\n  - {name: a, run.steps: 2}\n",
     "variants 1 and 3 are both named 'a'"),
    ("variants:\n  - {run.steps: 1}\n  - {run.steps: 2}\n", "(a variant without name: is named run)"),
    ("grid:\n  run.seed: [1, '1']\n", "two runs would share the directory"),
    ("grid:\n  estimator.kind: [prge]\n  optimizer.kind: [sgd, adam]\n  run.seed: [1]\n"
     "variants:\n  - {name: x-kindprge}\n  - {name: x}\n", None),  # distinct labels: accepted
    ("variants: {name: a}\n", "variants must be a list of mappings"),
    ("grid:\n  model.name: [/x/alpha, /y/alpha]\n", "two runs would share the directory"),
    ("variants:\n  - {name: ../out}\n", "variant 1 is named '../out'"),
    ("variants:\n  - {name: a}\n  - {name: ..}\n", "variant 2 is named '..'"),
    ("variants:\n  - {name: ''}\n  - {name: b}\n", "variant 1 is named ''"),
]


@pytest.mark.parametrize("body,message", SWEEP_COLLISIONS)
def test_sweep_runs_that_would_share_a_directory_are_refused_at_expansion(tmp_path, capsys, body, message):
    from prge.sweep import expand_sweep

    (tmp_path / "base.yaml").write_text(f"run: {{steps: 1, output_dir: {tmp_path / 'unused'}}}\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: base.yaml\noutput_root: {tmp_path / 'runs'}\n" + body)
    if message is None:
        labels = [label for label, _ in expand_sweep(sweep)]
        assert len(set(labels)) == len(labels)
        return
    assert main(["sweep", str(sweep), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.match(rf"prge: error: {re.escape(str(sweep))}(:\d+:\d+)?: ", err) and message in err, err
    assert not (tmp_path / "runs").exists()  # refused before any run started


def test_grid_values_that_are_paths_name_runs_by_their_last_part_inside_the_output_root(tmp_path):
    """A grid over model directories (or any path) must not put a run's directory outside the
    sweep's output_root or nest it (model.name: ../beta once named the run run-name../beta)."""
    from prge.sweep import expand_sweep

    (tmp_path / "base.yaml").write_text(f"run: {{steps: 1, output_dir: {tmp_path / 'unused'}}}\n")
    sweep = tmp_path / "sweep.yaml"
    root = tmp_path / "runs"
    sweep.write_text(f"base: base.yaml\noutput_root: {root}\ngrid:\n  model.name: [{tmp_path}/models/alpha, ../beta]\n")
    runs = expand_sweep(sweep)
    assert [label for label, _ in runs] == ["run-namealpha", "run-namebeta"]
    for label, config in runs:
        assert Path(config.run.output_dir) == root / label
    assert runs[1][1].model.name == "../beta"  # the value itself is unchanged


@pytest.mark.parametrize("how", ["file", "set"])
def test_an_unknown_model_name_names_the_key_and_the_config_file(tmp_path, capsys, how):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    missing = str(tmp_path / "no-such-model")
    config = write_config(tmp_path, missing if how == "file" else model_dir, data_dir)
    extra = ["--set", f"model.name={missing}"] if how == "set" else []
    capsys.readouterr()
    assert main(["train", str(config), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    if how == "file":
        line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "no-such-model" in text)
        where = f"{config}:{line}:"
    else:
        where = f"{config}: --set model.name"
    assert err.startswith(f"prge: error: {where}") and "model.name" in err and f"unknown model '{missing}'" in err, err


def test_mezo_with_the_counter_rng_is_warned_about():
    """MeZO draws weight-sized noise: off CUDA (no kernel draws it) the counter RNG's ATen ops make
    that about 11x slower than the torch generator that rng: auto takes there, so an explicit
    counter on the CPU is a warning; on CUDA a kernel draws it and auto takes counter itself."""
    import prge

    mezo = "estimator: {kind: mezo, parallel: sequential, rng: %s}"
    assert any("counter with estimator.kind mezo" in w for w in prge.parse_run_config(mezo % "counter").warnings)
    assert not prge.parse_run_config(mezo % "auto").warnings
    on = "model: {device: %s}\nestimator: {kind: mezo, parallel: sequential, rng: counter}\n"
    cpu = [w for w in prge.parse_run_config(on % "cpu").warnings if "estimator.rng" in w]
    assert len(cpu) == 1 and "counter with estimator.kind mezo on cpu" in cpu[0]
    for device in ("cuda", "cuda:1"):  # a kernel draws it there, in a build that has prge's CUDA kernels
        warned = [w for w in prge.parse_run_config(on % device).warnings if "estimator.rng" in w]
        assert len(warned) == (0 if prge.cuda_built else 1), warned
        assert prge.cuda_built or "(a build without CUDA kernels)" in warned[0]


def test_a_template_yaml_read_as_a_mapping_says_to_quote_it():
    """`--set data.template={question}` (or the same unquoted in a file) is a YAML mapping: the
    error says so and how to quote it, not only that one value was expected."""
    with pytest.raises(ValueError, match=r"data.template: expected a single value, got a mapping .*quote the text"):
        prge.parse_run_config("data: {task: custom, template: {question}}\n")


@pytest.mark.parametrize("estimator,lr,noted", [("{kind: mezo, parallel: sequential}", "1.0e-3", True),
                                                ("{kind: mezo, parallel: sequential}", "2.0e-5", True),
                                                ("{kind: mezo, parallel: sequential}", "1.0e-5", False),
                                                ("{kind: mezo, parallel: sequential}", "1.0e-6", False),
                                                ("{kind: prge}", "1.0e-3", False)])
def test_full_parameter_mezo_at_an_adapter_sized_lr_is_noted(tmp_path, capsys, estimator, lr, noted):
    """MeZO moves every weight by lr * g * z: at LoRA-FA's learning rates its loss diverges, so
    prge check (and prge train) say so on stderr, naming the key; adapters at that lr say nothing."""
    path = tmp_path / "run.yaml"
    path.write_text(f"estimator: {estimator}\noptimizer: {{lr: {lr}}}\n")
    assert main(["check", str(path)]) == 0
    err = capsys.readouterr().err
    assert (f"[prge] note: optimizer.lr: {float(lr):g} with estimator.kind: mezo" in err) == noted, err
    # besides, only the note that MeZO loads the default model's quantized projections dense, and
    # check's last line, its OK
    *lines, ok = err.splitlines()
    assert ok.startswith(f"[prge] {path}: OK: the config, model and device pass prge train's checks that need no weights"), err
    others = [line for line in lines if "its quantized projection weights are loaded dequantized" not in
              line.replace("smollm2-135m's", "its")]
    assert noted or others == [], err


def test_train_prints_each_evaluation_once_and_the_last_one_below_a_finished_bar(tmp_path, capsys):
    """With progress bars on: the evaluation every 3 steps prints one line above the bar, the last
    step's only in the closing 'after 6 steps' line, and the last evaluation's bar comes after the
    training bar reached 6/6 and closed (not nested under a bar at 5/6)."""
    pytest.importorskip("tqdm")
    model_dir, data_dir = make_tiny_assets(tmp_path)
    (data_dir / "test.csv").write_text((data_dir / "train.csv").read_text())  # 40: three evaluation batches
    config = write_config(tmp_path, model_dir, data_dir, data={"eval_examples": 40})
    assert main(["train", str(config)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert sum(line.startswith("[prge] step 3: ") for line in lines) == 1, captured.out
    assert not any(line.startswith("[prge] step 6: ") for line in lines), captured.out
    assert sum(line.startswith("[prge] after 6 steps: ") for line in lines) == 1, captured.out
    err = captured.err.replace("\r", "\n")
    last_train = err.rindex("train:")
    assert "6/6" in err[last_train:].splitlines()[0], err
    assert "eval:" in err[last_train:] and "train:" not in err[err.index("eval:", last_train):], err


def test_prge_check_on_a_sweep_checks_every_run_as_the_sweep_would(tmp_path, capsys, monkeypatch):
    """prge check SWEEP.yaml: every run expanded and checked before anything trains (one line
    each, each note once), a bad grid value named as prge sweep names it; not 'base: unknown key'.
    The sweep's model is converted in a cache of the test's own (a tiny model in its place, with
    the file of quantized projections whose presence the MeZO note reads), so that what check
    reads does not depend on what this machine's cache holds."""
    from prge._core import QUANTIZED_WEIGHTS_FILE
    from prge.models import check_model_name, conversion_dir
    from prge.models.gguf_convert import CONVERTER_VERSION, MARKER

    monkeypatch.setenv("PRGE_CACHE", str(tmp_path / "cache"))
    converted = conversion_dir("smollm2-135m", check_model_name("smollm2-135m"))
    model_dir, _ = make_tiny_assets(tmp_path)
    shutil.copytree(model_dir, converted)
    config_json = json.loads((converted / "config.json").read_text())  # SmolLM2's 8192 positions
    (converted / "config.json").write_text(json.dumps({**config_json, "max_position_embeddings": 8192}))
    (converted / MARKER).write_text(json.dumps({"converter": CONVERTER_VERSION}))
    (converted / QUANTIZED_WEIGHTS_FILE).write_bytes(b"")
    sweep = ROOT / "configs" / "sweeps" / "paper_accuracy.yaml"
    assert main(["check", str(sweep)]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 165 and out.out.startswith("fo_sgd_lora_fa-tasksst2-seed42: ")
    assert out.err.count("[prge] note: estimator.kind: mezo perturbs every weight") == 1, out.err
    assert f"[prge] {sweep}: 165 runs checked" in out.err
    assert main(["check", str(sweep), "--set", "data.protocol=nope"]) == 2
    assert "prge: error: --set data.protocol: " in capsys.readouterr().err
    assert main(["check", str(sweep), "--set", "data.task=sst2"]) == 2  # the grid's tasks: pick runs with --only
    assert "--set data.task: the grid varies data.task (11 values)" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text(f"base: {ROOT / 'configs' / 'paper' / 'base.yaml'}\ngrdi: {{run.seed: [1]}}\n")
    assert main(["check", str(typo)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: ") and "grdi" in err and "base: unknown key" not in err, err


@pytest.mark.parametrize("text", [
    "a: &x [*x]\n",  # an alias inside the node it names: yaml-cpp makes a node that holds itself
    "a: &a [1, 1]\n" + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}, *{'a' if i == 0 else f'b{i - 1}'}]\n"
                               for i in range(40)),  # aliases of aliases: 2^40 values to walk
])
def test_a_yaml_alias_that_never_ends_is_refused_not_a_crash(text, tmp_path, capsys):
    """The reader walked such a tree until the stack overflowed (prge ended with a segmentation
    fault, a sweep too when a run directory held such a config.yaml); now a named refusal, in a
    file and in a --set value."""
    with pytest.raises(prge.ConfigError, match=r"^c\.yaml: the YAML is nested more than 64 levels deep or holds more "
                                               r"than 100000 values \(an alias inside the node it names"):
        prge.parse_run_config(text, "c.yaml")
    with pytest.raises(prge.ConfigError, match=r"--set data.label_words: .* holds more than 100000 values"):
        prge.parse_run_config("estimator: {queries: 2}\n", "c.yaml", [("data.label_words", "&x {a: *x}")])
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert main(["check", str(config)]) == 2
    assert "the YAML is nested more than 64 levels deep" in capsys.readouterr().err


@pytest.mark.parametrize("grid", [
    "  data.label_words: [&x [*x]]\n",  # an alias inside the node it names
    "  data.label_words:\n    - &a0 [' x', ' y']\n" + "".join(f"    - &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, 41)),
])
def test_a_sweep_file_whose_aliases_never_end_is_refused_at_its_place(grid, tmp_path, capsys):
    """PyYAML reads a sweep file before the config reader sees a run: a self-holding alias ended
    in 'maximum recursion depth exceeded' naming nothing, aliases of aliases ran until memory
    ran out; both are refused at the place, as the config reader refuses them."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: {data: {task: custom, train_file: t.csv, eval_file: e.csv, template: '{text}'}}\n"
                     "grid:\n" + grid)
    assert main(["check", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"prge: error: {re.escape(str(sweep))}:\d+:\d+: the YAML is nested more than 64 levels deep "
                     r"or holds more than 100000 values \(an alias inside the node it names", err), err


def test_yaml_nested_past_the_readers_stack_is_refused_naming_the_file(tmp_path, capsys):
    """Thousands of nested brackets: PyYAML builds nodes recursively and ran out of Python's stack
    ('maximum recursion depth exceeded', naming nothing) in `prge check`, `prge sweep` and a
    report; each names the file now, a sweep file as a sweep, a run config as a run config."""
    deep = "[" * 3000 + "]" * 3000
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: {{data: {{task: sst2}}}}\ngrid:\n  data.label_words: {deep}\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"run: {{steps: 1}}\nmodel: {deep}\n")
    for command in (["check", str(sweep)], ["sweep", str(sweep)]):
        assert main(command) == 2
        assert f"prge: error: {sweep}: the YAML is nested more than 64 levels deep" in capsys.readouterr().err
    assert main(["check", str(config)]) == 2  # yaml-cpp's own limit: its message said "bad file"
    assert re.search(rf"prge: error: {re.escape(str(config))}:2:\d+: malformed YAML: nested more than 64 levels deep "
                     r"\(the YAML parser stopped at its own limit\)", capsys.readouterr().err)


def test_check_tells_a_sweep_file_from_a_config_as_the_readers_refuse_them(tmp_path, capsys):
    """A list as a sweep key was a TypeError traceback; a second document goes to the config
    reader, which names it (the sweep test reads PyYAML's events, every document's)."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: {data: {task: sst2}}\ngrid:\n  ? [run.seed]\n  : [1, 2]\n")
    for command in ("check", "sweep"):
        assert main([command, str(sweep)]) == 2
        assert f"prge: error: {sweep}:3:5: malformed YAML: found unhashable key" in capsys.readouterr().err
    config = tmp_path / "config.yaml"
    config.write_text("run: {steps: 1}\n---\nbase: b.yaml\n")
    assert main(["check", str(config)]) == 2
    assert f"prge: error: {config}:3:1: a second YAML document" in capsys.readouterr().err
