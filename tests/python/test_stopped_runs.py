"""experiments/device/stopped_runs.py: a sweep run stopped by a call's end travels to the next
machine with its checkpoint and resumes there to the uninterrupted result; runs too large, finished
or without a checkpoint stay behind; a folder already there wins; a bad archive is named."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from conftest import load_script, make_tiny_assets, write_config
from prge.cli import main
from test_resume import child, records

@pytest.fixture(scope="module")
def stopped_runs():
    return load_script("experiments/device/stopped_runs.py")


def sweep_file(tmp_path: Path, model_dir: Path, data_dir: Path, root: Path) -> Path:
    base = write_config(tmp_path, model_dir, data_dir, optimizer={"lr": 5e-2},
                        run={"steps": 8, "eval_every": 4, "log_every": 1, "checkpoint_every": 2})
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": base.name, "output_root": str(root), "grid": {"run.seed": [1]},
                                     "variants": [{"name": "prge"}]}))
    return sweep


def test_a_stopped_run_resumes_on_the_next_machine_to_the_uninterrupted_result(stopped_runs, tmp_path):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    root = tmp_path / "machine" / "paper"
    sweep = sweep_file(tmp_path, model_dir, data_dir, root)
    done = child(["sweep", str(sweep), "--no-progress"], sig="SIGINT", kill_at=5)  # a call's end: stop, checkpoint
    assert done.returncode == 2 and "resumes this run" in done.stderr, done.stderr
    run = root / "prge-seed1"
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 5
    archive = tmp_path / "out" / "paper_stopped.tgz"
    assert stopped_runs.main(["pack", str(root), str(archive)]) == 0
    names = tarfile.open(archive).getnames()
    assert "paper/prge-seed1/checkpoint.json" in names
    assert "paper/prge-seed1/checkpoint-5/checkpoint.safetensors" in names
    assert not any("checkpoint-4" in n or "summary" in n for n in names)
    # The machine is given back; the next one has none of it until the archive is unpacked.
    (tmp_path / "machine").rename(tmp_path / "given_back")
    assert stopped_runs.main(["unpack", str(archive), str(root)]) == 0
    assert main(["sweep", str(sweep), "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_after_step"] == 5
    # The same sweep uninterrupted, into another root: the same weights and records, bit for bit.
    reference_root = tmp_path / "reference" / "paper"
    reference = sweep_file(tmp_path, model_dir, data_dir, reference_root)
    assert main(["sweep", str(reference), "--no-progress"]) == 0
    ours, theirs = (load_file(str(d / "prge-seed1" / "trained.safetensors")) for d in (root, reference_root))
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    assert records(run) == records(reference_root / "prge-seed1")
    # Finished now: nothing to pack, and no file written.
    assert stopped_runs.main(["pack", str(root), str(tmp_path / "out" / "again.tgz")]) == 0
    assert not (tmp_path / "out" / "again.tgz").exists()


def fake_run(root: Path, name: str, step: int, checkpoint_bytes: int, finished: bool = False) -> Path:
    run = root / name
    (run / f"checkpoint-{step}").mkdir(parents=True)
    (run / f"checkpoint-{step - 2}").mkdir()  # an older checkpoint: never packed
    (run / f"checkpoint-{step - 2}" / "checkpoint.safetensors").write_bytes(b"old")
    (run / f"checkpoint-{step}" / "checkpoint.safetensors").write_bytes(b"b" * checkpoint_bytes)
    (run / f"checkpoint-{step}" / "state.json").write_text("{}")
    (run / "checkpoint.json").write_text(json.dumps({"step": step, "directory": f"checkpoint-{step}"}))
    (run / "config.yaml").write_text(f"name: {name}\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    root.joinpath(f"{name}.log").write_text(f"log of {name}\n")
    if finished:
        (run / "summary.json").write_text("{}")
    return run


def test_only_stopped_runs_that_fit_are_packed_and_a_folder_already_there_wins(stopped_runs, tmp_path, capsys):
    root = tmp_path / "paper"
    fake_run(root, "lora_fa_q1-taskrte-seed42", 4, 1000)
    fake_run(root, "mezo-taskcopa-seed42", 4, 3 << 20)       # a full-parameter checkpoint: too large
    fake_run(root, "prge_q4_dual-tasksst2-seed42", 6, 1000, finished=True)
    (root / "no_pointer").mkdir()
    (root / "no_pointer" / "config.yaml").write_text("x")
    archive = tmp_path / "stopped.tgz"
    assert stopped_runs.main(["pack", str(root), str(archive), "--max-mib", "1"]) == 0
    out = capsys.readouterr().out
    assert "packed into" in out and "lora_fa_q1-taskrte-seed42" in out.split("\n")[0]
    assert "left behind (over 1 MiB" in out and "mezo-taskcopa-seed42 (3.0 MiB)" in out
    assert sorted(tarfile.open(archive).getnames()) == sorted(
        f"paper/{p}" for p in ["lora_fa_q1-taskrte-seed42.log", "lora_fa_q1-taskrte-seed42/config.yaml",
                               "lora_fa_q1-taskrte-seed42/metrics.jsonl", "lora_fa_q1-taskrte-seed42/checkpoint.json",
                               "lora_fa_q1-taskrte-seed42/checkpoint-4/checkpoint.safetensors",
                               "lora_fa_q1-taskrte-seed42/checkpoint-4/state.json"])
    warm = tmp_path / "warm" / "paper"  # the run is there already, further on: left as it is
    (warm / "lora_fa_q1-taskrte-seed42").mkdir(parents=True)
    (warm / "lora_fa_q1-taskrte-seed42" / "checkpoint.json").write_text('{"step": 9}')
    assert stopped_runs.main(["unpack", str(archive), str(warm)]) == 0
    assert "resuming none; already here: lora_fa_q1-taskrte-seed42" in capsys.readouterr().out
    assert json.loads((warm / "lora_fa_q1-taskrte-seed42" / "checkpoint.json").read_text())["step"] == 9
    cold = tmp_path / "cold" / "paper"
    assert stopped_runs.main(["unpack", str(archive), str(cold)]) == 0
    assert (cold / "lora_fa_q1-taskrte-seed42" / "checkpoint-4" / "checkpoint.safetensors").read_bytes() == b"b" * 1000
    assert (cold / "lora_fa_q1-taskrte-seed42.log").read_text() == "log of lora_fa_q1-taskrte-seed42\n"
    assert sorted(p.name for p in cold.parent.iterdir()) == ["paper"]  # no temporary folder left


def archive_of(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


def test_bad_archives_and_arguments_are_named_before_anything_moves(stopped_runs, tmp_path, capsys):
    root = tmp_path / "dest" / "paper"  # not there yet: a refused archive must not leave it behind
    whole = ["paper/a/config.yaml", "paper/a/checkpoint.json"]
    for names, message in [(["paper/../../escaped"], "member 'paper/../../escaped' is not a file under paper/RUN/"),
                           (["paper_gemma/run/config.yaml"], "not a file under paper/RUN/"),  # another model's
                           (["paper/stray"], "member 'paper/stray' is not a file"),
                           (["paper/./config.yaml"], "member 'paper/./config.yaml' is not a file"),
                           (whole + ["paper/zz.log"], "run 'zz' comes without its config.yaml and checkpoint.json"),
                           (whole + ["paper/b/config.yaml"], "run 'b' comes without its checkpoint.json")]:
        bad = archive_of(tmp_path / "bad.tgz", names)
        assert stopped_runs.main(["unpack", str(bad), str(root)]) == 2, names
        assert message in capsys.readouterr().err, names
        assert not root.exists() and (not root.parent.exists() or not any(root.parent.iterdir()))
    assert not (tmp_path.parent / "escaped").exists()
    # A damaged checkpoint byte, or the archive's tail cut: the gzip checksum or length tells.
    source = tmp_path / "src" / "paper"
    fake_run(source, "lora_fa_q1-taskrte-seed42", 4, 200_000)
    good = tmp_path / "good.tgz"
    assert stopped_runs.main(["pack", str(source), str(good)]) == 0
    data = good.read_bytes()
    for name, damaged_bytes in [("flipped", data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF])
                                 + data[len(data) // 2 + 1:]), ("cut", data[:-20])]:
        damaged = tmp_path / f"{name}.tgz"
        damaged.write_bytes(damaged_bytes)
        assert stopped_runs.main(["unpack", str(damaged), str(root)]) == 2, name
        assert f"stopped_runs: error: {damaged}" in capsys.readouterr().err
        assert not root.exists()
    damaged = tmp_path / "damaged.tgz"
    damaged.write_bytes(b"\x1f\x8b\x08\x00not gzip at all")
    assert stopped_runs.main(["unpack", str(damaged), str(root)]) == 2
    assert f"stopped_runs: error: {damaged}" in capsys.readouterr().err
    assert stopped_runs.main(["unpack", str(tmp_path / "none.tgz"), str(root)]) == 2
    assert "none.tgz: no such archive" in capsys.readouterr().err
    assert stopped_runs.main(["pack", str(tmp_path / "nowhere"), str(tmp_path / "o.tgz")]) == 2
    assert "no such folder of runs" in capsys.readouterr().err
    root.mkdir(parents=True, exist_ok=True)
    for bad in ("0", "inf", "nan"):
        assert stopped_runs.main(["pack", str(root), str(tmp_path / "o.tgz"), "--max-mib", bad]) == 2
        assert "--max-mib" in capsys.readouterr().err


def test_pack_leaves_runs_it_cannot_carry_and_no_stale_or_partial_archive(stopped_runs, tmp_path):
    root = tmp_path / "paper"
    dots = fake_run(root, "dots", 4, 10)
    (dots / "checkpoint.json").write_text('{"step": 4, "directory": ".."}')  # would pack all of root
    linked = fake_run(root, "linked", 4, 10)
    (linked / "checkpoint-4" / "state.json").unlink()
    (linked / "checkpoint-4" / "state.json").symlink_to(tmp_path / "elsewhere.json")
    archive = tmp_path / "out" / "paper_stopped.tgz"
    archive.parent.mkdir()
    archive.write_bytes(b"an earlier call's")
    assert stopped_runs.main(["pack", str(root), str(archive)]) == 0
    assert not archive.exists() and sorted(p.name for p in archive.parent.iterdir()) == []


def test_keep_runs_keeps_the_latest_calls_stopped_runs_for_the_next_session(stopped_runs, tmp_path, capsys):
    keep_runs = load_script("experiments/device/keep_runs.py")
    carried = tmp_path / ".device" / "stopped"
    archive = tmp_path / "out7" / "paper_accuracy_stopped.tgz"
    fake_run(tmp_path / "machine" / "paper_accuracy", "lora_fa_q1-taskrte-seed42", 4, 100)
    assert stopped_runs.main(["pack", str(tmp_path / "machine" / "paper_accuracy"), str(archive)]) == 0
    keep_runs.keep_stopped_runs(archive, carried)
    assert (carried / archive.name).read_bytes() == archive.read_bytes() and "carry" in capsys.readouterr().out
    cut = tmp_path / "out7b" / archive.name  # a damaged one is refused, the kept one stays
    cut.parent.mkdir()
    cut.write_bytes(archive.read_bytes()[:-20])
    with pytest.raises(keep_runs.KeepError, match="stopped runs not kept: .*damaged or cut short"):
        keep_runs.keep_stopped_runs(cut, carried)
    assert (carried / archive.name).read_bytes() == archive.read_bytes()
    keep_runs.keep_stopped_runs(tmp_path / "out8" / "paper_accuracy_stopped.tgz", carried)  # none came back
    assert not (carried / archive.name).exists() and "removed the earlier" in capsys.readouterr().out


def test_the_furthest_on_goes_first_when_not_all_fit(stopped_runs, tmp_path, capsys):
    root = tmp_path / "paper"
    fake_run(root, "a-early", 4, 600_000)
    fake_run(root, "b-later", 4000, 600_000)
    archive = tmp_path / "s.tgz"
    assert stopped_runs.main(["pack", str(root), str(archive), "--max-mib", "1"]) == 0
    assert "packed into" in capsys.readouterr().out
    assert {Path(n).parts[1] for n in tarfile.open(archive).getnames()} == {"b-later", "b-later.log"}


def test_a_stopped_mezo_run_travels_as_its_updates_and_is_the_same_run_as_under_weights(stopped_runs, tmp_path):
    """run.checkpoint_format: updates (the paper sweep's MeZO): a MeZO run stopped by a call's end
    travels as its steps' projected gradients (no weights) and resumes on the next machine, by
    replay, to the run checkpointing weights; runs that differ only in how their checkpoints are
    stored are one run to a sweep and one method to a report."""
    from prge.reporting.collect import collect

    model_dir, data_dir = make_tiny_assets(tmp_path)

    def mezo_sweep(root: Path, fmt: str) -> Path:
        sweep = sweep_file(tmp_path, model_dir, data_dir, root)
        spec = yaml.safe_load(sweep.read_text())
        spec["variants"] = [{"name": "mezo", "estimator.kind": "mezo", "estimator.parallel": "sequential",
                             "estimator.epsilon": 1.0e-3, "optimizer.lr": 2.0e-3, "run.checkpoint_format": fmt}]
        path = tmp_path / f"sweep-{fmt}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    root = tmp_path / "machine" / "paper"
    sweep = mezo_sweep(root, "updates")
    done = child(["sweep", str(sweep), "--no-progress"], sig="SIGINT", kill_at=5)
    assert done.returncode == 2 and "resumes this run" in done.stderr, done.stderr
    archive = tmp_path / "out" / "paper_stopped.tgz"
    assert stopped_runs.main(["pack", str(root), str(archive)]) == 0
    names = tarfile.open(archive).getnames()
    assert "paper/mezo-seed1/checkpoint-5/state.json" in names and not any(n.endswith(".safetensors") for n in names)
    assert archive.stat().st_size < 64 << 10
    (tmp_path / "machine").rename(tmp_path / "given_back")
    assert stopped_runs.main(["unpack", str(archive), str(root)]) == 0
    assert main(["sweep", str(sweep), "--no-progress"]) == 0
    run = root / "mezo-seed1"
    assert json.loads((run / "summary.json").read_text())["resumed_after_step"] == 5
    reference_root = tmp_path / "reference" / "paper"
    assert main(["sweep", str(mezo_sweep(reference_root, "weights")), "--no-progress"]) == 0
    ours, theirs = (load_file(str(d / "mezo-seed1" / "trained.safetensors")) for d in (root, reference_root))
    assert all((ours[k] == theirs[k]).all() for k in ours) and records(run) == records(reference_root / "mezo-seed1")
    # the run finished under weights is the run the updates sweep asks for: skipped, not refused or run again
    before = (reference_root / "mezo-seed1" / "summary.json").read_text()
    assert main(["sweep", str(mezo_sweep(reference_root, "updates")), "--no-progress"]) == 0
    assert (reference_root / "mezo-seed1" / "summary.json").read_text() == before
    (tmp_path / "both").mkdir()
    for name, source in (("a", root), ("b", reference_root)):
        (source / "mezo-seed1").rename(tmp_path / "both" / name)
    a, b = collect(tmp_path / "both")  # one method: b repeats a's seed
    assert a["method"] == b["method"] and b["repeats"] == "a" and "repeats" not in a


def test_a_run_stopped_under_weights_goes_on_checkpointing_weights_under_a_sweep_of_updates(tmp_path, capsys):
    """A MeZO run stopped with a weights checkpoint (before its sweep said updates) resumes, with
    a note, and goes on checkpointing weights: the same numbers either way, and the sweep's other
    runs still run."""
    model_dir, data_dir = make_tiny_assets(tmp_path)
    root = tmp_path / "paper"

    def mezo_sweep(fmt: str) -> Path:
        sweep = sweep_file(tmp_path, model_dir, data_dir, root)
        spec = yaml.safe_load(sweep.read_text())
        spec["grid"] = {"run.seed": [1, 2]}
        spec["variants"] = [{"name": "mezo", "estimator.kind": "mezo", "estimator.parallel": "sequential",
                             "estimator.epsilon": 1.0e-3, "optimizer.lr": 2.0e-3, "run.checkpoint_format": fmt}]
        path = tmp_path / f"sweep-{fmt}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    done = child(["sweep", str(mezo_sweep("weights")), "--no-progress"], sig="SIGINT", kill_at=5)
    assert done.returncode == 2 and (root / "mezo-seed1" / "checkpoint-5" / "checkpoint.safetensors").is_file()
    capsys.readouterr()
    assert main(["sweep", str(mezo_sweep("updates")), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "the checkpoint at step 5 holds the weights, not every step's update" in out.out + out.err
    assert all((root / f"mezo-seed{s}" / "summary.json").is_file() for s in (1, 2))
    reference = tmp_path / "reference"
    config = yaml.safe_load((root / "mezo-seed1" / "config.yaml").read_text())
    config["run"]["output_dir"] = str(reference)
    (tmp_path / "reference.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "reference.yaml"), "--no-progress"]) == 0
    assert records(root / "mezo-seed1") == records(reference)
