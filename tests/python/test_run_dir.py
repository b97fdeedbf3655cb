"""A run's directory holds one run: another run's files are refused unless --overwrite, a
finished run counts as finished only for the config it stores, and one process at a time
writes it (a lock)."""
import pytest
import yaml

from conftest import make_tiny_assets, write_config
from prge.cli import main
from prge.run_dir import claim


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
    assert "holds a finished run of other settings (first difference: -  lr: 0.01)" in err, err


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
