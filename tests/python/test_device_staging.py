"""experiments/device/model.sh, the GPU machine's side of staging a model in parts (one carry call
each): every part is checked by size and sha256 before the parts are joined, a missing or changed
part is named by the folder to carry again, a failed conversion is an error that leaves no model
directory behind, and sourcing it leaves the caller's shell options alone. Run here on a fake GGUF
in a scratch directory laid out as the repository is on that machine."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fake-model"


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    """A scratch 'repository root' with model.sh, paths.env pointing into tmp_path, and the three
    carried part folders of a 298-byte fake GGUF as stage_model.sh cuts them (split_gguf.sh)."""
    repo = tmp_path / "repo"
    (repo / "experiments/device").mkdir(parents=True)
    shutil.copy(ROOT / "experiments/device/model.sh", repo / "experiments/device/model.sh")
    (repo / "experiments/device/paths.env").write_text(
        f"DEFAULT_MODEL={MODEL}\nDEVICE_MODELS={tmp_path}/models\nDEVICE_RUNS={tmp_path}/runs\n")
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(bytes(range(256)) + b"tail of the fake gguf" * 2)
    subprocess.run(["bash", str(ROOT / "experiments/device/split_gguf.sh"), str(gguf), MODEL,
                    str(repo / ".device" / MODEL), "120", "120"], check=True)  # three parts: 120, 120, 58 bytes
    subprocess.run(["tar", "czf", str(repo / ".device" / MODEL / "a" / f"{MODEL}.files.tgz"), "-C",
                    str(ROOT / "configs"), "sweeps"], check=True)  # any small archive stands for the tokenizer files
    return repo


def sh(repo: Path, script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODEL": MODEL, "PRGE_CARRY": str(repo.parent / "carry")}
    return subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True)


def carry_only(repo: Path, letter: str) -> None:
    """As a carry call leaves the machine: this part's folder there, the others not."""
    stash = repo.parent / "stash"
    stash.mkdir(exist_ok=True)
    for folder in [*(repo / ".device" / MODEL).iterdir(), *stash.iterdir()]:
        target = (repo / ".device" / MODEL if folder.name == letter else stash) / folder.name
        if folder != target:
            shutil.move(folder, target)


def test_parts_are_checked_and_named_before_they_are_joined(machine):
    carry_only(machine, "a")
    assert sh(machine, "bash experiments/device/model.sh stage").returncode == 0
    carry_only(machine, "c")
    assert sh(machine, "bash experiments/device/model.sh stage").returncode == 0
    missing = sh(machine, "source experiments/device/model.sh join")
    assert missing.returncode == 3
    assert f"part 2 of 3 not staged: carry .device/{MODEL}/b and run stage" in missing.stderr
    carry_only(machine, "b")
    assert sh(machine, "bash experiments/device/model.sh stage").returncode == 0
    part3 = machine.parent / "carry" / f"{MODEL}.gguf.part3"
    good = part3.read_bytes()
    part3.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit changed
    changed = sh(machine, "source experiments/device/model.sh join")
    assert changed.returncode == 5
    assert f"part 3 of 3 differs from the one staged here: carry .device/{MODEL}/c again" in changed.stderr
    part3.write_bytes(good)
    # All parts good: joined and whole, then the fake GGUF fails to convert, which is an error,
    # and no model directory is left for a later call to take as converted. The caller's shell
    # options are as they were.
    joined = sh(machine, "set +u; source experiments/device/model.sh join; echo rc=$?; echo opts=$-")
    assert "rc=6" in joined.stdout and f"converting {MODEL}.gguf failed" in joined.stderr, joined
    assert "u" not in joined.stdout.split("opts=")[1]
    carry = machine.parent / "carry"
    whole = (carry / f"{MODEL}.parts").read_text().split()[1]
    assert hashlib.sha256((carry / f"{MODEL}.gguf").read_bytes()).hexdigest() == whole
    assert not (machine.parent / "models" / MODEL).exists()


def test_stopped_runs_carried_alone_are_kept_for_the_sweep(machine):
    """.device/stopped carried in a call of its own (no model part): stage keeps the archive in
    CARRY/stopped, where paper_accuracy.sh looks when the checkout has none."""
    shutil.rmtree(machine / ".device" / MODEL)
    (machine / ".device/stopped").mkdir(parents=True)
    archive = machine / ".device/stopped/paper_accuracy_fake_stopped.tgz"
    archive.write_bytes(b"stands for an archive")
    staged = sh(machine, "bash experiments/device/model.sh stage")
    assert staged.returncode == 0, staged.stderr
    assert (machine.parent / "carry/stopped" / archive.name).read_bytes() == archive.read_bytes()
    sweep = (ROOT / "experiments/device/paper_accuracy.sh").read_text()
    assert "${PRGE_CARRY:-/tmp/prge-carry}/stopped/${name}_stopped.tgz" in sweep


def test_wrong_use_is_an_error_not_silence(machine):
    assert sh(machine, "bash experiments/device/model.sh jion").returncode == 2
    cold = sh(machine, "source experiments/device/model.sh join")
    assert cold.returncode == 3 and f"{MODEL} is not staged on this machine (staged: nothing" in cold.stderr
    shutil.rmtree(machine / ".device")
    nothing = sh(machine, "bash experiments/device/model.sh stage")
    assert nothing.returncode == 3 and f"no .device/{MODEL}/<part> or .device/stopped carried" in nothing.stderr


def test_split_gguf_refuses_bad_arguments_by_name(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * 100)

    def split(*args):
        return subprocess.run(["bash", str(ROOT / "experiments/device/split_gguf.sh"), *map(str, args)],
                              capture_output=True, text=True)

    for args, rc, message in [((gguf, MODEL, tmp_path / "d"), 2, "expected GGUF MODEL DEST FIRST SHARE, got 3"),
                              ((tmp_path / "none.gguf", MODEL, tmp_path / "d", 10, 10), 2, "none.gguf: no such file"),
                              ((gguf, MODEL, tmp_path / "d", "10k", 10), 2, "FIRST 10k, SHARE 10: both must be"),
                              ((gguf, MODEL, tmp_path / "d", 10, 0), 2, "both must be positive"),
                              ((gguf, "", tmp_path / "d", 10, 10), 2, "MODEL '': expected a registered model's"),
                              ((gguf, "a/b", tmp_path / "d", 10, 10), 2, "MODEL 'a/b': expected"),
                              ((gguf, MODEL, tmp_path / "d", "1" * 16, 10), 2, "both must be positive"),
                              ((gguf, MODEL, tmp_path / "d", 1, 3), 1, "would take 34 parts (at most 26)")]:
        result = split(*args)
        assert result.returncode == rc and "split_gguf: error: " in result.stderr, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "d").exists()  # nothing written before a refusal
    # Through a link (as the Hugging Face cache holds files), sizes with a leading zero read as decimal:
    # 40 + 30 + 30, three parts, whole again.
    (tmp_path / "link.gguf").symlink_to(gguf)
    assert split(tmp_path / "link.gguf", MODEL, tmp_path / "d", "040", "030").returncode == 0
    parts = [tmp_path / "d" / letter / f"{MODEL}.gguf.part{k}" for k, letter in enumerate("abc", 1)]
    assert [p.stat().st_size for p in parts] == [40, 30, 30]
    assert b"".join(p.read_bytes() for p in parts) == gguf.read_bytes()
    assert (tmp_path / "d/a" / f"{MODEL}.parts").read_text().split()[0] == "3"
