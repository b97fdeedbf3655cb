"""Plain-PyTorch references, written independently of the C++ core: Hugging Face's
LlamaForCausalLM, LoRA-FA as forward hooks, perturbations evaluated one at a time."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

MASK64 = (1 << 64) - 1
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def derive_seed(seed: int, step: int, param: int, query: int) -> int:
    h = splitmix64(seed)
    for v in (step, param, query):
        h = splitmix64(h ^ (v & MASK64))
    return h & 0x7FFFFFFFFFFFFFFF


def draw(seed: int, shape, distribution: str = "gaussian") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if distribution == "gaussian":
        return torch.randn(shape, generator=g)
    return torch.empty(shape).bernoulli_(0.5, generator=g).mul_(2).sub_(1)


def block_noise(seed, step, param, queries, shape, distribution="gaussian", rng="torch"):
    """z for all queries of one matrix: torch's generator seeded per block, or the counter RNG
    (prge.export.counter_rng, checked equal to the C++ integers elsewhere)."""
    if rng == "torch":
        return draw(derive_seed(seed, step, param, -1), (queries, *shape), distribution)
    from prge.export import counter_rng

    step_key = torch.tensor(derive_seed(seed, step, 0, 0) & 0xFFFFFFFF)
    keys = counter_rng.stream_keys(step_key, torch.tensor(counter_rng.coordinate_hashes(param, queries)))
    n = 1
    for d in shape:
        n *= d
    return counter_rng.noise(keys, n, gaussian=distribution == "gaussian").view(queries, *shape)


def module_for(hf_model, name: str):
    """'layers.3.q_proj' -> hf_model.model.layers[3].self_attn.q_proj"""
    _, layer, proj = name.split(".")
    block = hf_model.model.layers[int(layer)]
    return getattr(block.self_attn if proj in PROJECTIONS[:4] else block.mlp, proj)


@contextlib.contextmanager
def lora_fa_hooks(hf_model, adapters, b_values):
    """y = W x + scaling * B (A x) on every adapted projection, B from `b_values`."""
    handles = []
    for a, b in zip(adapters, b_values):
        A, scaling = a["lora_a"], a["scaling"]

        def hook(module, inputs, output, A=A, B=b, scaling=scaling):
            return output + scaling * F.linear(F.linear(inputs[0], A), B)

        handles.append(module_for(hf_model, a["name"]).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def answer_loss(hf_model, input_ids, targets) -> float:
    """Mean over sequences of the mean answer-token cross-entropy (MeZO format)."""
    logits = hf_model(input_ids).logits.float()
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
    mask = targets != -100
    return ((nll * mask).sum(1) / mask.sum(1)).mean().item()


def rge_step(hf_model, adapters, b_master, batch, *, seed, step, queries, epsilon, lr,
             difference="central", distribution="gaussian", rng="torch"):
    """One P-RGE / ZO LoRA-FA step, each perturbed point evaluated separately.
    Returns (losses in the order P-RGE dual lists them, projected grads, new B list)."""
    z = [block_noise(seed, step, a["index"], queries, b.shape, distribution, rng)
         for a, b in zip(adapters, b_master)]

    def loss_at(query, scale):
        bs = [b + scale * zi[query] if scale else b.clone() for b, zi in zip(b_master, z)]
        with lora_fa_hooks(hf_model, adapters, bs):
            return answer_loss(hf_model, batch.input_ids, batch.targets)

    if difference == "central":
        plus = [loss_at(i, epsilon) for i in range(queries)]
        minus = [loss_at(i, -epsilon) for i in range(queries)]
        grads = [(p - m) / (2 * epsilon) for p, m in zip(plus, minus)]
        losses = plus + minus
    else:
        center = loss_at(0, 0.0)
        plus = [loss_at(i, epsilon) for i in range(queries)]
        grads = [(p - center) / epsilon for p in plus]
        losses = [center] + plus
    g = torch.tensor(grads, dtype=torch.float32)
    new_b = [b - lr * torch.tensordot(g, zi, dims=([0], [0])) / queries for b, zi in zip(b_master, z)]
    return losses, grads, new_b


@torch.no_grad()
def mezo_step(hf_model, names, batch, *, seed, step, queries, epsilon, lr):
    """MeZO (Malladi et al.): in-place perturb / restore of every weight, z regenerated
    from the seed, then theta -= lr * mean_i(g_i z_i). `names` lists (index, name)."""
    params = dict(hf_model.named_parameters())

    def perturb(query, scale):
        for index, name in names:
            p = params[name]
            p.add_(draw(derive_seed(seed, step, index, query), p.shape), alpha=scale)

    pluses, minuses, grads = [], [], []
    for i in range(queries):
        perturb(i, epsilon)
        plus = answer_loss(hf_model, batch.input_ids, batch.targets)
        perturb(i, -2 * epsilon)
        minus = answer_loss(hf_model, batch.input_ids, batch.targets)
        perturb(i, epsilon)
        pluses.append(plus)
        minuses.append(minus)
        grads.append((plus - minus) / (2 * epsilon))
    losses = pluses + minuses  # prge's order of points: every +εz, then every −εz
    for index, name in names:
        p = params[name]
        d = torch.zeros_like(p)
        for i in range(queries):
            d.add_(draw(derive_seed(seed, step, index, i), p.shape), alpha=grads[i])
        p.sub_(d.div_(queries), alpha=lr)
    return losses, grads
