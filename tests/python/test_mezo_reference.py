"""Full-parameter MeZO: same losses and same weights after a step as a plain-PyTorch
MeZO (in-place perturb/restore on transformers' model, z regenerated from the seed)."""
import torch

import prge
import reference
from conftest import make_batch

SEED, EPS = 77, 1e-3


def run_both(tiny_llama, lr, queries=2):
    path, hf = tiny_llama
    native = prge.LlamaModel.from_pretrained(str(path))
    before = {n: t.clone() for n, t in native.full_parameters()}
    names = [(i, n) for i, (n, _) in enumerate(native.full_parameters())]
    trainer = prge.Trainer(native, prge.EstimatorOptions("mezo", queries, EPS, parallel="none"),
                           prge.OptimizerOptions(lr=lr), SEED)
    batch = make_batch(128)
    result = trainer.step(batch)
    ref_losses, ref_grads = reference.mezo_step(hf, names, batch, seed=SEED, step=0,
                                                queries=queries, epsilon=EPS, lr=lr)
    return native, hf, before, result, ref_losses, ref_grads


def test_mezo_matches_reference(tiny_llama):
    native, hf, before, result, ref_losses, ref_grads = run_both(tiny_llama, lr=1e-2)
    assert result.forward_passes == 4
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(ref_losses), rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor(result.projected_grads), torch.tensor(ref_grads), rtol=0, atol=2e-2)
    hf_params = dict(hf.named_parameters())
    moved = 0.0
    for name, t in native.full_parameters():
        torch.testing.assert_close(t, hf_params[name].detach(), rtol=0, atol=1e-5)
        moved = max(moved, (t - before[name]).abs().max().item())
    assert moved > 1e-4  # the step really moved the weights


def test_mezo_restore(tiny_llama):
    """With lr = 0 a step must leave the weights where they were. In-place float
    arithmetic (θ + εz − 2εz + εz) can round by an ulp, exactly as the reference does:
    the restored weights are bit-identical to the reference's and within 2 ulp of θ."""
    native, hf, before, result, _, _ = run_both(tiny_llama, lr=0.0)
    hf_params = dict(hf.named_parameters())
    for name, t in native.full_parameters():
        assert torch.equal(t, hf_params[name].detach()), name
        ulp = torch.finfo(torch.float32).eps * before[name].abs().clamp_min(EPS * 4)
        assert ((t - before[name]).abs() <= 2 * ulp).all(), name
