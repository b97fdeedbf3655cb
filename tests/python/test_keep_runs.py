"""experiments/device/keep_runs.py: what a device call sends back is kept only when it is a whole
finished run of the paper sweep as the device expands it; everything else is refused by name, and
the kept archive packs to the same bytes from the same runs."""
from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "experiments/results/paper_accuracy/runs.tgz"


def load_keep_runs(tmp_path: Path, monkeypatch):
    module = load_script("experiments/device/keep_runs.py")
    # Write into the test's folder, never into the repository's results.
    monkeypatch.setattr(module, "ROOT", tmp_path)
    return module


def kept_archive(tmp_path: Path, name: str = "paper_accuracy") -> Path:
    return tmp_path / "experiments/results" / name / "runs.tgz"


def one_committed_run(method: str = "") -> dict[str, bytes]:
    """Member name (under paper_accuracy/) -> bytes of the first finished run in the committed
    archive (of `method`, where given)."""
    with tarfile.open(COMMITTED) as tar:
        names = tar.getnames()
        run = sorted(n.split("/")[1] for n in names if n.endswith("/summary.json")
                     and n.split("/")[1].startswith(method))[0]
        files = {}
        for name in names:
            tail = name.split("/", 1)[1] if "/" in name else ""
            if tail.startswith(run + "/") or tail == run + ".log":
                member = tar.getmember(name)
                if member.isfile():
                    files[tail] = tar.extractfile(member).read()
    return files


def make_archive(path: Path, files: dict[str, bytes], folder: str = "paper_accuracy") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def run_main(module, monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["keep_runs.py", *map(str, args)])
    return module.main()


def test_a_finished_run_is_kept_and_everything_else_refused_by_name(tmp_path, monkeypatch, capsys):
    keep = load_keep_runs(tmp_path, monkeypatch)
    good = one_committed_run()
    run = next(iter(good)).split("/")[0]
    config = good[f"{run}/config.yaml"].decode()
    other = "lora_fa_q1-taskcopa-seed2025" if not run.startswith("lora_fa_q1-taskcopa") else "mezo-taskcopa-seed2025"
    files = dict(good)
    # a smoke run of another sweep run's name: the same files with three steps
    smoke_config = config.replace("steps: 5000", "steps: 3").replace("steps: 1000", "steps: 3")
    assert smoke_config != config
    files.update({f"{other}/{k.split('/', 1)[1]}": v for k, v in good.items() if "/" in k})
    files[f"{other}/config.yaml"] = smoke_config.replace(run, other).encode()
    files["damaged-run/config.yaml"] = b"x"  # not a run of the sweep at all
    files["damaged-run/summary.json"] = b""
    files["mezo-taskrte-seed2025/config.yaml"] = b"stopped part-way: no summary.json"
    archive = make_archive(tmp_path / "device.tgz", files)

    assert run_main(keep, monkeypatch, archive, "--no-report") == 1  # something was refused
    out, err = capsys.readouterr()
    assert f"1 finished runs taken from {archive}" in out
    assert "not kept, stopped part-way (1): mezo-taskrte-seed2025" in out
    assert f"keep_runs: refused {other}: other settings than the sweep's" in err
    assert "keep_runs: refused damaged-run: no run of paper_accuracy.yaml is named damaged-run" in err
    with tarfile.open(kept_archive(tmp_path)) as tar:
        kept = {n for n in tar.getnames()}
    assert f"paper_accuracy/{run}/summary.json" in kept and f"paper_accuracy/{run}.log" in kept
    assert not any(other in n or "damaged" in n or "mezo-taskrte-seed2025" in n for n in kept)
    summary = json.loads((tmp_path / "runs/device/paper_accuracy" / run / "summary.json").read_text())
    assert summary == json.loads(good[f"{run}/summary.json"])


def test_the_same_runs_pack_to_the_same_bytes(tmp_path, monkeypatch):
    keep = load_keep_runs(tmp_path, monkeypatch)
    archive = make_archive(tmp_path / "device.tgz", one_committed_run())
    assert run_main(keep, monkeypatch, archive, "--no-report") == 0
    first = kept_archive(tmp_path).read_bytes()
    assert run_main(keep, monkeypatch, archive, "--no-report") == 0  # the run again, over its kept copy
    assert kept_archive(tmp_path).read_bytes() == first


def test_an_unreadable_archive_is_an_error_naming_it(tmp_path, monkeypatch, capsys):
    keep = load_keep_runs(tmp_path, monkeypatch)
    bad = tmp_path / "truncated.tgz"
    bad.write_bytes(COMMITTED.read_bytes()[:300])
    assert run_main(keep, monkeypatch, bad, "--no-report") == 2
    assert f"keep_runs: error: {bad}: not a readable .tgz of runs" in capsys.readouterr().err
    assert not kept_archive(tmp_path).exists()
    elsewhere = tmp_path / "elsewhere.tgz"
    with tarfile.open(elsewhere, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("other/file"), io.BytesIO(b""))
    assert run_main(keep, monkeypatch, elsewhere, "--no-report") == 2
    assert "holds no paper_accuracy/ folder of runs" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["summary", "metrics"])
def test_a_run_whose_files_do_not_read_is_refused(tmp_path, monkeypatch, capsys, damage):
    keep = load_keep_runs(tmp_path, monkeypatch)
    files = one_committed_run()
    run = next(iter(files)).split("/")[0]
    target = f"{run}/summary.json" if damage == "summary" else f"{run}/metrics.jsonl"
    files[target] = b"{not json"
    assert run_main(keep, monkeypatch, make_archive(tmp_path / "device.tgz", files), "--no-report") == 1
    err = capsys.readouterr().err
    assert f"keep_runs: refused {run}:" in err
    with tarfile.open(kept_archive(tmp_path)) as tar:
        assert not any(run in n for n in tar.getnames())


def test_another_models_runs_are_kept_apart_and_must_be_that_models(tmp_path, monkeypatch, capsys):
    # --model gemma3-270m: the device packs its runs as paper_accuracy_gemma3-270m/; a SmolLM2 run
    # put there is refused by its model.name, and nothing lands in SmolLM2's archive.
    keep = load_keep_runs(tmp_path, monkeypatch)
    good = one_committed_run()
    run = next(iter(good)).split("/")[0]
    name = "paper_accuracy_gemma3-270m"
    smollm2_run = make_archive(tmp_path / "device.tgz", good, folder=name)
    assert run_main(keep, monkeypatch, smollm2_run, "--model", "gemma3-270m", "--no-report") == 1
    err = capsys.readouterr().err
    first_difference = ('(first difference: model.name: "/tmp/prge-cache/models/smollm2-135m" in the run there, '
                        '"/tmp/prge-cache/models/gemma3-270m" now)')
    assert f"keep_runs: refused {run}: other settings than the sweep's {first_difference}" in err
    assert not kept_archive(tmp_path).exists()
    gemma = {k: v.replace(b"/tmp/prge-cache/models/smollm2-135m", b"/tmp/prge-cache/models/gemma3-270m")
              .replace(b"/tmp/runs/paper_accuracy/", f"/tmp/runs/{name}/".encode()) for k, v in good.items()}
    assert gemma != good
    archive = make_archive(tmp_path / "gemma.tgz", gemma, folder=name)
    assert run_main(keep, monkeypatch, archive, "--model", "gemma3-270m", "--no-report") == 0
    with tarfile.open(kept_archive(tmp_path, name)) as tar:
        assert f"{name}/{run}/summary.json" in tar.getnames()
    assert not kept_archive(tmp_path).exists()
    assert run_main(keep, monkeypatch, archive, "--model", "llama-9b", "--no-report") == 2
    assert "keep_runs: error: --model llama-9b: not a registered model" in capsys.readouterr().err


def test_the_report_title_names_the_cards_the_runs_name(tmp_path, monkeypatch):
    keep = load_keep_runs(tmp_path, monkeypatch)
    for run, card in [("a", "NVIDIA H200"), ("b", "NVIDIA H100 80GB HBM3"), ("c", "NVIDIA H200"), ("d", None)]:
        (tmp_path / run).mkdir()
        summary = {"steps": 1} | ({"device_name": card} if card else {})
        (tmp_path / run / "summary.json").write_text(json.dumps(summary))
    assert keep.cards(tmp_path) == "on NVIDIA H100 80GB HBM3 and NVIDIA H200 (card not recorded for 1 run)"
    (tmp_path / "e").mkdir()
    (tmp_path / "e/summary.json").write_text(json.dumps({"steps": 1}))
    assert keep.cards(tmp_path).endswith("(card not recorded for 2 runs)")
    (tmp_path / "e/summary.json").unlink()
    (tmp_path / "d/summary.json").write_text(json.dumps({"steps": 1, "device_name": "cpu"}))
    (tmp_path / "b/summary.json").unlink()
    assert keep.cards(tmp_path) == "on NVIDIA H200 and cpu"
    for run in "acd":
        (tmp_path / run / "summary.json").write_text("{}")
    assert keep.cards(tmp_path) == "card not recorded"


def test_runs_at_another_step_count_are_kept_apart(tmp_path, monkeypatch, capsys):
    # STEPS=20000 on the device: the zeroth-order runs with run.steps 20000 under
    # paper_accuracy_steps20000/; a run of the protocol's 5000 steps is refused there by its steps,
    # and FO-SGD is no run of such a sweep.
    keep = load_keep_runs(tmp_path, monkeypatch)
    good = one_committed_run("prge_q4_dual-")
    run = next(iter(good)).split("/")[0]
    name = "paper_accuracy_steps20000"
    assert run_main(keep, monkeypatch, "--print-name", "--steps", "20000") == 0
    assert capsys.readouterr().out.strip() == name
    assert run_main(keep, monkeypatch, "--print-name", "--steps", "20000", "--model", "gemma3-270m") == 0
    assert capsys.readouterr().out.strip() == f"{name}_gemma3-270m"
    short = make_archive(tmp_path / "short.tgz", good, folder=name)
    assert run_main(keep, monkeypatch, short, "--steps", "20000", "--no-report") == 1
    assert f"keep_runs: refused {run}: other settings than the sweep's (first difference: run.steps" in \
        capsys.readouterr().err
    long = {k: v.replace(b"steps: 5000", b"steps: 20000")
            .replace(b"/tmp/runs/paper_accuracy/", f"/tmp/runs/{name}/".encode()) for k, v in good.items()}
    assert long[f"{run}/config.yaml"] != good[f"{run}/config.yaml"]
    assert run_main(keep, monkeypatch, make_archive(tmp_path / "long.tgz", long, folder=name), "--steps", "20000",
                    "--no-report") == 0
    out = capsys.readouterr().out
    assert f"1 finished runs taken from {tmp_path / 'long.tgz'}; 1 of 132 kept in" in out  # 4 methods x 11 x 3
    with tarfile.open(kept_archive(tmp_path, name)) as tar:
        assert f"{name}/{run}/summary.json" in tar.getnames()
    assert not kept_archive(tmp_path).exists()
    first_order = one_committed_run("fo_sgd_lora_fa-")
    fo_run = next(iter(first_order)).split("/")[0]
    fo_long = {k: v.replace(b"steps: 1000", b"steps: 20000")
               .replace(b"/tmp/runs/paper_accuracy/", f"/tmp/runs/{name}/".encode()) for k, v in first_order.items()}
    assert run_main(keep, monkeypatch, make_archive(tmp_path / "fo.tgz", fo_long, folder=name), "--steps", "20000",
                    "--no-report") == 1
    assert f"keep_runs: refused {fo_run}: no run of paper_accuracy.yaml is named {fo_run}" in capsys.readouterr().err
    assert run_main(keep, monkeypatch, "--print-name", "--steps", "0") == 2
    assert "keep_runs: error: --steps 0: not a positive step count" in capsys.readouterr().err


def test_tasks_narrow_the_runs_kept_and_counted(tmp_path, monkeypatch, capsys):
    # --tasks sst2 rte (TASKS on the device): a run of another task is refused by its task, and the
    # count (and the report's title) is of those tasks' runs: 4 methods x 2 tasks x 3 seeds.
    keep = load_keep_runs(tmp_path, monkeypatch)
    name = "paper_accuracy_steps20000"
    for method, task in (("prge_q4_dual-", "arc_challenge"), ("mezo-tasksst2-", "sst2")):
        good = one_committed_run(method)
        run = next(iter(good)).split("/")[0]
        assert f"-task{task}-" in run
        long = {k: v.replace(b"steps: 5000", b"steps: 20000")
                .replace(b"/tmp/runs/paper_accuracy/", f"/tmp/runs/{name}/".encode()) for k, v in good.items()}
        archive = make_archive(tmp_path / f"{task}.tgz", long, folder=name)
        code = run_main(keep, monkeypatch, archive, "--steps", "20000", "--tasks", "rte sst2", "--no-report")
        out, err = capsys.readouterr()
        if task == "sst2":
            assert code == 0 and f"1 finished runs taken from {archive}; 1 of 24 kept in" in out
        else:
            assert code == 1 and "0 of 24 kept in" in out
            assert f'keep_runs: refused {run}: a run of task arc_challenge, not of --tasks "sst2 rte"' in err
    calls = []
    monkeypatch.setattr("prge.cli.main", lambda argv: calls.append(argv) or 0)
    assert run_main(keep, monkeypatch, archive, "--steps", "20000", "--tasks", "sst2", "--tasks", "rte") == 0
    title = calls[0][calls[0].index("--title") + 1]
    assert title.startswith("Paper accuracy protocol at 20000 steps for sst2 and rte, part done so far: 1 of 24 runs, ")
    assert keep.listed(["a", "b", "c"]) == "a, b and c" and keep.listed(["a"]) == "a"
    for bad, message in ((["sst3"], "--tasks: ['sst3'] not in the sweep's data.task"),
                         (["rte,rte"], "--tasks: ['rte'] given more than once"),
                         ([" , "], "--tasks ' , ': names no task")):
        assert run_main(keep, monkeypatch, "--tasks", *bad, "--no-report") == 2
        assert f"keep_runs: error: {message}" in capsys.readouterr().err
    # A folder already holding a run of another task (kept without --tasks) is an error with it:
    # the report would show that run under a title that does not count it.
    assert run_main(keep, monkeypatch, tmp_path / "arc_challenge.tgz", "--steps", "20000", "--no-report") == 0
    capsys.readouterr()
    assert run_main(keep, monkeypatch, archive, "--steps", "20000", "--tasks", "sst2 rte", "--no-report") == 2
    assert ("keep_runs: error: experiments/results/paper_accuracy_steps20000/runs.tgz holds runs of other tasks "
            'than --tasks "sst2 rte" (prge_q4_dual-taskarc_challenge-seed') in capsys.readouterr().err
