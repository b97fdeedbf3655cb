"""Trainer.load_checkpoint on files that are not what this trainer saves: each refused by name
(file and tensor) before anything is written, so a refused file leaves the model and the
optimizer as they were; and a trainer whose model's adapters were attached again refuses to save
or load (its state belongs to the old adapters)."""
import pytest
import torch
from safetensors.torch import load_file, save_file

import prge
from conftest import make_batch
from test_prge_reference import EPS, LR, SEED, make_native


@pytest.fixture
def trained(tiny_llama, tmp_path):
    path, _ = tiny_llama
    native = make_native(path)
    trainer = prge.Trainer(native, prge.EstimatorOptions("prge", 2, EPS), prge.OptimizerOptions(lr=LR, momentum=0.9),
                           SEED)
    for s in range(2):
        trainer.step(make_batch(128, seed=s))
    good = tmp_path / "good.safetensors"
    trainer.save_checkpoint(str(good))
    return native, trainer, load_file(str(good)), tmp_path


def b_tensors(native):
    return [a["lora_b"].clone() for a in native.adapters()]


def edited(tmp_path, tensors, name="bad.safetensors"):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def test_a_wrong_shape_in_one_adapter_writes_none_of_them(trained):
    native, trainer, tensors, tmp_path = trained
    trainer.step(make_batch(128, seed=5))  # B now differs from the file's
    before = b_tensors(native)
    last = [k for k in tensors if k.endswith("lora_b")][-1]
    tensors[last] = torch.zeros(tensors[last].shape[0], tensors[last].shape[1] * 2)
    with pytest.raises(RuntimeError, match=rf"bad.safetensors: tensor '{last}' has shape"):
        trainer.load_checkpoint(edited(tmp_path, tensors))
    assert all(torch.equal(a, b) for a, b in zip(b_tensors(native), before))


@pytest.mark.parametrize("change, message", [
    (lambda t: t.update({"optimizer.adapter_buffer.m": t["optimizer.adapter_buffer.m"][: t["optimizer.adapter_buffer.m"].numel() // 2]}),
     r"tensor 'optimizer.adapter_buffer.m' has shape \d+, the parameter it belongs to \d+"),
    (lambda t: t.update({"optimizer.steps": torch.tensor([2])}), r"'optimizer.steps' must hold 2 integers"),
    (lambda t: t.update({"optimizer.bogus.m": torch.zeros(3)}), r"'optimizer.bogus.m' is not optimizer state prge writes"),
    (lambda t: t.update({"optimizer.param9999.m": torch.zeros(3)}), r"'optimizer.param9999.m' is state of a parameter this model does not train"),
    (lambda t: t.update({"trainer.step": torch.tensor([1, 2])}), r"'trainer.step' must hold 1 integer"),
    (lambda t: t.update({"trainer.step": torch.tensor([2.5])}), r"'trainer.step' must hold 1 integer, it holds 1 value\(s\) of Float"),
    (lambda t: t.update({"trainer.step": torch.tensor([-1])}), r"'trainer.step' is -1, not a step count"),
    (lambda t: t.update({"trainer.step": torch.tensor([2**63 - 1])}), r"'trainer.step' is 9223372036854775807, not a step count"),
    (lambda t: t.update({"optimizer.steps": torch.tensor([-4, -4])}), r"'optimizer.steps' holds \(-4, -4\); step counts are 0 to"),
    (lambda t: t.update({"optimizer.steps": torch.tensor([True, True])}), r"'optimizer.steps' must hold 2 integers"),
    (lambda t: t.pop("optimizer.steps"), r"comes without 'optimizer.steps'"),
    (lambda t: t.update({"optimizer.steps": torch.tensor([3, 2])}),
     r"holds \(3, 2\): 3 steps at accumulate 1 make 3 updates"),
    (lambda t: t.update({"optimizer.adapter_buffer.v": t["optimizer.adapter_buffer.m"].clone()}),
     r"'optimizer.adapter_buffer.v' is state this optimizer \(sgd, momentum 0.9, accumulate 1\) does not keep"),
    (lambda t: t.pop("trainer.step"), r"optimizer state \('optimizer\..*'\) without 'trainer.step'"),
    (lambda t: [t.pop(k) for k in list(t) if k.startswith("optimizer.")], r"'trainer.step' without the optimizer's"),
])
def test_optimizer_state_that_does_not_fit_is_refused_before_anything_is_written(trained, change, message):
    native, trainer, tensors, tmp_path = trained
    trainer.step(make_batch(128, seed=5))
    before, step = b_tensors(native), trainer.step_count
    change(tensors)
    with pytest.raises(RuntimeError, match=r"bad.safetensors: .*" + message):
        trainer.load_checkpoint(edited(tmp_path, tensors))
    assert all(torch.equal(a, b) for a, b in zip(b_tensors(native), before))
    assert trainer.step_count == step


def test_adam_state_loads_only_into_adam_and_whole(trained, tiny_llama):
    """An Adam trainer's file into an SGD trainer (its v has no place there), and a file with one
    of Adam's moments and not the other, are refused; the whole file loads into Adam."""
    native, _, _, tmp_path = trained
    adam = prge.Trainer(native, prge.EstimatorOptions("prge", 2, EPS), prge.OptimizerOptions(kind="adam", lr=LR), SEED)
    adam.step(make_batch(128, seed=0))
    path = tmp_path / "adam.safetensors"
    adam.save_checkpoint(str(path))
    sgd = prge.Trainer(make_native(tiny_llama[0]), prge.EstimatorOptions("prge", 2, EPS), prge.OptimizerOptions(lr=LR),
                       SEED)
    with pytest.raises(RuntimeError, match=r"adam.safetensors: tensor 'optimizer.adapter_buffer.m' is state this "
                                           r"optimizer \(sgd, momentum 0, accumulate 1\) does not keep"):
        sgd.load_checkpoint(str(path))
    tensors = load_file(str(path))
    tensors.pop("optimizer.adapter_buffer.v")
    with pytest.raises(RuntimeError, match=r"'optimizer.adapter_buffer.m' comes without 'optimizer.adapter_buffer.v'"):
        adam.load_checkpoint(edited(tmp_path, tensors))
    adam.load_checkpoint(str(path))
    assert adam.step_count == 1


def test_a_step_count_outside_what_a_run_reaches_is_refused(trained):
    _, trainer, _, _ = trained
    for bad in (-5, 2**62, 2**70, -2**70):
        with pytest.raises(ValueError, match=rf"step_count {bad}: a step count is 0 to"):
            trainer.step_count = bad
    for not_a_count in (True, False, 3.0, "3", None):  # True is an int to Python; it used to set step 1
        with pytest.raises(TypeError, match="step_count: an int"):
            trainer.step_count = not_a_count
    assert trainer.step_count == 2


def test_the_file_it_saved_loads_and_the_run_repeats(trained):
    native, trainer, tensors, tmp_path = trained
    after_save = [trainer.step(make_batch(128, seed=s)).loss for s in range(3, 5)]
    trainer.load_checkpoint(str(tmp_path / "good.safetensors"))
    assert trainer.step_count == 2
    assert [trainer.step(make_batch(128, seed=s)).loss for s in range(3, 5)] == after_save


def test_a_file_of_adapters_alone_starts_the_trainer_fresh_at_them(trained, tiny_llama):
    """No optimizer state and no 'trainer.step' in the file: fresh optimizer state and step 0
    (the step count picks each step's z), so the next step is a fresh trainer's first step from
    the file's B."""
    native, trainer, tensors, tmp_path = trained
    trainer.step(make_batch(128, seed=5))
    adapters_only = {k: v for k, v in tensors.items() if k.endswith("lora_b")}
    trainer.load_checkpoint(edited(tmp_path, adapters_only, "adapters.safetensors"))
    assert trainer.step_count == 0
    got = trainer.step(make_batch(128, seed=7)).loss
    fresh_native = make_native(tiny_llama[0])  # a brand-new trainer, given the same file
    fresh = prge.Trainer(fresh_native, prge.EstimatorOptions("prge", 2, EPS),
                         prge.OptimizerOptions(lr=LR, momentum=0.9), SEED)
    fresh.load_checkpoint(edited(tmp_path, adapters_only, "adapters.safetensors"))
    assert fresh.step(make_batch(128, seed=7)).loss == got
    assert all(torch.equal(a, b) for a, b in zip(b_tensors(native), b_tensors(fresh_native)))


def test_a_trainer_of_adapters_attached_again_neither_saves_nor_loads(trained):
    native, trainer, tensors, tmp_path = trained
    native.attach_adapters(prge.AdapterOptions(rank=4, alpha=8, init_seed=1))
    with pytest.raises(ValueError, match="adapters were attached again"):
        trainer.save_checkpoint(str(tmp_path / "stale.safetensors"))
    with pytest.raises(ValueError, match="adapters were attached again"):
        trainer.load_checkpoint(str(tmp_path / "good.safetensors"))
