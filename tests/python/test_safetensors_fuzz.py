"""Damaged weight and checkpoint files: random truncations and byte flips of valid files never
crash the process and every failure is a clear error naming the file. The fuzzing runs in a
child process, so a crash (segfault, abort, huge allocation) fails the test instead of pytest."""
import subprocess
import sys
from pathlib import Path

from conftest import make_hf_llama

FUZZ = r"""
import random, shutil, sys
from pathlib import Path
import prge
model_dir, checkpoint, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rng = random.Random(0)
outcomes = {"loaded": 0, "error": 0}
def damage(data):
    data = bytearray(data)
    if rng.random() < 0.4:
        return bytes(data[: rng.randrange(len(data))])
    for _ in range(rng.randint(1, 8)):
        where = rng.randrange(min(len(data), 200) if rng.random() < 0.7 else len(data))  # the header most
        data[where] = rng.randrange(256)
    return bytes(data)
for i in range(int(sys.argv[4])):
    target = work / f"case{i % 2}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model_dir, target)
    weights = target / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    bad_checkpoint = target / "checkpoint.safetensors"
    bad_checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    for load in (lambda: prge.CausalLM.from_pretrained(str(target)),
                 lambda: trainer.load_checkpoint(str(bad_checkpoint))):
        try:
            model = prge.CausalLM.from_pretrained(str(model_dir))
            model.attach_adapters(prge.AdapterOptions(rank=4, alpha=8))
            trainer = prge.Trainer(model, prge.EstimatorOptions("prge", 2, 1e-2), prge.OptimizerOptions(lr=1e-2), 0)
            load()
            outcomes["loaded"] += 1
        except (RuntimeError, ValueError) as e:
            message = str(e)
            assert str(target) in message, message  # names the file
            outcomes["error"] += 1
print(outcomes)
"""


def test_damaged_files_fail_clearly_and_never_crash(tmp_path):
    import prge

    model_dir, _ = make_hf_llama(tmp_path)
    model = prge.CausalLM.from_pretrained(str(model_dir))
    model.attach_adapters(prge.AdapterOptions(rank=4, alpha=8))
    trainer = prge.Trainer(model, prge.EstimatorOptions("prge", 2, 1e-2), prge.OptimizerOptions(lr=1e-2, momentum=0.9), 0)
    trainer.save_checkpoint(str(tmp_path / "checkpoint.safetensors"))
    done = subprocess.run([sys.executable, "-c", FUZZ, str(model_dir), str(tmp_path / "checkpoint.safetensors"),
                           str(tmp_path), "150"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    outcomes = eval(done.stdout.strip().splitlines()[-1])
    assert outcomes["error"] > 100, outcomes  # most damage is detected, every detection is named
