"""`data.task: custom`: a user's own files, described by the config alone, train end to end;
every mistake in the files is reported when they are read, naming key, file and record."""
import json
import re

import pytest
import yaml

from conftest import make_tiny_assets, write_config
from prge.cli import main

REVIEWS = [("good tasty great love good", "positive"), ("bad awful stale hate bad", "negative")]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def custom_config(tmp_path, model_dir, **data):
    base = {"task": "custom", "train_file": str(tmp_path / "train.jsonl"), "eval_file": str(tmp_path / "test.jsonl"),
            "template": "Review : {text} Sentiment :", "label_field": "sentiment",
            "label_words": {"positive": " positive", "negative": " negative"},
            "train_examples": 40, "eval_examples": 16}
    base.update(data)
    path = write_config(tmp_path, model_dir, tmp_path, data=base, run={"steps": 4, "eval_every": 0})
    tree = yaml.safe_load(path.read_text())
    tree["data"].pop("data_dir")
    tree["data"]["label_words"] = base["label_words"]  # in the order written, as a user's file has it
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.fixture
def assets(tmp_path):
    model_dir, _ = make_tiny_assets(tmp_path)
    rows = [{"text": REVIEWS[i % 2][0], "sentiment": REVIEWS[i % 2][1], "id": i} for i in range(24)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", rows[:8])
    return tmp_path, model_dir


def test_custom_classification_trains_from_config_alone(assets):
    tmp_path, model_dir = assets
    assert main(["train", str(custom_config(tmp_path, model_dir)), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "custom" and summary["steps"] == 4
    assert 0.0 <= summary["accuracy_after"] <= 1.0 and summary["majority_accuracy"] == 0.5


def test_custom_csv_tsv_and_generation(assets, capsys):
    tmp_path, model_dir = assets
    for name, sep in (("train.csv", ","), ("train.tsv", "\t")):
        (tmp_path / name).write_text(f"text{sep}answer\n" + "".join(
            f"{REVIEWS[i % 2][0]}{sep}{REVIEWS[i % 2][1]}\n" for i in range(12)))
    config = custom_config(tmp_path, model_dir, train_file=str(tmp_path / "train.csv"),
                           eval_file=str(tmp_path / "train.tsv"), label_words=None, label_field="label",
                           response_field="answer", eval_examples=6)
    assert main(["train", str(config), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["perplexity_after"] > 1.0 and "accuracy_after" not in summary
    # the closing line says what the summary holds: exact match and token F1 too
    out = capsys.readouterr().out
    assert f"-> {summary['exact_match_after']:.4f}, token F1 " in out and \
        f"-> {summary['token_f1_after']:.4f}; results in" in out, out
    history = summary["eval_history"]
    assert history[0]["eval_answer_nll"] > 0 and history[-1]["step"] == 4


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.write_text(""), "holds no records"),
    (lambda p: write_jsonl(p, [{"text": "good", "sentiment": "neutral"}]),
     "test.jsonl: record 1 (line 1): sentiment = 'neutral' is not one of data.label_words ('positive', 'negative')"),
    (lambda p: write_jsonl(p, [{"text": "good", "sentiment": "positive"}, {"sentiment": "negative"}]),
     "test.jsonl: record 2 (line 2) has no field 'text'"),
    (lambda p: write_jsonl(p, [{"sentiment": "positive", **{f"f{i}": "x" for i in range(29)}}]),  # names listed up to 20
     "test.jsonl: record 1 (line 1) has no field 'text' (it has: 'sentiment', 'f0', " + "'f1', 'f2', 'f3', 'f4', 'f5', "
     "'f6', 'f7', 'f8', 'f9', 'f10', 'f11', 'f12', 'f13', 'f14', 'f15', 'f16', 'f17', 'f18', ... and 10 more)\n"),
    (lambda p: p.write_text('{"text": "good", "sentiment": "positive"}\n{not json\n'), "test.jsonl:2: malformed JSON"),
    (lambda p: p.unlink(), "data.eval_file: "),
])
def test_bad_files_fail_at_load_time_naming_file_and_record(assets, capsys, mutate, message):
    tmp_path, model_dir = assets
    mutate(tmp_path / "test.jsonl")
    assert main(["train", str(custom_config(tmp_path, model_dir)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prge: error: ") and message in err, err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing ran


def test_template_placeholder_without_field_and_bad_template(assets, capsys):
    tmp_path, model_dir = assets
    assert main(["train", str(custom_config(tmp_path, model_dir, template="{title}: {text}")), "--no-progress"]) == 2
    assert "data.train_file: " in capsys.readouterr().err  # record 1 has no field 'title'
    assert main(["train", str(custom_config(tmp_path, model_dir, template="{text")), "--no-progress"]) == 2
    assert "data.template:" in capsys.readouterr().err
    for template in ("{text!z}", "{text:d}"):  # a conversion or format spec would fail (or format) mid-run
        assert main(["train", str(custom_config(tmp_path, model_dir, template=template)), "--no-progress"]) == 2
        assert f"prge: error: data.template: placeholder '{template}' in " in capsys.readouterr().err
    # a long placeholder name (a file's text pasted as the template) is shown escaped and cut
    assert main(["train", str(custom_config(tmp_path, model_dir, template="{\x1b" + "x" * 200 + "}")), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "has no field '\\x1b" + "x" * 79 + "...' (201 bytes) (it has: 'text', 'sentiment', 'id')" in err and "\x1b" not in err, err
    for template in ("{text.upper}", "{0}", "{text[0]}"):  # a lookup or a position, not a field name
        assert main(["train", str(custom_config(tmp_path, model_dir, template=template)), "--no-progress"]) == 2
        assert "a placeholder is a field name (spaces and dashes allowed" in capsys.readouterr().err
    # a CSV header with a space: its field is a placeholder as written
    (tmp_path / "spaced.csv").write_text("review text,sentiment\n" + "".join(
        f"{REVIEWS[i % 2][0]},{REVIEWS[i % 2][1]}\n" for i in range(8)))
    spaced = custom_config(tmp_path, model_dir, template="Review : {review text} Sentiment :",
                           train_file=str(tmp_path / "spaced.csv"), eval_file=str(tmp_path / "spaced.csv"))
    assert main(["train", str(spaced), "--no-progress", "--overwrite"]) == 0
    assert "data.train_file and data.eval_file are one file" in capsys.readouterr().err  # trains on what it scores
    # prompts that hold their own answer, or that are all one text, are refused before anything runs
    for data, message in (({"template": "Review : {text} {sentiment}"}, "writes {sentiment}, the field of the answer "
                           "(data.label_field): every prompt would show its own answer"),
                          ({"template": "Q : {text} A : {answer}", "label_words": None, "response_field": "answer"},
                           "writes {answer}, the field of the answer (data.response_field)"),
                          ({"template": "Review :"}, "has no {field} placeholder, so every example's prompt is the "
                           "same text"),
                          ({"template": "  \n"}, "has no {field} placeholder")):
        for command in ("check", "train"):
            assert main([command, str(custom_config(tmp_path, model_dir, **data))]) == 2
            err = capsys.readouterr().err
            assert err.startswith("prge: error: ") and message in err, err


def test_chat_template_wraps_the_prompt(assets):
    from prge._core import parse_run_config
    from prge.data.batching import PromptEncoder
    from prge.data.tasks import task_for
    from prge.data.tokens import ModelTokenizer

    tmp_path, model_dir = assets
    config = parse_run_config(custom_config(tmp_path, model_dir, chat_template=True).read_text())
    task = task_for(config.data)
    with pytest.raises(ValueError, match="no chat template"):
        PromptEncoder(task, ModelTokenizer(model_dir), 16)
    (model_dir / "chat_template.jinja").write_text(
        "<u>{{ messages[0]['content'] }}</u>{% if add_generation_prompt %}A:{% endif %}")
    encoder = PromptEncoder(task, ModelTokenizer(model_dir), 16)
    example = task.load("train")[0]
    assert encoder.prompt_text(example) == "<u>Review : good tasty great love good Sentiment :</u>A:"


def test_a_report_tells_custom_tasks_apart_by_their_data_not_by_its_spelling(assets, monkeypatch):
    """The summary records each split's path and content sha256: one file reached by a relative
    path from its folder and by its absolute path is one task (seeds of one method); another file
    under the same relative spelling, from another folder, is another task."""
    import hashlib

    from prge.reporting.collect import collect

    tmp_path, model_dir = assets
    other = tmp_path / "other"
    other.mkdir()
    rows = [{"text": REVIEWS[(i + 1) % 2][0], "sentiment": REVIEWS[i % 2][1], "id": i} for i in range(24)]
    write_jsonl(other / "train.jsonl", rows)
    write_jsonl(other / "test.jsonl", rows[:8])
    runs = tmp_path / "runs"
    for name, folder, spelled, seed in (("rel", tmp_path, "train.jsonl", 1), ("abs", other.parent, None, 2),
                                        ("other", other, "train.jsonl", 1)):
        monkeypatch.chdir(folder)
        train = spelled or str(tmp_path / "train.jsonl")
        config = custom_config(tmp_path, model_dir, train_file=train, eval_file=train.replace("train", "test"))
        tree = yaml.safe_load(config.read_text())
        tree["run"].update(seed=seed, output_dir=str(runs / name / f"prge-seed{seed}"))
        config.write_text(yaml.safe_dump(tree, sort_keys=False))
        assert main(["train", str(config), "--no-progress"]) == 0
    summary = json.loads((runs / "rel" / "prge-seed1" / "summary.json").read_text())
    digest = hashlib.sha256((tmp_path / "train.jsonl").read_bytes()).hexdigest()
    assert summary["data_files"]["train"] == {"path": str((tmp_path / "train.jsonl").resolve()), "sha256": digest}
    by_run = {r["run"].split("/")[0]: r for r in collect(runs)}
    # named after the files' folders (train.jsonl is named after its split), however the path was spelled
    assert by_run["rel"]["task"] == by_run["abs"]["task"] == f"custom: {tmp_path.name}"
    assert by_run["other"]["task"] == "custom: other"
    # a run from before summaries recorded data_files: filed by its config's path, and the report says so
    import shutil

    from prge.reporting.collect import data_files_note

    assert data_files_note(collect(runs)) is None
    older = runs / "older" / "prge-seed3"
    shutil.copytree(runs / "rel" / "prge-seed1", older)
    summary = json.loads((older / "summary.json").read_text())
    del summary["data_files"]
    (older / "summary.json").write_text(json.dumps(summary))
    assert "1 custom-task run(s) (older/prge-seed3) have summaries from before prge recorded data_files" in \
        data_files_note(collect(runs))
    shutil.rmtree(runs / "older")
    # a damaged data_files is named, not a traceback or a silent merge
    from prge.cli import main as cli

    damaged = runs / "other" / "prge-seed1" / "summary.json"
    for value in ({"train": "abc"}, {"train": {"path": "x", "sha256": None}}, ["x"]):
        damaged.write_text(json.dumps({**json.loads(damaged.read_text()), "data_files": value}))
        with pytest.raises(ValueError, match=rf"^{damaged}: data_files is not what prge writes"):
            collect(runs)
    assert cli(["report", str(runs), "--out", str(tmp_path / "report"), "--no-figures"]) == 2
    assert by_run["rel"]["method"] == by_run["abs"]["method"] != by_run["other"]["method"]


def test_a_sweep_refuses_a_finished_run_whose_data_file_changed_since(assets, capsys):
    """A finished custom-task run is skipped only while its files hold what it trained on: an
    edited training file makes the sweep name the run and the file, as a finished run of other
    settings is refused, and go on with its other runs; the file restored, the run is skipped
    again. A file moved away since leaves the run as it finished, with a note, and the sweep's
    preflight does not ask for it."""
    tmp_path, model_dir = assets
    base = custom_config(tmp_path, model_dir)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": base.name, "output_root": str(tmp_path / "s"),
                                     "grid": {"run.seed": [1, 2]}}))
    assert main(["sweep", str(sweep), "--no-progress", "--only", "*seed1"]) == 0
    original = (tmp_path / "train.jsonl").read_bytes()
    (tmp_path / "train.jsonl").write_bytes(original.replace(b'"id": 3}', b'"id": 33}'))
    capsys.readouterr()
    assert main(["sweep", str(sweep), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"holds a finished run on other data: its train file {(tmp_path / 'train.jsonl').resolve()} holds other " \
           "content now" in err and err.rstrip().endswith("1 of 2 runs failed (each error above): (1/2) run-seed1"), err
    assert (tmp_path / "s" / "run-seed2" / "summary.json").is_file()  # the sweep went on
    (tmp_path / "train.jsonl").write_bytes(original)
    assert main(["sweep", str(sweep), "--no-progress", "--only", "*seed1"]) == 0
    assert "seed1: finished earlier, skipping" in capsys.readouterr().out
    other = custom_config(tmp_path, model_dir, train_file=str(tmp_path / "moved.jsonl"))
    (tmp_path / "moved.jsonl").write_bytes(original)
    sweep.write_text(yaml.safe_dump({"base": other.name, "output_root": str(tmp_path / "m"),
                                     "grid": {"run.seed": [1]}}))
    assert main(["sweep", str(sweep), "--no-progress"]) == 0
    (tmp_path / "moved.jsonl").rename(tmp_path / "elsewhere.jsonl")
    capsys.readouterr()
    assert main(["sweep", str(sweep), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "seed1: finished earlier, skipping" in captured.out and "its train file is gone since it finished" in \
        captured.err, captured


def test_prge_check_finds_a_missing_data_file_or_folder_before_anything_trains(assets, capsys):
    """prge check, and a sweep before its first run, name a custom task's missing file and a
    missing data.data_dir with the config's file and line, as reading them would later."""
    tmp_path, model_dir = assets
    config = custom_config(tmp_path, model_dir, eval_file=str(tmp_path / "nope.jsonl"))
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"prge: error: {config}:" in err and f"data.eval_file: {tmp_path / 'nope.jsonl'} not found" in err, err
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": custom_config(tmp_path, model_dir).name,
                                     "output_root": str(tmp_path / "s"),
                                     "grid": {"data.train_file": [str(tmp_path / "train.jsonl"), "missing.jsonl"]}}))
    assert main(["sweep", str(sweep), "--no-progress"]) == 2
    assert "missing.jsonl not found" in capsys.readouterr().err and not (tmp_path / "s").exists()
    builtin = write_config(tmp_path, model_dir, tmp_path / "no-such-folder")
    assert main(["check", str(builtin)]) == 2
    assert f"data.data_dir: {tmp_path / 'no-such-folder'} not found" in capsys.readouterr().err


def test_prge_check_data_reads_and_tokenizes_the_splits_as_train_would(assets, capsys):
    """prge check --data: a record's mistake (a label outside label_words) is named as prge train
    names it, before any weight loads; clean files print their example counts; without --data
    the files are only looked for."""
    tmp_path, model_dir = assets
    config = custom_config(tmp_path, model_dir)
    assert main(["check", str(config), "--data"]) == 0
    assert "[prge] data: custom classification task from " in capsys.readouterr().err
    with open(tmp_path / "test.jsonl", "a") as f:
        f.write(json.dumps({"text": "fine", "sentiment": "neutral"}) + "\n")
    assert main(["check", str(config)]) == 0
    capsys.readouterr()
    assert main(["check", str(config), "--data"]) == 2
    checked = capsys.readouterr().err
    assert main(["train", str(config), "--no-progress"]) == 2
    trained = capsys.readouterr().err
    assert "test.jsonl: record 9 (line 9)" in checked and "neutral" in checked, checked
    assert checked.splitlines()[-1] == trained.splitlines()[-1], (checked, trained)
    assert not (tmp_path / "run").exists()
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": config.name, "output_root": str(tmp_path / "s"),
                                     "grid": {"run.seed": [1, 2]}}))
    assert main(["check", str(sweep), "--data"]) == 2
    assert f"prge: error: --data with a sweep file ({sweep})" in capsys.readouterr().err


def test_prge_check_data_refuses_what_train_refuses_after_reading_the_data(assets, capsys):
    """Limits that need the read examples: data.batch_size beyond the training examples (the
    sampler draws a batch without replacement), and a label word that leaves the prompt no room
    in data.max_length, which is named (every example has it; the record is only the first).
    prge check --data and prge train refuse each in the same words, and nothing is written."""
    tmp_path, model_dir = assets
    long_word = " positive" * 20
    for data, wanted in (({"batch_size": 30}, r"data\.batch_size: 30 exceeds the 24 training examples of custom"),
                         ({"label_words": {"positive": long_word, "negative": " negative"}},
                          r"leaves no room for the prompt beside its 20-token answer, label word ' positive")):
        config = custom_config(tmp_path, model_dir, **data)
        assert main(["check", str(config), "--data"]) == 2
        checked = capsys.readouterr().err.strip().splitlines()[-1]
        assert main(["train", str(config), "--no-progress"]) == 2
        assert re.search(wanted, checked) and capsys.readouterr().err.strip().splitlines()[-1] == checked, checked
        assert not (tmp_path / "run").exists()


def test_a_data_directory_that_is_not_a_saved_dataset_or_lacks_the_split_names_its_key(assets, capsys):
    """data.train_file naming a plain directory, or a datasets.save_to_disk directory without a
    training split: the key to fix is named (not datasets' own message, not data.data_dir)."""
    from installed import installed_module

    datasets = installed_module("datasets", "pip install datasets")
    tmp_path, model_dir = assets
    (tmp_path / "plain").mkdir()
    config = custom_config(tmp_path, model_dir, train_file=str(tmp_path / "plain"))
    assert main(["train", str(config), "--no-progress"]) == 2
    assert f"prge: error: data.train_file: {tmp_path / 'plain'} is a directory but not one datasets.save_to_disk " \
           "writes" in capsys.readouterr().err
    rows = [{"text": REVIEWS[i % 2][0], "sentiment": REVIEWS[i % 2][1]} for i in range(8)]
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    config = custom_config(tmp_path, model_dir, train_file=str(tmp_path / "saved"))
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"prge: error: data.train_file: {tmp_path / 'saved'}: no 'train' split" in err and \
        "point data.train_file at a file or a directory with one" in err, err


def test_a_label_word_glued_to_the_template_is_warned_about():
    """'Sentiment:' + 'positive' reads '...:positive' (MeZO's words start with a space): said at
    the word's place; a word with its space, a template ending in a placeholder or whitespace,
    and chat prompts (the template ends the turn) say nothing."""
    import prge

    def warnings(template, words, chat=False):
        text = yaml.safe_dump({"data": {"task": "custom", "train_file": "a", "eval_file": "b", "template": template,
                                        "label_field": "s", "label_words": words, "chat_template": chat}})
        return prge.parse_run_config(text, "c.yaml").warnings

    glued = warnings("Review: {text} Sentiment:", {"p": "positive", "n": "negative"})
    assert len(glued) == 1 and "data.label_words.n: 'negative' follows the template's last character ':' without a " \
        "space, so the model reads '...:negative'" in glued[0]  # the first word (safe_dump sorts the keys)
    assert warnings("Review: {text} Sentiment:", {"p": " positive", "n": " negative"}) == []
    assert warnings("Review: {text}", {"p": "positive", "n": "negative"}) == []
    assert warnings("Review: {text} Sentiment:\n", {"p": "positive", "n": "negative"}) == []
    assert warnings("Review: {text} Sentiment:", {"p": "positive", "n": "negative"}, chat=True) == []
    assert warnings("评论：{text}\n情感：", {"p": "正面", "n": "负面"}) == []  # written without spaces
    assert warnings("Review: {text} Sentiment:", {"p": "正面", "n": "负面"}) == []


def test_a_template_ending_in_a_space_before_spaced_answers_is_warned_about():
    """'Sentiment: ' + ' positive' reads '...:  positive', and a multiple-choice candidate is
    appended after a space of its own: said at data.template; a template without the space,
    answers without one, and chat prompts say nothing."""
    import prge

    def warnings(template, **answers):
        data = {"task": "custom", "train_file": "a", "eval_file": "b", "template": template, "label_field": "s"}
        text = yaml.safe_dump({"data": {**data, **answers}})
        return prge.parse_run_config(text, "c.yaml").warnings

    doubled = warnings("Review: {text} Sentiment: ", label_words={"p": " positive", "n": " negative"})
    assert len(doubled) == 1 and "data.template: ends in whitespace and label word ' negative' starts with " \
        "whitespace, so the model reads whitespace twice before the answer" in doubled[0], doubled
    choices = warnings("Question: {q} Answer: ", choices_field="options")
    assert len(choices) == 1 and "each multiple-choice candidate is appended after a space" in choices[0], choices
    assert warnings("Review: {text} Sentiment:", label_words={"p": " positive", "n": " negative"}) == []
    assert warnings("Review: {text} Sentiment: ", label_words={"p": "positive", "n": "negative"}) == []
    assert warnings("Question: {q} Answer:", choices_field="options") == []
    assert warnings("Question: {q} Answer: ", choices_field="options", chat_template=True) == []


def test_train_from_validation_needs_no_training_file_and_says_one_is_not_read(assets, capsys):
    """A custom task with only an evaluation file trains on a seeded part of it under
    data.train_from: validation: no data.train_file is asked for; one given (required before, so
    every such stored run has one) is not read, said in a warning naming its place, and not
    written back, so the stored run and the config without it are one run (a sweep resumes it);
    the summary records the file training really used, and a report files the run under that
    file's name, old summaries (which recorded the unread file too) with the new ones."""
    from prge.reporting.collect import task_label, task_source
    from prge.run_dir import finished

    tmp_path, model_dir = assets
    folder = tmp_path / "reviews"
    folder.mkdir()
    rows = [{"text": REVIEWS[i % 2][0], "sentiment": REVIEWS[i % 2][1]} for i in range(12)]
    write_jsonl(folder / "validation.jsonl", rows)
    write_jsonl(tmp_path / "train.jsonl", [{"not": "read"}])  # would be refused if it were read
    given = custom_config(tmp_path, model_dir, eval_file=str(folder / "validation.jsonl"), train_from="validation",
                          train_examples=6)
    assert main(["check", str(given)]) == 0
    assert "prge: warning: " in capsys.readouterr().err
    assert main(["train", str(given), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "6 train / 0 dev / 6 eval examples" in captured.out
    assert "data.train_file: is not read with data.train_from: validation, which trains on a seeded part of " \
           "data.eval_file's records and evaluates the rest" in captured.err, captured.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["data_files"]) == {"eval"}
    assert summary["data_files"]["eval"]["path"] == str(folder / "validation.jsonl")
    assert task_label(summary) == "custom: reviews"
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert "train_file" not in written and written["train_from"] == "validation"
    tree = yaml.safe_load(given.read_text())
    tree["data"].pop("train_file")
    without = tmp_path / "without.yaml"
    without.write_text(yaml.safe_dump(tree, sort_keys=False))
    assert finished(tmp_path / "run", without.read_text()) and finished(tmp_path / "run", given.read_text())
    # a run stored before: its config.yaml names the training file, its summary recorded it
    stored = (tmp_path / "run" / "config.yaml").read_text()
    (tmp_path / "run" / "config.yaml").write_text(stored.replace("  eval_file:", f"  train_file: {tmp_path / 'train.jsonl'}"
                                                                 "\n  eval_file:"))
    assert finished(tmp_path / "run", without.read_text())
    summary["run_config"] = yaml.safe_load(stored)  # as a report reads it (collect.read_run_config)
    old = {**summary, "data_files": {**summary["data_files"], "train": {"path": "/x/train.jsonl", "sha256": "0" * 64}}}
    assert task_source(old) == task_source(summary)
    # without the key, the missing training file is asked for
    tree["data"]["train_from"] = "train"
    without.write_text(yaml.safe_dump(tree, sort_keys=False))
    assert main(["check", str(without)]) == 2
    assert "task: custom needs data.train_file" in capsys.readouterr().err


def test_one_single_split_dataset_as_both_files_is_noted_like_one_file(assets, capsys):
    """A datasets.Dataset directory (one split) named as train_file and eval_file is read whole
    for both: the run scores what it trains on, said as for one file; a DatasetDict's train and
    validation splits are apart (no note), and a damaged directory names its key."""
    from installed import installed_module

    datasets = installed_module("datasets", "pip install datasets")
    tmp_path, model_dir = assets
    rows = [{"text": REVIEWS[i % 2][0], "sentiment": REVIEWS[i % 2][1]} for i in range(8)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "validation": datasets.Dataset.from_list(rows[:4])}).save_to_disk(str(tmp_path / "dict"))
    for name, noted in (("single", True), ("dict", False)):
        config = custom_config(tmp_path, model_dir, train_file=str(tmp_path / name), eval_file=str(tmp_path / name))
        assert main(["train", str(config), "--no-progress", "--overwrite"]) == 0
        err = capsys.readouterr().err
        assert ("data.train_file and data.eval_file are one dataset" in err) == noted, err
    (tmp_path / "dict" / "dataset_dict.json").write_text("{not json")
    config = custom_config(tmp_path, model_dir, train_file=str(tmp_path / "dict"), eval_file=str(tmp_path / "single"))
    assert main(["train", str(config), "--no-progress", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prge: error: data.train_file: {tmp_path / 'dict'}: not a readable datasets.save_to_disk "
                          "directory ("), err


def test_a_label_that_differs_from_a_key_only_in_unicode_normalisation_is_named_so():
    """'café' typed as e + combining accent (NFD) and the config's precomposed 'café' (NFC) look
    alike in a message: refused (the tokenizer reads them apart) with how the two differ."""
    import unicodedata
    from types import SimpleNamespace

    from prge.data.custom import label_index

    data = SimpleNamespace(label_field="label", label_words=[("café", " yes"), ("thé", " no")])
    assert label_index("café", data, "r1") == 0
    with pytest.raises(ValueError) as raised:
        label_index(unicodedata.normalize("NFD", "café"), data, "r1")
    assert str(raised.value).endswith(
        "is not one of data.label_words ('café', 'thé'); it is 'café' written with other code points (Unicode "
        "normalisation: NFD here, NFC in the config), two different texts: write both alike"), raised.value
    with pytest.raises(ValueError, match=r"is not one of data.label_words \('café', 'thé'\)$"):
        label_index("tea", data, "r1")


def test_an_evaluation_file_sorted_by_label_and_cut_by_eval_examples_is_warned_about(assets, capsys):
    """The paper protocol evaluates the first data.eval_examples records unshuffled: of a file
    sorted by label they may hold one class only, whose accuracy would then look like the
    model's. Warned, naming the missing label word; all records, or every class among them, say
    nothing."""
    tmp_path, model_dir = assets
    rows = [{"text": REVIEWS[i // 4][0], "sentiment": REVIEWS[i // 4][1]} for i in range(8)]  # 4 positive, 4 negative
    write_jsonl(tmp_path / "sorted.jsonl", rows)
    for eval_examples, warned in ((4, True), (5, False), (8, False)):
        config = custom_config(tmp_path, model_dir, eval_file=str(tmp_path / "sorted.jsonl"),
                               eval_examples=eval_examples)
        assert main(["train", str(config), "--no-progress", "--overwrite"]) == 0
        err = capsys.readouterr().err
        assert ("prge: warning: data.eval_examples=4 evaluates the first 4 of the 8 records of the evaluation split "
                "(the paper protocol does not shuffle it), and they hold no example of label word(s) ' negative', "
                "which the split has" in err) == warned, err


def test_evaluation_examples_that_are_also_training_examples_are_noted(assets, capsys):
    """A record in both files (the same prompt and answer) is scored by fitting: counted in a
    note; evaluation records the run never trains on say nothing."""
    tmp_path, model_dir = assets  # train.jsonl: the two reviews over and over
    write_jsonl(tmp_path / "shared.jsonl", [{"text": "good tasty great love good", "sentiment": "positive"},
                                            {"text": "good good good", "sentiment": "positive"},
                                            {"text": "stale awful bad", "sentiment": "negative"}])
    write_jsonl(tmp_path / "apart.jsonl", [{"text": "good good good", "sentiment": "positive"},
                                           {"text": "stale awful bad", "sentiment": "negative"}])
    for name, note in (("shared", "[prge] note: 1 of the 3 evaluation examples are also training examples of this run "
                                  "(the same prompt and answer)"), ("apart", None)):
        config = custom_config(tmp_path, model_dir, eval_file=str(tmp_path / f"{name}.jsonl"))
        assert main(["train", str(config), "--no-progress", "--overwrite"]) == 0
        err = capsys.readouterr().err
        assert (note in err) if note else "also training examples" not in err, err
