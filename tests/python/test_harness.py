"""Reproduction harness: data locations and formats (published files, HF `datasets`),
the MeZO protocol with best-checkpoint selection on dev, speed sweeps and their report."""
import csv
from pathlib import Path
import json
import re
import sys

import pytest
import yaml

from conftest import make_tiny_assets, write_config
from installed import installed_module
from prge.cli import main
from prge.data.tasks import get_task


def write_sst2_files(root, n_train=30, n_eval=10):
    root.mkdir(parents=True)
    for name, n in (("train.tsv", n_train), ("validation.tsv", n_eval)):
        with open(root / name, "w") as f:
            f.write("sentence\tlabel\n")
            for i in range(n):
                f.write(f"sentence number {i} \t{i % 2}\n")


def test_data_copy_then_tasks_read_the_user_data_dir(tmp_path, monkeypatch, capsys):
    write_sst2_files(tmp_path / "published")
    monkeypatch.setenv("PRGE_DATA", str(tmp_path / "userdata"))
    (tmp_path / "published" / "train.tsv").chmod(0o444)  # a read-only store: the copies are the user's own files
    assert main(["data", "copy", "sst2", "--from", str(tmp_path / "published")]) == 0
    assert (tmp_path / "userdata" / "sst2" / "train.tsv").stat().st_mode & 0o200
    assert main(["data", "copy", "sst2", "--from", str(tmp_path / "published")]) == 0  # copied again over them
    train = get_task("sst2").load("train")  # no data_dir: found in $PRGE_DATA/sst2
    assert len(train) == 30 and train[3].fields["text"] == "sentence number 3" and train[3].label == 1
    assert main(["data", "list"]) == 0
    assert str(tmp_path / "userdata" / "sst2") in capsys.readouterr().out
    assert main(["data", "copy", "imdb"]) == 2
    assert "unknown task 'imdb'" in capsys.readouterr().err
    assert main(["data", "copy", "rte", "--from", str(tmp_path / "nowhere")]) == 2
    assert "source directory not found" in capsys.readouterr().err


def test_loaders_accept_the_hf_datasets_format(tmp_path):
    datasets = installed_module("datasets", "pip install datasets")
    sst2 = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": ["a fine film ", "dull"], "label": [1, 0], "idx": [0, 1]}),
        "validation": datasets.Dataset.from_dict({"sentence": ["great"], "label": [1], "idx": [0]})})
    sst2.save_to_disk(str(tmp_path / "sst2_hf"))
    train = get_task("sst2").load("train", tmp_path / "sst2_hf")
    assert [(e.fields["text"], e.label) for e in train] == [("a fine film", 1), ("dull", 0)]
    # super_glue/rte: integer labels, 0 = entailment -> "Yes" (class 0), as the published strings
    rte = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"premise": ["p"], "hypothesis": ["h"], "label": [1], "idx": [0]}),
        "validation": datasets.Dataset.from_dict({"premise": ["p"], "hypothesis": ["h"], "label": [0], "idx": [0]})})
    rte.save_to_disk(str(tmp_path / "rte_hf"))
    assert get_task("rte").load("eval", tmp_path / "rte_hf")[0].label == 0
    assert get_task("rte").load("train", tmp_path / "rte_hf")[0].label == 1
    # super_glue/wsc.fixed: spans at top level, label 1 = the pronoun refers to span1 -> "Yes"
    wsc = datasets.DatasetDict({split: datasets.Dataset.from_dict(
        {"text": ["Mark lied to Pete. He was sorry."], "span1_text": ["Mark"], "span2_text": ["He"],
         "span1_index": [0], "span2_index": [4], "label": [1], "idx": [0]}) for split in ("train", "validation")})
    wsc.save_to_disk(str(tmp_path / "wsc_hf"))
    example = get_task("wsc").load("train", tmp_path / "wsc_hf")[0]
    assert example.label == 1 and get_task("wsc").label_words[1] == "Yes"
    assert 'pronoun "he" refer to Mark?' in get_task("wsc").prompt(example)


def test_wrong_fields_and_unknown_names_are_named(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.tsv").write_text("text\tlabel\nhello\t1\n")
    with pytest.raises(ValueError, match=rf"^sst2: train split: {bad}/train.tsv: record 1 \(line 2\): no field "
                                         "'sentence' \\(it has: 'text', 'label'\\)"):
        get_task("sst2").load("train", bad)
    model_dir, data_dir = make_tiny_assets(tmp_path)
    config = write_config(tmp_path, model_dir, data_dir, model={"name": "gpt-17"})
    assert main(["train", str(config), "--no-progress"]) == 2
    assert "unknown model 'gpt-17'" in capsys.readouterr().err


def test_mezo_protocol_picks_the_best_checkpoint_on_dev(tmp_path):
    from prge.train import best_checkpoint, split_protocol

    model_dir, data_dir = make_tiny_assets(tmp_path)
    config = write_config(tmp_path, model_dir, data_dir,
                          data={"protocol": "mezo", "train_examples": 24, "dev_examples": 12,
                                "eval_examples": 10})
    assert main(["train", str(config), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    history = summary["eval_history"]
    assert summary["protocol"] == "mezo" and all("dev_accuracy" in h for h in history)
    best = max(history, key=lambda h: (h["dev_accuracy"], -h["step"]))
    assert summary["best_step"] == best["step"] and summary["accuracy_best"] == best["eval_accuracy"]
    assert best_checkpoint([{"step": 0, "dev_accuracy": 0.5, "eval_accuracy": 0.9},
                            {"step": 5, "dev_accuracy": 0.7, "eval_accuracy": 0.6}])["step"] == 5
    # train and dev are disjoint draws from the train split; too few examples is an error
    import prge

    cfg = prge.load_run_config(str(config))
    train, dev, test = split_protocol(get_task("fine_food"), cfg.data, cfg.run.seed)
    assert (len(train), len(dev), len(test)) == (24, 12, 10)
    assert not any(any(e is d for d in dev) for e in train)
    config = write_config(tmp_path, model_dir, data_dir,
                          data={"protocol": "mezo", "train_examples": 30, "dev_examples": 20})
    with pytest.raises(ValueError, match="mezo protocol needs 50 train examples"):
        split_protocol(get_task("fine_food"), prge.load_run_config(str(config)).data, 0)
    with pytest.raises(prge.ConfigError, match="data.protocol: unknown protocol 'glue'"):
        prge.parse_run_config("data: {protocol: glue}")


def test_speed_sweep_and_report(tmp_path, monkeypatch):
    """A speed sweep and its report; the sweep's paths written from the home directory (~)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no directory named ~ may appear here
    sweep = tmp_path / "speed.yaml"
    sweep.write_text(yaml.safe_dump({
        "mode": "speed", "speed": {"warmup": 1, "steps": 2, "shape": "tiny-debug"},
        "base": {"adapter": {"rank": 4, "alpha": 8}, "data": {"max_length": 12}},
        "output_root": "~/runs",
        "report": {"title": "tiny speed", "out": "~/report"},
        "grid": {"estimator.queries": [1, 4]},
        "variants": [{"name": "sequential", "estimator.parallel": "sequential"},
                     {"name": "dual", "estimator.parallel": "dual"}]}))
    assert main(["sweep", str(sweep)]) == 0
    summary = json.loads((tmp_path / "runs" / "dual-queries4" / "summary.json").read_text())
    assert summary["forward_passes_per_step"] == 1 and summary["sequences_per_step"] == 8 * 4
    assert summary["tokens_per_second"] == pytest.approx(32 * 12 / summary["step_seconds"])
    assert main(["report", str(sweep)]) == 0
    with open(tmp_path / "report" / "speed_speed.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["sequential-queries4"]["speedup_vs_sequential"]) == 1.0
    assert rows["sequential-queries4"]["device_name"] == summary["device_name"] != ""  # whose step times
    expected = float(rows["sequential-queries4"]["step_seconds"]) / float(rows["dual-queries4"]["step_seconds"])
    assert float(rows["dual-queries4"]["speedup_vs_sequential"]) == pytest.approx(expected, rel=1e-3)
    assert (tmp_path / "report" / "speed_speedup_vs_q.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", "~/runs", "--out", "~/report2"]) == 0  # quoted in a shell: prge reads the ~
    assert (tmp_path / "report2" / "runs_speed.csv").is_file()
    assert not (tmp_path / "~").exists()
    sweep.write_text(yaml.safe_dump({"mode": "race"}))
    assert main(["sweep", str(sweep)]) == 2


def test_a_sweeps_paths_read_a_tilde_as_the_home_directory(tmp_path, monkeypatch, capsys):
    """base, output_root and report.out of a sweep file, as a run config's path keys: ~ is the home
    directory, an unknown ~user is named at its line; a run whose data folder is ./~/data (a folder
    named ~ here) is not taken for one on ~/data."""
    from prge.run_dir import normalized
    from prge.sweep import expand_sweep, load_sweep_spec

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "base.yaml").write_text("run: {steps: 2}\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("base: ~/base.yaml\noutput_root: ~/runs\nreport: {out: ~/report}\n"
                     "grid: {run.seed: [1]}\n")
    assert load_sweep_spec(sweep)["report"]["out"] == str(tmp_path / "home" / "report")
    [(name, config)] = expand_sweep(sweep)
    assert config.run.steps == 2 and config.run.output_dir == str(tmp_path / "home" / "runs" / name)
    sweep.write_text("output_root: ~no_such_user_prge/runs\ngrid: {run.seed: [1]}\n")
    assert main(["check", str(sweep)]) == 2
    assert f"prge: error: {sweep}:1:1: output_root: '~no_such_user_prge/runs': no such user" in capsys.readouterr().err
    for text, wanted in [("output_root: '~/runs '\n", ":1:1: output_root: '~/runs ' starts or ends with whitespace"),
                         ("report: {out: \"\\t\"}\n", ":1:10: report.out: '\\t' is only whitespace"),
                         ("report: {out: 7}\n", ":1:10: report.out: expected a directory name, got 7")]:
        sweep.write_text(text + "grid: {run.seed: [1]}\n")
        assert main(["check", str(sweep)]) == 2
        assert f"prge: error: {sweep}{wanted}" in capsys.readouterr().err
    here, home = (normalized(f"data: {{data_dir: {d}}}\n") for d in ("./~/data", "~/data"))
    assert here != home and "./~/data" in here and str(tmp_path / "home" / "data") in home
    # output_root ./~/runs (a folder named ~ here) stays here: the runs' directories keep the ./
    # (pathlib drops it, and the reader then took ~/runs/<label> for the home's); --output-root
    # reads ~ and whitespace as output_root does.
    sweep.write_text("output_root: ./~/runs\ngrid: {run.seed: [1]}\n")
    [(name, config)] = expand_sweep(sweep)
    assert config.run.output_dir == f"./~/runs/{name}"
    assert expand_sweep(sweep, output_root="./~/r")[0][1].run.output_dir == f"./~/r/{name}"
    assert expand_sweep(sweep, output_root="~/r")[0][1].run.output_dir == str(tmp_path / "home" / "r" / name)
    with pytest.raises(ValueError, match=re.escape(f"{sweep}: --output-root: ' r' starts or ends with whitespace")):
        expand_sweep(sweep, output_root=" r")
    from prge.run_dir import shown
    from prge.sweep import not_started_runs

    assert shown(Path("./~/runs/a")) == "./~/runs/a" and shown(Path("runs/~")) == "runs/~"
    monkeypatch.chdir(tmp_path)  # prge report SWEEP lists the runs not started in ./~/runs, not in ~/runs
    assert not_started_runs(sweep, Path("./~/runs")) == [name]
    (tmp_path / "~" / "runs" / name).mkdir(parents=True)
    (tmp_path / "~" / "runs" / name / "config.yaml").write_text("run: {}\n")
    assert not_started_runs(sweep, Path("./~/runs")) == []
    from prge.reporting.collect import collect

    with pytest.raises(FileNotFoundError, match=r"no finished runs \(summary.json\) under \./~/runs;"):
        collect(Path("./~/runs"))


def test_a_path_may_not_start_or_end_with_what_python_calls_whitespace():
    """prge._core.expand_path (every path key, and a sweep's paths) refuses a path that starts or
    ends with any character str.isspace() takes (a no-break space pasted from a page, an
    ideographic space) and only those: a zero-width space or an accented letter stays."""
    from prge._core import expand_path

    wrong = []
    for code in [*range(1, 0x3100), 0xfeff, 0x1f600]:  # every space Python knows lies below U+3100
        ch = chr(code)
        for path in ("a" + ch, ch + "a") if ch != "~" else ("a~",):  # ~a: the account a's home
            try:
                refused = expand_path(path) != path
            except ValueError:
                refused = True
            if refused != ch.isspace():
                wrong.append(f"U+{code:04X} in {path!r}")
    assert not wrong, wrong[:10]


def test_whitespace_sets_match_what_python_calls_whitespace_over_all_of_unicode():
    """prge.whitespace, the one source of the sweep's run-name and message escapes and of the
    overrides' flow text: UNICODE_SPACE is every character beyond ASCII that str.isspace() takes
    (its table stops at U+3100: nothing above is whitespace), CONTROL_OR_SPACE adds C0 controls,
    DEL and ASCII's whitespace but not a plain space, and visible() escapes them (whitespace as
    the C++ reader's messages do: \\t, \\u00a0)."""
    import sys

    from prge.whitespace import CONTROL_OR_SPACE, UNICODE_SPACE, visible

    wrong = []
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        if bool(UNICODE_SPACE.fullmatch(ch)) != (ch.isspace() and code >= 0x80):
            wrong.append(f"UNICODE_SPACE U+{code:04X}")
        if bool(CONTROL_OR_SPACE.fullmatch(ch)) != ((ch.isspace() and ch != " ") or code < 0x20 or code == 0x7f):
            wrong.append(f"CONTROL_OR_SPACE U+{code:04X}")
    assert not wrong, wrong[:10]
    assert visible("a b\u00a0c\td\x01e\x7f\u3000") == "a b\\u00a0c\\td\\x01e\\x7f\\u3000"



def test_python_and_the_cpp_reader_escape_the_same_characters_in_messages():
    """visible() (Python) and shown_text.cpp's visible() escape the same characters, each the same
    way, over every code point where either escapes one (and a few above): C0 and C1 controls,
    DEL, whitespace other than a space, and HIDDEN's invisible format characters, which are all
    Unicode controls or format characters and include every bidirectional control (a name
    cannot be made to read as another: "Trojan Source")."""
    import unicodedata

    from prge._core import parse_run_config
    from prge.whitespace import HIDDEN, visible

    assert all(unicodedata.category(ch) in ("Cc", "Cf") for ch in HIDDEN)
    bidi_controls = {"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}
    assert all(ch in HIDDEN for ch in map(chr, range(0x80, 0x10000)) if unicodedata.bidirectional(ch) in bidi_controls)
    assert visible("a\u202eb\u200b\x9b\U000e0041") == "a\\u202eb\\u200b\\u009b\\U000e0041"
    wrong = []
    for code in [*range(1, 0x3100), *range(0xfeff, 0x10001), *range(0x1d170, 0x1d180), 0x1f600, *range(0xdffff, 0xe0081),
                 0x10ffff]:
        if 0xd800 <= code < 0xe000:  # surrogates: no UTF-8 text holds them
            continue
        with pytest.raises(Exception) as e:  # YAML's \U escape puts any code point in the value
            parse_run_config('estimator: {kind: "a\\U%08x"}\n' % code, "c.yaml", [])
        shown = str(e.value).split("unknown estimator '", 1)[1].rsplit("' (allowed", 1)[0]
        if shown != visible("a" + chr(code)):
            wrong.append(f"U+{code:04X}: C++ {shown!r}, Python {visible('a' + chr(code))!r}")
    assert not wrong, wrong[:10]


def test_bytes_that_are_not_utf8_are_shown_as_escapes_in_a_cpp_message(tmp_path):
    """A config file read by C++ (load_run_config: a run directory's config.yaml) holding bytes
    that are not UTF-8 (overlong, a lone C1 byte that would start a terminal sequence, a sequence
    cut short) is refused with a ConfigError whose message shows them as \\xNN."""
    from prge._core import ConfigError, load_run_config

    path = tmp_path / "config.yaml"
    path.write_bytes(b'estimator: {kind: "a\xc0\x80b\x9bc\xe2\x80"}\n')
    with pytest.raises(ConfigError, match=r"unknown estimator 'a\\xc0\\x80b\\x9bc\\xe2\\x80' \(allowed"):
        load_run_config(str(path))
    path.write_bytes(b'estimator: {kind: "a' + b"\x80" * 300 + b'"}\n')  # cut at 80 characters, each byte one
    with pytest.raises(ConfigError, match=r"unknown estimator 'a(\\x80){79}\.\.\.' \(301 bytes\) \(allowed"):
        load_run_config(str(path))



def test_names_and_values_from_files_and_flags_are_shown_escaped_and_cut(tmp_path):
    """A device, a --gpus list, a model name or shape, a JSON file's duplicate key and an
    adapter_config.json field, each as a user or a file may write it (an escape sequence, a
    bidirectional override, a file's text pasted), are shown escaped and cut in their messages."""
    import json

    from prge.adapters import read_peft_config
    from prge.jsonl import unique_keys
    from prge.models import check_model_name, shape_config
    from prge.preflight import check_device
    from prge.sweep_gpus import parse_gpus

    long = "\x1b[31m\u202e" + "z" * 300
    calls = [lambda: check_device(long), lambda: parse_gpus(long), lambda: check_model_name(long),
             lambda: shape_config(long), lambda: unique_keys([(long, 1), (long, 2)])]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", long: 1}))
    calls.append(lambda: read_peft_config(adapter, "adapter.init_from"))
    for call in calls:
        with pytest.raises(Exception) as e:
            call()
        message = str(e.value)
        assert "\\x1b[31m\\u202e" + "z" * 74 + "...' (308 bytes)" in message and "\x1b" not in message \
            and "\u202e" not in message, message
    with pytest.raises(ValueError, match=r"^r.yaml:1:2: model.name: unknown model 'a\\x00b': not a directory"):
        check_model_name("a\x00b", "r.yaml:1:2: model.name")  # a NUL: no path (was 'embedded null byte', unplaced)


def test_a_sweeps_keys_and_names_in_its_messages_are_escaped(tmp_path):
    """A grid key, a --set key and a variant's name reach the config reader's messages as the
    place of a value: escaped there too (a bidirectional override in a key is not printed raw)."""
    from prge.sweep import expand_sweep

    (tmp_path / "base.yaml").write_text("run: {steps: 1}\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text('base: base.yaml\ngrid:\n  "optimizer.l\\u202er": [1, 2]\n')
    for overrides in (None, [("optim\u202eizer.lr", "1")]):
        if overrides:
            sweep.write_text("base: base.yaml\ngrid: {run.seed: [1, 2]}\n")
        with pytest.raises(ValueError) as e:
            expand_sweep(sweep, overrides)
        assert "\u202e" not in str(e.value) and "\\u202e" in str(e.value), str(e.value)

def test_a_long_value_is_shown_by_its_start_and_length_in_python_messages(tmp_path):
    """shown_value: repr() for a short value, the first 80 characters and the length for a long
    one (a file's text pasted as a --set value, a task name, a grid value), so that a message stays
    a few lines; 1 and '1' stay apart in a grid point."""
    from prge.overrides import parse_assignment
    from prge.sweep import expand_sweep, shown_point
    from prge.whitespace import shown_value

    long = "\x1b[31m" + "é" * 300
    assert shown_value("sst2") == "'sst2'" and shown_value(1) == "1"
    for whole in ("a" * 80, "\x1b" * 30, "it's"):  # up to 80 characters: whole, escapes and quotes intact
        assert shown_value(whole) == repr(whole)
    assert shown_value("it's" * 30) == repr("it's" * 20)[:-1] + '..." (120 bytes)'
    assert shown_value(long) == repr(long[:80])[:-1] + "...' (605 bytes)"  # as the C++ reader's shown_value
    assert shown_value(list(range(100))).endswith("... (390 characters)")
    assert shown_point({"run.seed": 1}) != shown_point({"run.seed": "1"})
    for call in (lambda: parse_assignment(long), lambda: parse_assignment(long + "="), lambda: get_task(long)):
        with pytest.raises(ValueError) as e:
            call()
        assert re.search(r"\.\.\.' \(60[56] bytes\)", str(e.value)) and len(str(e.value)) < 600 and "\x1b" not in str(e.value), str(e.value)
    (tmp_path / "base.yaml").write_text(f"run: {{steps: 1, output_dir: {tmp_path / 'unused'}}}\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: base.yaml\noutput_root: {tmp_path / 'runs'}\n"
                     f"grid:\n  model.name: [/x/{'a' * 200}, /y/{'a' * 200}]\n")
    with pytest.raises(ValueError, match="two runs would share the directory") as e:
        expand_sweep(sweep)
    assert "...' (203 bytes)" in str(e.value) and len(re.findall("a{81,}", str(e.value))) == 1, str(e.value)  # the path alone



def test_python_and_the_cpp_reader_cut_a_long_value_at_the_same_length():
    """whitespace.SHOWN_VALUE_CHARS and shown_text.cpp's kShownValueChars are one rule written
    twice: a long value the C++ config reader refuses is cut where Python's shown_value cuts it (up
    to 80 characters whole, then the start and the length in UTF-8 bytes). The escapes agree for
    ASCII controls; beyond ASCII they differ (C++ writes U+00A0 as \\u00a0, repr as \\xa0)."""
    from prge._core import parse_run_config
    from prge.whitespace import SHOWN_VALUE_CHARS, shown_value

    for value in ("a" * SHOWN_VALUE_CHARS, "a" * (SHOWN_VALUE_CHARS + 1), "\x1b[31m" + "\u00e9" * 300, "b\tc" * 40):
        with pytest.raises(Exception, match="unknown estimator") as e:
            parse_run_config("run: {steps: 3}\n", "c.yaml", [("estimator.kind", value)])
        assert f"unknown estimator {shown_value(value)} (allowed" in str(e.value), (str(e.value), shown_value(value))

def test_paper_sweeps_expand_to_equal_forward_passes():
    """Every ZO method of the paper tables evaluates 2 * q * batch = 32 sequences a step."""
    from pathlib import Path

    from prge.sweep import expand_sweep

    root = Path(__file__).resolve().parents[2] / "configs" / "sweeps"
    runs = expand_sweep(root / "paper_accuracy.yaml")
    assert len(runs) == 5 * 11 * 3  # methods x tasks x seeds
    tasks = {config.data.task for _, config in runs}
    assert tasks == {"sst2", "rte", "wsc", "copa", "cb", "wic", "multirc", "mrpc", "wnli", "arc_easy", "arc_challenge"}
    for label, config in runs:
        assert config.data.max_length == 512 and config.data.protocol == "paper", label
        if config.estimator.kind != "first_order":
            assert config.estimator.queries * config.data.batch_size == 16 and config.run.steps == 5000, label
        # MeZO's lr 1e-6 updates of the weights themselves need float32; B stays float32 in any dtype
        full_weights = config.estimator.kind in ("mezo", "first_order")
        assert config.model.dtype == ("float32" if full_weights else "bfloat16"), label
    speed = expand_sweep(root / "paper_speed.yaml")
    assert {c.estimator.queries * c.data.batch_size for _, c in speed} == {16}


def test_every_committed_sweep_expands():
    """Each sweep under configs/sweeps parses and every run's config validates, with no MeZO run
    at an adapter-sized learning rate."""
    from pathlib import Path

    from prge.preflight import learning_rate_note
    from prge.sweep import expand_sweep

    sweeps = sorted((Path(__file__).resolve().parents[2] / "configs" / "sweeps").glob("*.yaml"))
    assert len(sweeps) >= 5
    for sweep in sweeps:
        runs = expand_sweep(sweep)
        assert runs and len({label for label, _ in runs}) == len(runs), sweep.name
        # a speed sweep times steps of random-weight shapes: MeZO's bf16 rounding changes no time
        timing = "speed" in yaml.safe_load(sweep.read_text())
        warnings = [w for _, config in runs for w in config.warnings
                    if not (timing and "with estimator.kind mezo: MeZO updates every weight" in w)]
        assert not warnings, f"{sweep.name}: {warnings}"
        assert not [label for label, config in runs if learning_rate_note(config)], f"{sweep.name}: MeZO lr"


def test_a_sweep_names_mezo_at_an_adapter_sized_lr_once(tmp_path):
    """prge sweep prints the MeZO learning-rate note itself (under --gpus a run's stderr goes to its
    log file), once per distinct note, with the runs it concerns."""
    from prge.sweep import expand_sweep, run_notes

    (tmp_path / "s.yaml").write_text("grid: {run.seed: [1, 2]}\nvariants:\n"
                                     "  - {name: mezo, estimator.kind: mezo, estimator.parallel: sequential}\n"
                                     "  - {name: prge, estimator.kind: prge}\n"
                                     "  - {name: mezo_small, estimator.kind: mezo, estimator.parallel: sequential, "
                                     "optimizer.lr: 1.0e-6}\n")
    notes = run_notes(expand_sweep(tmp_path / "s.yaml"))
    assert len(notes) == 1 and "with estimator.kind: mezo" in notes[0], notes
    assert notes[0].endswith("(2 run(s) of this sweep: mezo-seed1, mezo-seed2)"), notes[0]


def test_summaries_from_before_the_rename_read_with_current_names(tmp_path):
    """Committed results say parallel: single / none; reports group them with queries / sequential."""
    import json

    from prge import run_summary

    for old, new in (("single", "queries"), ("none", "sequential"), ("dual", "dual")):
        path = tmp_path / f"{old}.json"
        path.write_text(json.dumps({"parallel": old, "accuracy_after": 0.5}))
        assert run_summary.read(path)["parallel"] == new


def test_runs_that_differ_in_any_setting_are_different_methods(tmp_path):
    """Seeds of one method differ only in run.seed (and their directories): two runs whose
    summaries agree but whose configs differ elsewhere (model.quantize here) are two methods,
    never averaged together."""

    from prge.reporting.collect import collect

    summary = {"mode": "train", "task": "fine_food", "estimator": "prge", "queries": 4, "accuracy_after": 0.8}
    for quantize in ("none", "dense"):
        for seed in (1, 2):
            run = tmp_path / f"prge-quantize{quantize}-seed{seed}"
            run.mkdir()
            (run / "summary.json").write_text(json.dumps({**summary, "seed": seed}))
            (run / "config.yaml").write_text(f"model: {{quantize: {quantize}}}\nrun: {{seed: {seed}, output_dir: {run}}}\n")
    methods = {Path(r["run"]).name: r["method"] for r in collect(tmp_path)}
    assert methods == {"prge-quantizedense-seed1": "prge-quantizedense", "prge-quantizedense-seed2": "prge-quantizedense",
                       "prge-quantizenone-seed1": "prge-quantizenone", "prge-quantizenone-seed2": "prge-quantizenone"}


def test_one_config_trained_through_a_runtime_is_another_method(tmp_path):
    """config.yaml does not say which runtime trained it (`prge train --runtime` is a flag): runs
    of one config through prge's trainer and through ONNX Runtime are two methods, whose seeds
    are averaged apart (a report merged them)."""
    from prge.reporting.collect import collect

    summary = {"mode": "train", "task": "fine_food", "estimator": "prge", "queries": 4, "accuracy_after": 0.8}
    for runtime in ("eager", "onnx"):
        for seed in (1, 2):
            run = tmp_path / runtime / f"prge-seed{seed}"
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps({**summary, "seed": seed, "runtime": runtime}))
            (run / "config.yaml").write_text(f"run: {{seed: {seed}, output_dir: {run}}}\n")
    runs = collect(tmp_path)
    methods = {r["run"]: r["method"] for r in runs}
    assert len(set(methods.values())) == 2
    assert methods["eager/prge-seed1"] == methods["eager/prge-seed2"] != methods["onnx/prge-seed1"] == methods["onnx/prge-seed2"]
    # and their names say which is which (folders need not: "prge" in both)
    assert methods["onnx/prge-seed1"].endswith("(onnx)") and "(" not in methods["eager/prge-seed1"], methods
    assert {r["variant"] for r in runs if r["run"].startswith("onnx/")} == {"onnx/prge (onnx)"}, runs


def test_methods_with_one_folder_name_stay_apart_and_bad_configs_are_named(tmp_path):
    """Runs named alike in other folders, but configured differently, are two methods with two
    names (tables group by name); a run config that does not parse is an error naming it."""
    import json

    import pytest

    from prge.reporting.collect import collect

    for folder, quantize, seed in (("a", "none", 1), ("a", "none", 2), ("b", "dense", 1), ("c", "dense", 2)):
        run = tmp_path / folder / f"prge-seed{seed}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"mode": "train", "seed": seed, "accuracy_after": 0.8}))
        (run / "config.yaml").write_text(f"model: {{quantize: {quantize}}}\nrun: {{seed: {seed}}}\n")
    methods = {r["run"]: r["method"] for r in collect(tmp_path)}
    assert methods == {"a/prge-seed1": "a/prge", "a/prge-seed2": "a/prge", "b/prge-seed1": "b/prge",
                       "c/prge-seed2": "b/prge"}
    (tmp_path / "c" / "prge-seed2" / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match=r"c/prge-seed2/config.yaml: not a readable run config"):
        collect(tmp_path)
    # a node that holds itself, or aliases of aliases: named at their place (they failed naming nothing)
    doubling = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "x"] * 9) + "]\n" for i in range(6))
    for text, line in (("run: {seed: 2}\nmodel: &m [*m]\n", 2), (doubling + "run: {seed: 2}\n", 6)):
        (tmp_path / "c" / "prge-seed2" / "config.yaml").write_text(text)
        with pytest.raises(ValueError, match=rf"c/prge-seed2/config.yaml:{line}:\d+: the YAML is nested more than"):
            collect(tmp_path)
    (tmp_path / "c" / "prge-seed2" / "config.yaml").write_text("run: {seed: 2}\nzz: " + "[" * 3000 + "]" * 3000)
    with pytest.raises(ValueError, match=r"c/prge-seed2/config.yaml: the YAML is nested more than 64 levels deep"):
        collect(tmp_path)


@pytest.mark.parametrize("seed_last", [True, False])
def test_a_sweep_over_tasks_reports_a_task_by_method_table(tmp_path, seed_last):
    """Runs of a sweep over tasks: one row per task with its zero-shot accuracy (per model dtype)
    and majority-class accuracy, one column per method across tasks (the sweep's variant, found
    from the configs less data.task), cells mean ± std over seeds (a single seed: its value and
    (1)), a last row of means over the tasks each column has. The same names whether the grid
    lists run.seed after data.task (VARIANT-taskT-seedN) or before it (VARIANT-seedN-taskT)."""
    from prge.reporting.collect import collect
    from prge.reporting.tables import write_report
    from prge.sweep import grid_label

    best = {("prge_q4", "rte", 1): 0.50, ("prge_q4", "rte", 2): 0.60, ("prge_q4", "sst2", 1): 0.70,
            ("prge_q4", "sst2", 2): 0.90, ("mezo", "sst2", 1): 0.55}
    for (variant, task, seed), accuracy in best.items():
        parts = [grid_label("data.task", task), grid_label("run.seed", seed)]
        run = tmp_path / "-".join([variant] + (parts if seed_last else parts[::-1]))  # as prge sweep names it
        run.mkdir()
        kind = "mezo" if variant == "mezo" else "prge"
        (run / "summary.json").write_text(json.dumps({
            "mode": "train", "task": task, "seed": seed, "estimator": kind, "queries": 4, "parallel": "dual", "steps": 9,
            "dtype": "float32" if kind == "mezo" else "bfloat16", "accuracy_before": 0.5 if kind == "mezo" else 0.4,
            "majority_accuracy": 0.52, "accuracy_best": accuracy, "accuracy_after": accuracy,
            **({"device_name": "NVIDIA H100 80GB HBM3"} if seed == 2 else {})}))  # older summaries name none
        (run / "config.yaml").write_text(f"estimator: {{kind: {kind}}}\ndata: {{task: {task}}}\nrun: {{seed: {seed}}}\n")
    runs = collect(tmp_path)
    assert {r["variant"] for r in runs} == {"prge_q4", "mezo"}
    assert {r["method"] for r in runs} == {"prge_q4-taskrte", "prge_q4-tasksst2", "mezo-tasksst2"}
    markdown = write_report(runs, "t", tmp_path / "report", "paper", figures=False)
    assert "| task | zero-shot bfloat16 | zero-shot float32 | majority class | mezo | prge_q4 |" in markdown
    rows = {r["task"]: r for r in csv.DictReader(open(tmp_path / "report" / "paper_by_task.csv"))}
    assert rows["rte"]["prge_q4"] == "0.550 ± 0.071 (2)" and rows["rte"]["mezo"] == ""
    assert rows["sst2"]["prge_q4"] == "0.800 ± 0.141 (2)" and rows["sst2"]["mezo"] == "0.550 (1)"
    assert rows["sst2"]["zero-shot bfloat16"] == "0.400" and rows["sst2"]["zero-shot float32"] == "0.500"
    assert rows["rte"]["zero-shot float32"] == "" and rows["rte"]["majority class"] == "0.520"
    assert rows["mean over tasks"]["prge_q4"] == "0.675 (2 tasks)" and rows["mean over tasks"]["mezo"] == "0.550 (1 task)"
    assert list(rows)[:2] == ["rte", "sst2"]
    cards = {r["run"]: r["device_name"] for r in csv.DictReader(open(tmp_path / "report" / "paper_runs.csv"))}
    assert sorted(cards.values()) == [""] * 3 + ["NVIDIA H100 80GB HBM3"] * 2


def test_a_report_over_two_models_keeps_their_zero_shot_and_methods_apart(tmp_path):
    """model.name as a grid key: each model's zero-shot is its own column (not their mean), a
    method named by what its runs share says which model, and the runs table has a model column."""
    from prge.reporting.collect import collect
    from prge.reporting.tables import task_rows, write_report

    for model, before in (("/models/llama-tiny", 0.5), ("/models/phi3-tiny", 0.25)):
        for task, name in (("rte", "first"), ("sst2", "second")):
            run = tmp_path / f"{model.rsplit('/', 1)[1]}-{name}-seed1"
            run.mkdir()
            (run / "summary.json").write_text(json.dumps({
                "mode": "train", "task": task, "model": model, "seed": 1, "estimator": "prge", "queries": 2,
                "parallel": "dual", "steps": 9, "dtype": "float32", "accuracy_before": before,
                "accuracy_best": before + 0.1,
                "accuracy_after": before + 0.1}))
            (run / "config.yaml").write_text(f"model: {{name: {model}}}\ndata: {{task: {task}}}\nrun: {{seed: 1}}\n")
    runs = collect(tmp_path)
    assert {r["variant"] for r in runs} == {"prge q=2 dual llama-tiny", "prge q=2 dual phi3-tiny"}
    markdown = write_report(runs, "t", tmp_path / "report", "models", figures=False)
    rows = {r["task"]: r for r in csv.DictReader(open(tmp_path / "report" / "models_by_task.csv"))}
    assert rows["rte"]["zero-shot llama-tiny"] == "0.500" and rows["rte"]["zero-shot phi3-tiny"] == "0.250"
    assert "| run | method | task | model |" in markdown
    # two models whose paths end alike are two models, named by their whole paths
    for run in runs:
        run["model"] = run["model"].replace("/models/llama-tiny", "/a/tiny").replace("/models/phi3-tiny", "/b/tiny")
    rows = {r["task"]: r for r in task_rows(runs)[1]}
    assert rows["rte"]["zero-shot /a/tiny"] == "0.500" and rows["rte"]["zero-shot /b/tiny"] == "0.250"
    # MODEL/TASK/METHOD folders: a method name the two models' runs share says which model
    for model in ("llama", "phi3"):
        for task in ("rte", "sst2"):
            run = tmp_path / "folders" / model / task / "prge-seed1"
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps({
                "mode": "train", "task": task, "model": f"/m/{model}", "seed": 1, "estimator": "prge", "queries": 2,
                "parallel": "dual", "steps": 9, "accuracy_best": 0.5}))
            (run / "config.yaml").write_text(f"model: {{name: /m/{model}}}\ndata: {{task: {task}}}\nrun: {{seed: 1}}\n")
    assert {r["variant"] for r in collect(tmp_path / "folders")} == {"prge llama", "prge phi3"}


def test_methods_across_tasks_are_named_by_what_their_runs_share(tmp_path):
    """A method whose runs carry the task in their folder (rte/prge-lr1, sst2/prge-lr1) is named by
    the folder name they share, never after one of its tasks; runs with nothing in common in
    their names are named by estimator, q and parallel mode; names stay unique ("(2)")."""
    from prge.reporting.collect import collect

    runs = (("rte/prge-lr1", "rte", 1), ("sst2/prge-lr1", "sst2", 1), ("rte/prge-lr2", "rte", 2),
            ("sst2/prge-lr2", "sst2", 2), ("rte/first", "rte", 3), ("sst2/second", "sst2", 3),
            ("rte/third", "rte", 4), ("sst2/fourth", "sst2", 4))
    for name, task, lr in runs:
        run = tmp_path / f"{name}-seed1"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"mode": "train", "task": task, "seed": 1, "estimator": "prge",
                                                      "queries": 4, "parallel": "dual", "accuracy_best": 0.5}))
        (run / "config.yaml").write_text(f"optimizer: {{lr: {lr}}}\ndata: {{task: {task}}}\nrun: {{seed: 1}}\n")
    variants = {r["run"]: r["variant"] for r in collect(tmp_path)}
    assert variants == {"rte/prge-lr1-seed1": "prge-lr1", "sst2/prge-lr1-seed1": "prge-lr1",
                        "rte/prge-lr2-seed1": "prge-lr2", "sst2/prge-lr2-seed1": "prge-lr2",
                        "rte/first-seed1": "prge q=4 dual", "sst2/second-seed1": "prge q=4 dual",
                        "rte/third-seed1": "prge q=4 dual (2)", "sst2/fourth-seed1": "prge q=4 dual (2)"}


def test_a_report_names_each_runs_primary_metric_and_leaves_out_what_has_none(tmp_path, capsys):
    """Generation runs (primary metric perplexity) get their own tables and figures beside the
    accuracy runs' (whose files keep their names); a summary without a best metric is listed as
    left out, not a KeyError; a run directory without a summary is named as not finished."""
    common = {"mode": "train", "seed": 1, "estimator": "prge", "queries": 4, "parallel": "dual", "steps": 5}
    runs = {"cls-seed1": {"task": "sst2", "accuracy_before": 0.5, "accuracy_best": 0.7, "accuracy_after": 0.6},
            "gen-seed1": {"task": "custom", "perplexity_before": 30.0, "perplexity_best": 20.0,
                          "perplexity_after": 21.0},
            "odd-seed1": {"task": "sst2"}}
    for name, fields in runs.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "summary.json").write_text(json.dumps({**common, **fields}))
    (tmp_path / "runs" / "stopped-seed1").mkdir()  # a run stopped before its last step
    (tmp_path / "runs" / "stopped-seed1" / "config.yaml").write_text("run: {seed: 1}\n")
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "Left out: 1 run(s) without a best metric (not training runs): odd-seed1" in out
    assert "Not in the tables: 1 run(s) without a summary.json (stopped, failed or still running): stopped-seed1" in out
    assert "## accuracy" in out and "## perplexity" in out and "| perplexity_before | best_mean |" in out
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"runs_methods.csv", "runs_accuracy_vs_forward_passes.png", "runs_perplexity_methods.csv",
            "runs_perplexity_vs_forward_passes.png", "runs_perplexity_loss_vs_step.png"} <= files
    rows = list(csv.DictReader(open(tmp_path / "report" / "runs_perplexity_methods.csv")))
    assert rows[0]["method"] == "gen" and float(rows[0]["best_mean"]) == 20.0


def test_tasks_line_up_however_their_data_is_found(tmp_path):
    """Runs whose configs differ in where their task's data is (data.data_dir) or in what makes a
    custom task (its files, template, label words) are one method across tasks; custom tasks are
    told apart by their training file; TASK/METHOD folders name the method by the folder."""
    from prge.reporting.collect import collect
    from prge.reporting.tables import write_report

    tasks = {"fine_food": "data: {task: fine_food}",
             "sst2": "data: {task: sst2, data_dir: /data/sst2}",
             "custom": "data: {task: custom, train_file: reviews.csv, template: '{text}'}"}
    for task, data in tasks.items():
        for q in (1, 4):
            run = tmp_path / "runs" / task / f"prge_q{q}-seed1"
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps({
                "mode": "train", "task": task, "seed": 1, "estimator": "prge", "queries": q, "parallel": "dual",
                "steps": 5, "accuracy_before": 0.5, "accuracy_best": 0.5 + q / 10, "accuracy_after": 0.5}))
            (run / "config.yaml").write_text(f"estimator: {{queries: {q}}}\n{data}\nrun: {{seed: 1}}\n")
    runs = collect(tmp_path / "runs")
    assert {r["variant"] for r in runs} == {"prge_q1", "prge_q4"}
    assert {r["task"] for r in runs} == {"fine_food", "sst2", "custom: reviews"}
    write_report(runs, "t", tmp_path / "report", "r", figures=False)
    rows = {r["task"]: r for r in csv.DictReader(open(tmp_path / "report" / "r_by_task.csv"))}
    assert rows["custom: reviews"]["prge_q4"] == "0.900 (1)" and rows["sst2"]["prge_q1"] == "0.600 (1)"
    assert rows["mean over tasks"]["prge_q4"] == "0.900 (3 tasks)"
    assert "task" in next(csv.DictReader(open(tmp_path / "report" / "r_runs.csv")))


def test_a_sweep_checks_every_run_before_the_first_trains(tmp_path, capsys):
    """A bad grid value (an unknown task, a device this torch lacks) fails the sweep before any
    run starts, naming the sweep's key; a speed sweep refuses a device prge does not run on the
    same way instead of failing inside its measurement."""
    model_dir, data_dir = make_tiny_assets(tmp_path)
    base = {"model": {"name": str(model_dir)}, "adapter": {"rank": 4, "alpha": 8},
            "data": {"task": "fine_food", "data_dir": str(data_dir), "train_examples": 8, "eval_examples": 4,
                     "batch_size": 2, "max_length": 16},
            "run": {"steps": 1, "eval_every": 0}}
    sweep = tmp_path / "bad_task.yaml"
    sweep.write_text(yaml.safe_dump({"base": base, "output_root": str(tmp_path / "runs"),
                                     "grid": {"data.task": ["fine_food", "Fine_Food"]}}))
    assert main(["sweep", str(sweep), "--no-progress"]) == 2
    err = capsys.readouterr().err
    line, text = next((i, t) for i, t in enumerate(sweep.read_text().splitlines(), 1) if "Fine_Food" in t)
    where = f"bad_task.yaml:{line}:{text.index('Fine_Food') + 1}: grid data.task: "  # the value's own place
    assert where in err and "unknown task 'Fine_Food'" in err and err.count("bad_task.yaml") == 1, err
    assert not (tmp_path / "runs").exists()  # the valid first run did not start either
    long = tmp_path / "too_long.yaml"  # the tiny model has max_position_embeddings 128
    long.write_text(yaml.safe_dump({"base": base, "output_root": str(tmp_path / "runs"),
                                    "grid": {"data.max_length": [16, 4096]}}))
    assert main(["sweep", str(long), "--no-progress"]) == 2
    err = capsys.readouterr().err
    line, text = next((i, t) for i, t in enumerate(long.read_text().splitlines(), 1) if "4096" in t)
    where = f"too_long.yaml:{line}:{text.index('4096') + 1}: grid data.max_length: 4096 exceeds"
    assert where in err and "max_position_embeddings 128" in err, err
    assert not (tmp_path / "runs").exists()
    other = tmp_path / "other_model"  # a model directory whose config.json the loader refuses
    other.mkdir()
    config_json = json.loads((model_dir / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config_json, "model_type": "foobar"}))
    for mode in ({}, {"mode": "speed", "speed": {"warmup": 1, "steps": 1}}):
        bad_model = tmp_path / "bad_model.yaml"
        bad_model.write_text(yaml.safe_dump({**mode, "base": base, "output_root": str(tmp_path / "runs"),
                                             "grid": {"model.name": [str(model_dir), str(other)]}}))
        assert main(["sweep", str(bad_model), "--no-progress"]) == 2
        err = capsys.readouterr().err
        line, text = next((i, t) for i, t in enumerate(bad_model.read_text().splitlines(), 1) if "other_model" in t)
        where = f"bad_model.yaml:{line}:{text.index(str(other)) + 1}: grid model.name: {other / 'config.json'}: "
        assert where in err and "model_type 'foobar' is not supported" in err, (mode, err)
        assert not (tmp_path / "runs").exists(), mode
    speed = tmp_path / "speed_device.yaml"
    speed.write_text(yaml.safe_dump({"mode": "speed", "speed": {"warmup": 1, "steps": 1, "shape": "tiny-debug"},
                                     "base": {"adapter": {"rank": 4, "alpha": 8}},
                                     "output_root": str(tmp_path / "speed_runs"),
                                     "grid": {"model.device": ["cpu", "mps"]}}))
    assert main(["sweep", str(speed)]) == 2
    err = capsys.readouterr().err
    line, text = next((i, t) for i, t in enumerate(speed.read_text().splitlines(), 1) if "mps" in t)
    where = f"speed_device.yaml:{line}:{text.index('mps') + 1}: grid model.device: "
    assert where in err and "prge runs on cpu and cuda devices" in err, err
    assert not (tmp_path / "speed_runs").exists()


@pytest.mark.parametrize("text, where, message", [
    ("base: {run: {steps: 2}}\noutput_root:\n", "2:1", "output_root: no value"),
    ("base: {run: {steps: 2}}\noutput_root: 5\n", "2:1", "output_root: expected a directory name, got 5"),
    ("base: {run: {steps: 2}}\ngrid: ~\n", "2:1", "grid: no value"),
    ("base: {run: {steps: 2}}\nvariants: [{name: ~, optimizer.lr: 0.1}]\n", "2:13",
     "variant 1: name: expected a name, got None"),
    ("base: {run: {steps: 2}}\noutput_root: ''\n", "2:1", "output_root: expected a directory name, got ''"),
    ("base: {run: {steps: 2}}\noutput_root: \"\\u00a0 \"\n", "2:1", "output_root: '\\u00a0 ' is only whitespace"),
    ("base: {run: {steps: 2}}\ngrid: [1]\n", "2:1", "grid: expected a mapping of keys, got [1]"),
    ("base: {run: {steps: 2}}\ngrid: {~: [1]}\n", "2:8", "grid: None is not a key"),
    ("base: {run: {steps: 2}}\nspeed: abc\n", "2:1", "speed: expected a mapping of keys"),
    ("base: {run: {steps: 2}}\nvariants: [{name: a, ~: 3}]\n", "2:22", "variant 1: None is not a key"),
    ("base: {run: {steps: 2}}\ngrid: {run.seed: [1]}\ngrid: {run.seed: [2]}\n", "3:1",
     "malformed YAML: duplicate key 'grid'"),
    ("base: {run: {steps: 2}}\nbogus: 1\n", "2:1", "unknown sweep key(s) 'bogus' (allowed: "),
    ("base: {run: {steps: 2}}\ngrid: {run.seed: []}\n", "2:8", "grid.run.seed must be a non-empty list"),
    ("base: {run: {steps: 2}}\ngrid: {\"a\\eb\": 1}\n", "2:8", "grid.a\\x1bb must be a non-empty list"),
    ("base: {run: {steps: 2}}\nspeed: {1: 2, a: 3}\n", "2:1", "unknown speed key(s) 1, 'a' (allowed: "),  # was a TypeError
])
def test_a_sweep_key_without_a_value_is_named(tmp_path, text, where, message):
    """A sweep's own keys, as a config's: null is no value (not the default, not a run named None);
    each error gives the key's line and column in the sweep file."""
    from prge.sweep import expand_sweep

    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="^" + re.escape(f"{path}:{where}: {message}")):
        expand_sweep(path)


def test_a_grid_or_variant_value_error_names_its_place_in_the_sweep_once(tmp_path, capsys):
    """A bad grid or variant value is placed at its own line and column in the sweep file (block
    or flow lists, inline or file base), named once, with the run it made; a --set value by its
    option."""
    (tmp_path / "base.yaml").write_text("run: {steps: 2}\n")
    cases = [
        ("base: base.yaml\ngrid:\n  optimizer.lr: [0.1, abc]\n", "3:23: grid optimizer.lr: expected a finite "
         "number, got 'abc' (run run-lrabc)"),
        ("base: {run: {steps: 2}}\ngrid:\n  optimizer.lr:\n    - 0.1\n    - abc\n",
         "5:7: grid optimizer.lr: expected a finite number, got 'abc' (run run-lrabc)"),
        ("base: base.yaml\nvariants:\n  - {name: a}\n  - {name: b, optimizer.lr: xyz}\n",
         "4:15: variant b: optimizer.lr: expected a finite number, got 'xyz' (run b)"),
        ("base: base.yaml\ngrid: {run.seed: [1, 2]}\nvariants:\n  - name: a\n    adapter: {rank: x}\n",
         "5:5: variant a: adapter: adapter.rank: expected an integer, got 'x' (run a-seed1)"),
    ]
    for text, wanted in cases:
        path = tmp_path / "s.yaml"
        path.write_text(text)
        assert main(["sweep", str(path), "--no-progress", "--output-root", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert err == f"prge: error: {path}:{wanted}\n", err
    path.write_text("base: base.yaml\ngrid: {run.seed: [1, 2]}\n")
    assert main(["sweep", str(path), "--no-progress", "--output-root", str(tmp_path / "runs"),
                 "--set", "optimizer.lr=zz"]) == 2
    err = capsys.readouterr().err
    assert err == f"prge: error: --set optimizer.lr: expected a finite number, got 'zz' (run run-seed1 of {path})\n", err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_refuses_a_run_output_dir_it_would_replace(tmp_path, capsys):
    """Each run of a sweep goes to output_root/<label>: a run.output_dir in the grid, a variant
    (as a key or in a run: mapping) or --set would be replaced without a word, so it is refused at
    its place, pointing to output_root; the base config's own run.output_dir is replaced as
    documented."""
    cases = [
        ("grid:\n  run.output_dir: [a, b]\n", [], "s.yaml:3:3: grid run.output_dir: a sweep puts"),
        ("variants:\n  - {name: x, run: {output_dir: q, seed: 3}}\n", [], "s.yaml:3:15: variant x: run.output_dir:"),
        ("variants:\n  - {name: x, run.output_dir: q}\n", [], "s.yaml:3:15: variant x: run.output_dir:"),
        ("", ["--set", "run.output_dir=zz"], "s.yaml: --set run.output_dir: a sweep puts"),
        ("", ["--set", "run={output_dir: zz}"], "s.yaml: --set run.output_dir: a sweep puts"),
    ]
    path = tmp_path / "s.yaml"
    for text, extra, wanted in cases:
        path.write_text("base: {run: {steps: 2, output_dir: mine}}\n" + text)
        assert main(["sweep", str(path), "--no-progress", "--output-root", str(tmp_path / "runs")] + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"prge: error: {tmp_path}/{wanted}") and "set the sweep's output_root" in err, err
        assert not (tmp_path / "runs").exists() and not (tmp_path / "zz").exists()
    from prge.sweep import expand_sweep

    path.write_text("base: {run: {steps: 2, output_dir: mine}}\ngrid: {run.seed: [1]}\n")
    [(label, config)] = expand_sweep(path, output_root=str(tmp_path / "runs"))
    assert config.run.output_dir == str(tmp_path / "runs" / label)


def test_a_sweep_refuses_settings_that_would_undo_its_grid_or_run_section(tmp_path, capsys):
    """--set of a key the grid varies (or of a section above it, which it replaces whole) would
    make the grid's runs one run; run: given a non-mapping (null left every run at the defaults);
    a variant name with whitespace around; a no-break space at a path's end in a grid value
    (PyYAML's text dropped it, so the path check never saw it): each refused at its place."""
    path = tmp_path / "s.yaml"
    cases = [
        ("grid: {run.seed: [1, 2]}\n", ["--set", "run.seed=3"],
         f"{path}: --set run.seed: the grid varies run.seed (2 values), which --set would replace in every run,"),
        ("grid: {run.seed: [1, 2]}\n", ["--set", "run={steps: 3}"], f"{path}: --set run: the grid varies run.seed "
         "(2 values), which --set would replace in every run (it replaces all of run)"),
        ("", ["--set", "run=null"], f"{path}: --set run: no value (null)"),
        ("", ["--set", "run=3"], f"{path}: --set run: expected a mapping of run keys (run.steps, ...), got 3"),
        ("variants: [{name: a, run: 5}]\n", [], f"{path}:2:22: variant a: run: expected a mapping of run keys"),
        ('variants: [{name: "a "}]\n', [], f"{path}:2:13: variant 1 is named 'a ', which starts or ends with"),
        ('variants: [{name: "a\\u00a0"}]\n', [], f"{path}:2:13: variant 1 is named 'a\\u00a0', which starts or"),
        ('variants: [{name: "a\\nb"}]\n', [], f"{path}:2:13: variant 1 is named 'a\\nb', which holds a control "),
        ("grid: {run: [{seed: 1}, {seed: 2}]}\n", ["--set", "run.seed=3"], f"{path}: --set run.seed: the grid "
         "varies run (2 values), which --set would replace in every run (a part of each value)"),
        ('grid: {model.name: ["m\\u00a0"]}\n', [], f"{path}:2:21: grid model.name: 'm\\u00a0' starts or "
         "ends with whitespace"),
    ]
    for text, extra, wanted in cases:
        path.write_text("base: {run: {steps: 2}}\n" + text)
        assert main(["check", str(path)] + extra) == 2, (text, extra)
        err = capsys.readouterr().err
        assert err.startswith(f"prge: error: {wanted}"), err
    path.write_text("base: {run: {steps: 2}}\ngrid: {run.seed: [1, 2], model.device: [cpu]}\n")
    assert main(["check", str(path), "--set", "run.steps=3", "--set", "model={device: cpu}"]) == 0  # not varied
    path.write_text("base: {run: {steps: 2}}\ngrid: {run: [{seed: 1}, {seed: 2}]}\n")
    assert main(["check", str(path), "--set", "run.steps=3"]) == 0  # in no grid value


def test_a_sweeps_strings_reach_the_reader_as_the_file_holds_them(tmp_path):
    """Grid and variant strings, nested in mappings too, with a no-break space, U+0085 or U+2028
    (PyYAML's text folded those into spaces, or dropped one at an end) or an emoji beside a line
    break (a JSON surrogate pair, which yaml-cpp refuses) reach the config reader unchanged; a
    run's directory name has _ for such characters and for spaces at its end, so two values that
    differ only there are refused as sharing a directory."""
    from prge.sweep import expand_sweep

    path = tmp_path / "s.yaml"
    base = ('base: {run: {steps: 2}, data: {task: custom, train_file: t.jsonl, eval_file: e.jsonl, '
            'template: "{text}", label_words: {pos: " p", neg: " n"}}}\n')
    path.write_text(base + 'grid:\n  data.template: ["Review : {text}\\nSentiment : \\U0001F600", "R: {text} S :\\_"]\n'
                    'variants:\n  - {name: nel, data.label_words: {pos: " positive\\N", neg: " negative\\_"}}\n'
                    '  - {name: ls, data.label_words: {pos: "\\Lpositive", neg: " negative"}}\n')
    runs = {label: config for label, config in expand_sweep(path)}
    assert sorted(runs) == sorted(["nel-templateReview : {text}_Sentiment : \U0001F600", "nel-templateR: {text} S :_",
                                   "ls-templateReview : {text}_Sentiment : \U0001F600", "ls-templateR: {text} S :_"])
    assert runs["nel-templateR: {text} S :_"].data.template == "R: {text} S :\u00a0"
    assert runs["ls-templateReview : {text}_Sentiment : \U0001F600"].data.template == "Review : {text}\nSentiment : \U0001F600"
    assert runs["nel-templateR: {text} S :_"].data.label_words == [("pos", " positive\x85"), ("neg", " negative\u00a0")]
    assert runs["ls-templateR: {text} S :_"].data.label_words == [("pos", "\u2028positive"), ("neg", " negative")]
    path.write_text(base + 'grid: {data.template: ["R: {text} S :\\_", "R: {text} S : "]}\n')
    with pytest.raises(ValueError, match="two runs would share the directory runs/s/run-templateR: {text} S :_"):
        expand_sweep(path)
    # Beside such a string, other scalars keep their YAML types (JSON has no .nan, no date, no
    # null or number keys); a grid key's own part gets the same _ as its values.
    import datetime
    from prge.overrides import value_text

    for value in [{"n": float("inf"), "s": "x\u00a0"}, {None: " neg\u00a0", 1: " pos"},
                  {"d": datetime.date(2024, 1, 1), "s": "a\u00a0", "l": ["b\u2028", 1e-5, True, None]}]:
        assert yaml.safe_load(value_text(value)) == value
    path.write_text(base + 'grid: {"data.label_words.\\"x\\ny\\"": [" q\\_"]}\n')
    assert [label for label, _ in expand_sweep(path)] == ["run-x_y q_"]
    path.write_text(base + 'grid: {data.label_words: [{0: " a", 1: " b"}, {0: " c", 1: " b"}]}\n')
    with pytest.raises(ValueError, match=r"--set data.label_words.0: the grid varies data.label_words \(2 values\)"):
        expand_sweep(path, [("data.label_words.0", "zz")])


def test_an_inline_base_error_gives_the_sweep_files_line(tmp_path):
    """A key of an inline base is placed at its line and column in the sweep file, block or flow."""
    from prge.sweep import expand_sweep

    path = tmp_path / "s.yaml"
    path.write_text("# a sweep\nbase:\n  run:\n    steps: 2\n  optimizer:\n    lr:\n")
    with pytest.raises(ValueError, match=f"{path}:6:5: optimizer.lr: no value"):
        expand_sweep(path)
    path.write_text("base: {run: {steps: 2, seed: x}}\n")
    with pytest.raises(ValueError, match=f"{path}:1:30: run.seed: expected a non-negative integer"):
        expand_sweep(path)


def test_a_sweep_reads_numbers_as_a_config_does(tmp_path):
    """YAML 1.2 in the grid as in the base: 017 is seventeen (not octal 15), 1e-3 a number."""
    from prge.sweep import expand_sweep

    path = tmp_path / "s.yaml"
    path.write_text("base: {run: {steps: 2, seed: 017}}\ngrid: {run.eval_every: [017], optimizer.lr: [1e-3]}\n")
    (_, config), = expand_sweep(path)
    assert (config.run.seed, config.run.eval_every, config.optimizer.lr) == (17, 17, 1e-3)


def test_a_report_without_matplotlib_says_how_to_get_it_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """matplotlib is an extra (prge[report]): without it the report stops before its first file,
    saying what to install or to pass --no-figures, which then writes the tables."""
    summary = {"mode": "train", "seed": 1, "estimator": "prge", "queries": 4, "parallel": "dual", "steps": 5,
               "task": "sst2", "accuracy_before": 0.5, "accuracy_best": 0.7, "accuracy_after": 0.6}
    (tmp_path / "runs" / "a-seed1").mkdir(parents=True)
    (tmp_path / "runs" / "a-seed1" / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 2
    assert ("prge: error: prge report draws its figures with matplotlib, which is not installed: pip install "
            "matplotlib (or prge[report]), or pass --no-figures") in capsys.readouterr().err
    assert not (tmp_path / "report").exists() or not any((tmp_path / "report").iterdir())
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--no-figures"]) == 0
    assert {p.suffix for p in (tmp_path / "report").iterdir()} == {".md", ".csv"}


def test_a_figures_count_axis_has_few_ticks_written_short():
    """Sequences forwarded reach 10^5-10^6: in a panel 3 inches wide the default ticks (100000,
    200000, ...) ran into each other; at most 5 ticks, in engineering notation (160k, 1.5M)."""
    from prge.reporting.figures import _count_axis, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3.2, 2.6))
    ax.plot([0, 320000, 640000], [0.5, 0.6, 0.7])
    _count_axis(ax.xaxis)
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.get_xticklabels() if 0 <= t.get_position()[0] <= 640000]
    plt.close(fig)
    assert 2 <= len(shown) <= 6 and "600k" in shown and all(len(t) <= 5 for t in shown), shown


@pytest.mark.parametrize("data,label", [
    ({"train_file": "reviews.csv"}, "custom: reviews"),
    ({"train_file": "my/reviews/train.jsonl"}, "custom: reviews"),  # a file named after its split: its folder
    ({"data_dir": "/d/reviews", "train_file": "train.jsonl"}, "custom: reviews"),
    ({"data_dir": "/d/my.reviews"}, "custom: my.reviews"),  # a folder's name whole
    ({"train_file": "train.jsonl"}, "custom: train"),  # nothing better to go by
    ({}, "custom"),
])
def test_a_custom_task_is_reported_under_its_datas_name(data, label):
    from prge.reporting.collect import task_label

    assert task_label({"task": "custom", "run_config": {"data": data}}) == label
    assert task_label({"task": "sst2", "run_config": {"data": data}}) == "sst2"


def test_two_custom_tasks_whose_files_share_a_name_are_reported_apart(tmp_path):
    """x/reviews/train.jsonl and y/reviews.jsonl are both "reviews": two tasks, two rows, never
    one mean over both."""
    from prge.reporting.collect import collect

    for name, train_file, accuracy in (("a", "x/reviews/train.jsonl", 0.9), ("b", "y/reviews.jsonl", 0.1)):
        run = tmp_path / "runs" / name / "prge_q4-seed1"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({
            "mode": "train", "task": "custom", "seed": 1, "estimator": "prge", "queries": 4, "parallel": "dual",
            "steps": 5, "accuracy_before": 0.5, "accuracy_best": accuracy, "accuracy_after": accuracy}))
        (run / "config.yaml").write_text(f"data: {{task: custom, train_file: {train_file}, template: '{{text}}'}}\n"
                                         "run: {seed: 1}\n")
    runs = collect(tmp_path / "runs")
    assert sorted(r["task"] for r in runs) == ["custom: reviews", "custom: reviews (2)"]


def test_a_report_cell_with_a_line_break_keeps_its_table_row_whole():
    """A run named after a grid value with a line break (a template "Q:\n{text}") or a '|' keeps
    its Markdown table row whole."""
    from prge.reporting.tables import _markdown

    assert _markdown(["run", "a|b"], [{"run": "x\ny|z", "a|b": 1.0}]) == [
        "| run | a\\|b |", "|---|---|", "| x<br>y\\|z | 1 |"]
