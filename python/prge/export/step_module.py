"""A whole P-RGE training step as one forward pass, in plain torch ops, for inference
engines (the paper's third contribution).

forward(input_ids [b, T], targets [b, T], lr, epsilon, step_key[, B_0 .. B_{P-1}]):
  1. z_{p,i} for every adapter p and query i from the counter RNG (integer ops only);
  2. the batch repeated 2q times, each copy running LoRA-FA with its own B_p ± eps z_{p,i}
     (dual P-RGE: every perturbed point in ONE forward; W x and A x computed once);
  3. per-copy mean answer-token loss, g_i = (L+_i − L−_i) / 2 eps;
  4. the fused ZO-SGD update B_p ← B_p − lr · (1/q) Σ_i g_i z_{p,i}.
Returns (loss, projected_grads [q], *updated B_p).

Two flavours of the same step:
  MutableBufferStep — B_p live in registered buffers, updated in place (torch.export
                      records a buffer mutation; AOTInductor keeps them inside the .pt2);
  FunctionalStep    — B_p are inputs and the updated B_p outputs, for runtimes without
                      mutable state (ONNX Runtime): the caller feeds them back.
Shapes are static: [b, T] and the number of answer tokens K per sequence are fixed at
export. The arithmetic follows the C++ trainer (prge.Trainer, estimator.rng: counter), and
the methods carry the names of the C++ functions they mirror, so the two read side by side."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from prge._core import IGNORE_INDEX
from prge.export import counter_rng


@dataclass(frozen=True)
class StepSpec:
    queries: int
    batch_size: int
    seq_len: int
    answer_tokens: int = 1  # K: answer positions per sequence scored by the loss
    gaussian: bool = True
    shift_mode: str = "shift"  # how the RNG spells >> (counter_rng.shift_right); same integers

    @property
    def copies(self) -> int:
        return 2 * self.queries


class _LlamaWeights(nn.Module):
    """Frozen weights + LoRA-FA A of a prge.CausalLM, copied out as plain tensors."""

    def __init__(self, model):
        super().__init__()
        c = model.spec
        self.num_layers, self.heads, self.kv_heads = c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads
        self.head_dim, self.eps = c.head_dim, c.rms_norm_eps
        self.rope_attention_factor = c.rope.attention_factor
        weights = dict(model.full_parameters())
        if "lm_head.weight" not in weights:
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
        for name, value in weights.items():
            self.register_buffer(name.replace(".", "__"), value.detach().clone(), persistent=False)
        adapters = model.adapters()
        if not adapters:
            raise ValueError("export needs a model with LoRA-FA adapters (adapter.targets)")
        self.adapter_names = [a["name"] for a in adapters]
        self.adapter_index = [int(a["index"]) for a in adapters]
        self.scaling = {a["name"]: float(a["scaling"]) for a in adapters}
        for a in adapters:
            self.register_buffer(f"A__{a['name'].replace('.', '__')}", a["lora_a"].detach().clone(),
                                 persistent=False)
        self.initial_b = [a["lora_b"].detach().clone() for a in adapters]

    def weight(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace(".", "__"))


class _PrgeStepBase(nn.Module):
    def __init__(self, model, spec: StepSpec):
        super().__init__()
        self.spec = spec
        self.w = _LlamaWeights(model)
        w = self.w
        dtype = w.initial_b[0].dtype
        # RoPE tables for the static sequence length (HF convention: rotate_half), from the
        # model's own frequencies (every RoPE variant of its config.json).
        inv_freq = model.rope_frequencies(spec.seq_len).cpu()
        freqs = torch.outer(torch.arange(spec.seq_len, dtype=torch.float32), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        device = w.initial_b[0].device
        scale = w.rope_attention_factor
        self.register_buffer("rope_cos", (emb.cos() * scale).to(device, dtype), persistent=False)
        self.register_buffer("rope_sin", (emb.sin() * scale).to(device, dtype), persistent=False)
        causal = torch.full((spec.seq_len, spec.seq_len), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal.to(device, dtype), persistent=False)
        coords = [counter_rng.coordinate_hashes(p, spec.queries) for p in w.adapter_index]
        self.register_buffer("coordinates", torch.tensor(coords, dtype=torch.int64, device=device),
                             persistent=False)
        self.slot = {name: i for i, name in enumerate(w.adapter_names)}

    # -- the model: csrc/prge/models/llama.cpp, lora_fa_linear.cpp, losses.cpp --------------
    def rms_norm(self, x, weight):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.w.eps)).to(x.dtype) * weight

    def apply_rope(self, x):  # [N, H, T, D]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * self.rope_cos + rotated * self.rope_sin

    def lora_fa_linear(self, x, layer: int, name: str, kind: str, group_copies):
        """x [C*b, T, in] -> W x + scaling * B_c (A x), copy c using its own B_c
        (LoraFaLinear::forward / linear_plus_low_rank)."""
        full = f"model.layers.{layer}.{kind}.{name}.weight"
        y = torch.matmul(x, self.w.weight(full).t())
        key = f"layers.{layer}.{name}"
        if key not in self.slot:
            return y
        a = getattr(self.w, f"A__{key.replace('.', '__')}")
        c, n, t = self.spec.copies, x.shape[0] // self.spec.copies, x.shape[1]
        ax = torch.matmul(x, a.t()).reshape(c, n * t, a.shape[0])             # [C, b*T, r]
        low = torch.bmm(ax, group_copies[self.slot[key]].transpose(1, 2))      # [C, b*T, out]
        return y + self.w.scaling[key] * low.reshape(c * n, t, -1)

    def attention_block(self, i: int, h, group_copies):
        w = self.w
        n, t = h.shape[0], h.shape[1]
        q = self.lora_fa_linear(h, i, "q_proj", "self_attn", group_copies).view(n, t, w.heads, w.head_dim).transpose(1, 2)
        k = self.lora_fa_linear(h, i, "k_proj", "self_attn", group_copies).view(n, t, w.kv_heads, w.head_dim).transpose(1, 2)
        v = self.lora_fa_linear(h, i, "v_proj", "self_attn", group_copies).view(n, t, w.kv_heads, w.head_dim).transpose(1, 2)
        q, k = self.apply_rope(q), self.apply_rope(k)
        groups = w.heads // w.kv_heads
        if groups > 1:
            k = k.unsqueeze(2).expand(n, w.kv_heads, groups, t, w.head_dim).reshape(n, w.heads, t, w.head_dim)
            v = v.unsqueeze(2).expand(n, w.kv_heads, groups, t, w.head_dim).reshape(n, w.heads, t, w.head_dim)
        scores = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(w.head_dim)) + self.causal_mask
        attn = torch.matmul(torch.softmax(scores.float(), dim=-1).to(q.dtype), v)
        attn = attn.transpose(1, 2).reshape(n, t, w.heads * w.head_dim)
        return self.lora_fa_linear(attn, i, "o_proj", "self_attn", group_copies)

    def mlp_block(self, i: int, h, group_copies):
        gate = self.lora_fa_linear(h, i, "gate_proj", "mlp", group_copies)
        up = self.lora_fa_linear(h, i, "up_proj", "mlp", group_copies)
        return self.lora_fa_linear(torch.nn.functional.silu(gate) * up, i, "down_proj", "mlp", group_copies)

    def hidden_states(self, input_ids, group_copies):
        w = self.w
        x = torch.nn.functional.embedding(input_ids, w.weight("model.embed_tokens.weight"))  # residual stream
        for i in range(w.num_layers):
            p = f"model.layers.{i}."
            x = x + self.attention_block(i, self.rms_norm(x, w.weight(p + "input_layernorm.weight")), group_copies)
            x = x + self.mlp_block(i, self.rms_norm(x, w.weight(p + "post_attention_layernorm.weight")), group_copies)
        return self.rms_norm(x, w.weight("model.norm.weight"))

    def copy_losses(self, hidden, targets):
        """Mean over each copy's sequences of the mean answer-token NLL: [C]."""
        s = self.spec
        n, t = targets.shape
        # The first K answer positions of each sequence, found with static-shape ops.
        answer = (targets != IGNORE_INDEX).to(torch.float32)
        rank = answer * (t - torch.arange(t, dtype=torch.float32, device=targets.device))
        positions = torch.topk(rank, s.answer_tokens, dim=1).indices            # [n, K]
        picked = torch.gather(targets, 1, positions)                              # [n, K]
        valid = (picked != IGNORE_INDEX).to(torch.float32)
        rows = torch.gather(hidden, 1, positions.unsqueeze(-1).expand(n, s.answer_tokens, hidden.shape[-1]))
        logits = torch.matmul(rows, self.w.weight("lm_head.weight").t()).float()  # [n, K, V]
        logp = torch.log_softmax(logits, dim=-1)
        nll = -torch.gather(logp, 2, torch.clamp(picked, min=0).unsqueeze(-1)).squeeze(-1) * valid
        per_sequence = nll.sum(1) / valid.sum(1)
        return per_sequence.view(s.copies, -1).mean(1)

    # -- the step: csrc/prge/perturbation*.cpp, estimators/prge_estimator.cpp, optim/ --------
    def noise(self, p: int, b, step_key):
        """z_{p,0..q-1} of adapter p (PerturbationStream::noise_block, counter RNG)."""
        s = self.spec
        keys = counter_rng.stream_keys(step_key, self.coordinates[p], s.shift_mode)
        return counter_rng.noise(keys, b.numel(), s.gaussian, s.shift_mode).view(s.queries, *b.shape).to(b.dtype)

    def stack(self, b, z, epsilon):
        """[B + eps z_0 .. B + eps z_{q-1}, B - eps z_0 ..] (MaterializedPlan::stack, central dual)."""
        scaled = z * epsilon.to(b.dtype)
        return torch.cat([b.unsqueeze(0) + scaled, b.unsqueeze(0) - scaled], 0)

    def estimate(self, input_ids, targets, epsilon, zs, bs):
        """(loss, g): one forward of all 2q copies (PrgeEstimator::estimate, parallel: dual)."""
        s = self.spec
        group_copies = [self.stack(b, z, epsilon) for b, z in zip(bs, zs)]
        hidden = self.hidden_states(input_ids.repeat(s.copies, 1), group_copies)
        losses = self.copy_losses(hidden, targets.repeat(s.copies, 1))
        plus, minus = losses[: s.queries], losses[s.queries:]
        return (0.5 * (plus + minus)).mean(), (plus - minus) / (2.0 * epsilon)

    def combine(self, grads, z):
        """(1/q) sum_i g_i z_i (PerturbationStream::combine)."""
        return torch.tensordot(grads.to(torch.float32), z.to(torch.float32), dims=([0], [0])) / self.spec.queries

    def update(self, b, direction, lr):
        """B - lr * d (Optimizer::update, kind: sgd, no momentum or decay)."""
        return (b.to(torch.float32) - lr * direction).to(b.dtype)

    def step(self, input_ids, targets, lr, epsilon, step_key, bs: list[torch.Tensor]):
        zs = [self.noise(p, b, step_key) for p, b in enumerate(bs)]
        loss, grads = self.estimate(input_ids, targets, epsilon, zs, bs)
        return loss, grads, [self.update(b, self.combine(grads, z), lr) for b, z in zip(bs, zs)]


class FunctionalStep(_PrgeStepBase):
    """B in, updated B out (runtimes without mutable state)."""

    def forward(self, input_ids, targets, lr, epsilon, step_key, *bs):
        loss, grads, updated = self.step(input_ids, targets, lr, epsilon, step_key, list(bs))
        return (loss, grads, *updated)

    def initial_inputs(self) -> list[torch.Tensor]:
        return [b.clone() for b in self.w.initial_b]


class MutableBufferStep(_PrgeStepBase):
    """B in registered buffers, updated in place by forward; also returned."""

    def __init__(self, model, spec: StepSpec):
        super().__init__(model, spec)
        for i, b in enumerate(self.w.initial_b):
            self.register_buffer(f"lora_b_{i}", b.clone())

    def lora_b(self) -> list[torch.Tensor]:
        return [getattr(self, f"lora_b_{i}") for i in range(len(self.w.initial_b))]

    def forward(self, input_ids, targets, lr, epsilon, step_key):
        loss, grads, updated = self.step(input_ids, targets, lr, epsilon, step_key, self.lora_b())
        for buffer, new in zip(self.lora_b(), updated):
            buffer.copy_(new)
        return (loss, grads, *[u.clone() for u in updated])
