"""A run's directory holds one run: another run's files are refused unless --overwrite, a
finished run counts as finished only for the config it stores, and one process at a time
writes it (a lock)."""
import pytest
import yaml

from conftest import make_tiny_assets, write_config
from prge.cli import main
from prge.run_dir import FAILED_FILE, claim, failure_of, mark_failed


@pytest.fixture
def run_config(tmp_path):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    return tmp_path, write_config(tmp_path, model_dir, data_dir, run={"steps": 2, "eval_every": 0})


def test_another_runs_files_are_refused_unless_overwrite(run_config, capsys):
    tmp_path, config = run_config
    assert main(["train", str(config), "--no-progress"]) == 0
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds another run (summary.json, metrics.jsonl, trained.safetensors, config.yaml)" in err
    assert "--overwrite" in err
    assert main(["train", str(config), "--no-progress", "--overwrite"]) == 0
    (tmp_path / "afile").write_text("")
    assert main(["train", str(config), "--no-progress", "--set", f"run.output_dir={tmp_path / 'afile'}"]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_overwrite_removes_the_old_summary_before_anything_else(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("")
    with claim(tmp_path, "new: config\n", overwrite=True):
        assert not (tmp_path / "summary.json").exists()  # a kill now leaves no finished mark
        assert (tmp_path / "config.yaml").read_text() == "new: config\n"


def test_a_failure_mark_is_left_only_in_a_runs_own_directory_and_gone_once_it_runs_again(tmp_path):
    mark_failed(tmp_path / "new" / "run", "train split: a.csv:3: 2 fields\nsecond line")
    assert failure_of(tmp_path / "new" / "run") == "train split: a.csv:3: 2 fields"
    with claim(tmp_path / "new" / "run", "a: config\n"):  # no --overwrite needed for the mark alone
        assert failure_of(tmp_path / "new" / "run") is None
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "summary.json").write_text("{}")
    for kept in ("mine", "done"):  # files prge did not write, a finished run: left as they are
        mark_failed(tmp_path / kept, "why")
        assert not (tmp_path / kept / FAILED_FILE).exists()


def test_a_refused_claim_leaves_nothing_behind(run_config, capsys):
    """A refused command creates nothing: --resume of a directory that holds no run leaves neither
    the directories it would have made nor a lock file (which `prge adapters export --out` would
    then count as content), and a refused claim keeps a sweep's failure mark."""
    tmp_path, config = run_config
    assert main(["train", str(config), "--no-progress", "--resume", "--set",
                 f"run.output_dir={tmp_path / 'new' / 'run'}"]) == 2
    assert "no run to resume" in capsys.readouterr().err and not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert main(["train", str(config), "--no-progress", "--resume", "--set",
                 f"run.output_dir={tmp_path / 'empty'}"]) == 2
    assert list((tmp_path / "empty").iterdir()) == []
    mark_failed(tmp_path / "failed", "why")
    (tmp_path / "failed" / "mine.txt").write_text("the user's")
    with pytest.raises(ValueError, match="holds files prge did not write"):
        with claim(tmp_path / "failed", "a: config\n"):
            pass
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == [FAILED_FILE, "mine.txt"]


def test_a_locked_directory_is_refused_and_a_sweep_leaves_it(run_config, capsys):
    tmp_path, config = run_config
    with claim(tmp_path / "run", "x: 1\n"):
        assert main(["train", str(config), "--no-progress"]) == 2
        assert "another prge process is writing" in capsys.readouterr().err
        sweep = tmp_path / "sweep.yaml"
        sweep.write_text(yaml.safe_dump({"base": config.name, "output_root": str(tmp_path / "s"),
                                         "variants": [{"name": "a"}, {"name": "b", "estimator.queries": 1}]}))
        with claim(tmp_path / "s" / "a", "x: 1\n"):
            assert main(["sweep", str(sweep)]) == 0
        out = capsys.readouterr().out
        assert "a: another process is running it, skipping" in out and (tmp_path / "s" / "b" / "summary.json").is_file()


def test_a_sweep_rerun_with_other_settings_is_refused_naming_the_difference(run_config, capsys):
    tmp_path, config = run_config
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": config.name, "output_root": str(tmp_path / "s"),
                                     "variants": [{"name": "a"}]}))
    assert main(["sweep", str(sweep)]) == 0
    assert main(["sweep", str(sweep)]) == 0  # same settings: skipped
    assert "finished earlier, skipping" in capsys.readouterr().out
    assert main(["sweep", str(sweep), "--set", "optimizer.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run of other settings (first difference: optimizer.lr: 0.01 in the run there, 0.5 now)" in err, err
    # a stored config.yaml this version refuses is named as such (not by a line that differs as text)
    stored = tmp_path / "s" / "a" / "config.yaml"
    stored.write_text(stored.read_text().replace("optimizer:\n", "optimizer:\n  nesterov: true\n"))
    assert main(["sweep", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run whose config.yaml this version does not read (" in err and "nesterov" in err, err


def test_a_run_stored_before_rng_auto_is_the_same_run_on_its_device(tmp_path):
    """estimator.rng defaults to auto (counter on CUDA, torch elsewhere): a finished CPU run
    whose config.yaml says rng: torch is this version's default run, one saying counter is not."""
    import prge
    from prge.run_dir import RunDirError, finished

    config = prge.parse_run_config("run: {steps: 1}\n", "test.yaml")
    assert "  rng: auto\n" in config.to_yaml()
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "config.yaml").write_text(config.to_yaml().replace("rng: auto", "rng: torch"))
    assert finished(tmp_path, config.to_yaml())
    (tmp_path / "config.yaml").write_text(config.to_yaml().replace("rng: auto", "rng: counter"))
    with pytest.raises(RunDirError, match="rng: counter"):
        finished(tmp_path, config.to_yaml())


def test_a_path_spelled_another_way_is_the_same_run(tmp_path):
    """"./adapter" and "adapter/" name the directory "adapter" names: --resume and a sweep take
    the run stored under one spelling as the same run (it was "another setting"); another
    directory is still another run."""
    import prge
    from prge.run_dir import RunDirError, finished

    def config(init_from, model):
        return prge.parse_run_config(f"model: {{name: {model}}}\nadapter: {{init_from: {init_from}}}\n",
                                     "test.yaml").to_yaml()

    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "config.yaml").write_text(config("./adapter", "models/../models/tiny"))
    assert finished(tmp_path, config("adapter/", "models/tiny"))
    with pytest.raises(RunDirError, match="init_from"):
        finished(tmp_path, config("other_adapter", "models/tiny"))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_mezo_run_with_rng_auto_is_the_run_of_the_generator_auto_resolves_to(tmp_path, device):
    """For MeZO, auto resolves to counter on CUDA in a CUDA build (its kernels draw the noise) and
    to torch elsewhere; the run directory check and the config's own comment agree with that."""
    import prge
    from prge.run_dir import RunDirError, finished

    config = prge.parse_run_config(f"model: {{device: {device}}}\nestimator: {{kind: mezo, parallel: sequential}}\n"
                                   "run: {steps: 1}\n")
    resolved = "counter" if device == "cuda" and prge.cuda_built else "torch"
    other = {"counter": "torch", "torch": "counter"}[resolved]
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "config.yaml").write_text(config.to_yaml().replace("rng: auto", f"rng: {resolved}"))
    assert finished(tmp_path, config.to_yaml())
    (tmp_path / "config.yaml").write_text(config.to_yaml().replace("rng: auto", f"rng: {other}"))
    with pytest.raises(RunDirError, match=f"rng: {other}"):
        finished(tmp_path, config.to_yaml())
    assert f"# {resolved} on {device}" in config.to_yaml(True)
    assert ("(this build has no CUDA kernels)" in config.to_yaml(True)) == (device == "cuda" and not prge.cuda_built)


# Issue 24: outputs never clobber. Every command that writes a directory refuses one holding
# something it did not write there (unless --overwrite) and never writes where it reads its model.
@pytest.fixture(scope="module")
def a_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clobber")
    model_dir, data_dir = make_tiny_assets(tmp)
    config = write_config(tmp, model_dir, data_dir, run={"steps": 2, "eval_every": 0})
    assert main(["train", str(config), "--no-progress"]) == 0
    return tmp, model_dir, config, tmp / "run"


def _tree(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# (name, argv from (tmp, model_dir, config, run), a file put in the target first, what the error says)
CLOBBER_CASES = [
    ("train into the model directory", lambda t, m, c, r: ["train", str(c), "--set", f"run.output_dir={m}"],
     None, "run.output_dir: {m} is the model directory {m}, which this command reads"),
    ("train inside the model directory", lambda t, m, c, r: ["train", str(c), "--set", f"run.output_dir={m}/runs/a"],
     None, "run.output_dir: {m}/runs/a lies inside the model directory {m}"),
    ("train into a directory with a user's file", lambda t, m, c, r: ["train", str(c), "--set",
                                                                       f"run.output_dir={t}/mine"],
     "mine/notes.txt", "run.output_dir: {t}/mine holds files prge did not write there (notes.txt)"),
    ("adapters export into the run directory", lambda t, m, c, r: ["adapters", "export", str(r), "--out", str(r)],
     None, "--out: {r} is the run directory it exports from"),
    ("adapters export into the model directory",
     lambda t, m, c, r: ["adapters", "export", str(r), "--out", str(m)], None,
     "--out: {m} is the run's model directory {m}"),
    ("adapters export over another export", lambda t, m, c, r: ["adapters", "export", str(r), "--out", f"{t}/peft"],
     "peft/adapter_model.safetensors", "--out: {t}/peft is not empty (adapter_model.safetensors)"),
    ("--merge into the model directory",
     lambda t, m, c, r: ["adapters", "export", str(r), "--merge", "--out", str(m)], None,
     "--out: {m} is the run's model directory {m}"),
    ("--merge into a directory of shards", lambda t, m, c, r: ["adapters", "export", str(r), "--merge", "--out",
                                                               f"{t}/merged"],
     "merged/model-00001-of-00002.safetensors", "--out: {t}/merged is not empty (model-00001-of-00002.safetensors)"),
    ("export into the model directory", lambda t, m, c, r: ["export", str(c), "--runtime", "onnx", "--out", str(m)],
     None, "--out: {m} is the model directory {m}"),
    ("export into a directory with a user's file",
     lambda t, m, c, r: ["export", str(c), "--runtime", "onnx", "--out", f"{t}/onnx"],
     "onnx/notes.txt", "--out: {t}/onnx is not empty (notes.txt)"),
]


@pytest.mark.parametrize("name, argv, present, message", CLOBBER_CASES, ids=[c[0] for c in CLOBBER_CASES])
def test_no_command_writes_over_what_it_did_not_write_or_reads(a_run, capsys, name, argv, present, message):
    tmp, model_dir, config, run = a_run
    if present:
        (tmp / present).parent.mkdir(parents=True, exist_ok=True)
        (tmp / present).write_text("theirs")
    model_before, run_before = _tree(model_dir), _tree(run)
    args = argv(tmp, model_dir, config, run)
    assert main(args + (["--no-progress"] if args[0] == "train" else [])) == 2
    err = capsys.readouterr().err
    expected = message.format(t=tmp, m=model_dir, r=run)
    assert err.startswith("prge: error: ") and expected in err, (expected, err)
    assert _tree(model_dir) == model_before and _tree(run) == run_before  # nothing written
    if present:
        assert (tmp / present).read_text() == "theirs"


def test_overwrite_leaves_exactly_one_set_of_weights_and_the_users_files(a_run):
    tmp, model_dir, config, run = a_run
    stale = tmp / "stale"
    stale.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                 "pytorch_model.bin", "adapter_config.json", "adapter_model.safetensors", "README.md"):
        (stale / name).write_text("old")
    assert main(["adapters", "export", str(run), "--merge", "--out", str(stale), "--overwrite"]) == 0
    weights = sorted(p.name for p in stale.iterdir() if p.suffix in (".safetensors", ".bin") or "index" in p.name
                     or p.name.startswith("adapter_"))
    assert weights == ["model.safetensors"]
    assert (stale / "README.md").read_text() == "old"  # not prge's to delete
    assert main(["adapters", "export", str(run), "--out", str(stale), "--overwrite"]) == 0  # an adapter replaces it
    assert not (stale / "model.safetensors").exists() and (stale / "adapter_model.safetensors").is_file()
    mine = tmp / "mine2"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["train", str(config), "--no-progress", "--overwrite", "--set", f"run.output_dir={mine}"]) == 0
    assert (mine / "notes.txt").read_text() == "mine" and (mine / "summary.json").is_file()


def test_exporting_what_is_no_finished_run_says_what_it_is(run_config, capsys):
    """`prge adapters export` of a path that is not there or not a directory says so; of an
    unfinished run whose run.output_dir is relative (and so names another directory from here),
    the --resume hint says where to run it from."""
    tmp_path, config = run_config
    for path, what in ((tmp_path / "absent", "not found"), (config, "not a directory")):
        assert main(["adapters", "export", str(path), "--out", str(tmp_path / "peft")]) == 2
        assert f"prge: error: {path}: {what} (a run directory of `prge train`" in capsys.readouterr().err
    run = tmp_path / "moved"
    (run / "checkpoint-1").mkdir(parents=True)
    tree = yaml.safe_load(config.read_text())
    tree["run"]["output_dir"] = "runs/a"  # relative to where it was started
    (run / "config.yaml").write_text(yaml.safe_dump(tree))
    assert main(["adapters", "export", str(run), "--out", str(tmp_path / "peft")]) == 2
    assert (f"finish it with `prge train {run / 'config.yaml'} --resume` from the directory it was started in "
            "(its run.output_dir, runs/a, is relative to it)") in capsys.readouterr().err
    assert not (tmp_path / "peft").exists()


def test_a_setting_that_differs_in_a_no_break_space_is_shown_escaped():
    """'finished run of other settings' names the first difference; a no-break space there was
    printed as it is, so the two values looked the same."""
    from prge.run_dir import first_difference

    stored = 'data:\n  label_words:\n    great: " positive"\n'
    assert (first_difference(stored, stored.replace(" positive", "\u00a0positive"))
            == 'data.label_words.great: " positive" in the run there, "\\u00a0positive" now')


def test_a_setting_holding_a_line_separator_is_one_setting_in_the_difference():
    """to_yaml writes U+2028 (and \\x1c, U+0085) as they are; str.splitlines broke the line there,
    so the difference named an empty key and cut the values."""
    from prge.run_dir import first_difference

    stored = 'data:\n  template: "Review:\u2028{x}"\n  label_field: l\n'
    assert (first_difference(stored, stored.replace("{x}", "{y}"))
            == 'data.template: "Review:\\u2028{x}" in the run there, "Review:\\u2028{y}" now')


def test_normalized_drops_the_storage_setting_after_a_value_holding_a_line_separator():
    """normalized() leaves out run.checkpoint_format line by line; splitlines() broke a line at a
    U+2028 in run.output_dir, so the checkpoint format after it stayed and two runs differing only
    in it were told apart."""
    import prge
    from prge.run_dir import normalized

    stored = prge.parse_run_config('adapter: null\nestimator: {kind: mezo, parallel: sequential}\n'
                                   'run: {output_dir: "out\u2028x", checkpoint_format: updates}\n').to_yaml()
    assert normalized(stored) == normalized(stored.replace("checkpoint_format: updates", "checkpoint_format: weights"))
