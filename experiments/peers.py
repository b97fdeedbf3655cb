"""What a PyTorch user without prge would run, for bench_step.py to time beside prge.

- `TransformersForward`: transformers' LlamaForCausalLM body on the 2q*b sequences of a
  P-RGE dual step, logits at the answer positions only: the inference floor, eager, under
  torch.compile, and under torch.compile(mode="reduce-overhead") (CUDA graphs).
- `PaperPrgeStep`: the paper's own recipe on transformers: every target nn.Linear wrapped
  in a LoRA-FA layer whose [2q, out, r] copies of B (B + eps z_i, B - eps z_i) are applied
  to the repeated batch with one bmm; z from torch.randn per layer; the RGE update of B.
  Eager, or with its forward torch.compile'd.
- `LoraFaBackpropStep`: first order on the same adapters as a PyTorch user trains them: peft
  LoRA (rank 16, alpha 32) on the 7 projections with A frozen (LoRA-FA), the loss at the answer
  rows, backward, SGD on B; eager, or with the loss (forward and backward) and the optimizer
  step torch.compile'd.

All use random weights at the benchmark's shape (speed does not depend on values)."""
from __future__ import annotations

import torch
from torch import nn

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def transformers_model(config, dtype: torch.dtype, device: str):
    """transformers' own model of the spec's family (Llama, Qwen2, ...) at its shape."""
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.for_model(
        config.model_type, vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim, tie_word_embeddings=config.tie_word_embeddings,
        rope_theta=config.rope.theta, max_position_embeddings=4096)
    hf_config._attn_implementation = "sdpa"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config).to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def answer_rows(targets: torch.Tensor) -> torch.Tensor:
    """Flat indices of the answer positions (fixed per batch, computed once on the host)."""
    return (targets.reshape(-1) != -100).nonzero().squeeze(1)


class TransformersForward:
    """One inference forward of the sequences, logits only at the answer rows."""

    def __init__(self, model, ids: torch.Tensor, targets: torch.Tensor, compile_mode: str | None):
        self.model, self.ids = model, ids
        self.rows = answer_rows(targets).to(ids.device)
        fn = self._forward
        if compile_mode is not None:
            fn = torch.compile(fn, mode=None if compile_mode == "default" else compile_mode, fullgraph=True)
        self.fn = fn

    def _forward(self, ids, rows):
        hidden = self.model.model(ids).last_hidden_state
        return self.model.lm_head(hidden.reshape(-1, hidden.size(-1)).index_select(0, rows)).float()

    @torch.inference_mode()
    def __call__(self):
        return self.fn(self.ids, self.rows)


class LoraFaCopies(nn.Module):
    """y = W x + scaling * B_c (A x) for each copy c of the repeated batch (paper's LoRALinear)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, copies: int):
        super().__init__()
        self.base, self.scaling, self.copies = base, alpha / rank, copies
        device, dtype = base.weight.device, base.weight.dtype
        self.register_buffer("lora_a", torch.empty(rank, base.in_features, device=device, dtype=dtype)
                             .uniform_(-0.05, 0.05))
        self.lora_b = torch.zeros(base.out_features, rank, device=device, dtype=torch.float32)
        # Static buffer refilled in place each step, so compiled graphs (and CUDA graphs) read it.
        self.register_buffer("b_copies", torch.zeros(copies, base.out_features, rank, device=device,
                                                     dtype=dtype))

    def forward(self, x):
        y = self.base(x)
        ax = nn.functional.linear(x, self.lora_a)
        copies = self.copies
        grouped = ax.reshape(copies, -1, ax.size(-1))
        low_rank = torch.bmm(grouped, self.b_copies.to(x.dtype).transpose(1, 2))
        return y + self.scaling * low_rank.reshape(y.shape)


class PaperPrgeStep:
    """One P-RGE dual step as the paper's code does it, on transformers."""

    def __init__(self, model, ids, targets, queries: int, epsilon: float, lr: float, compiled: bool):
        self.model, self.queries, self.epsilon, self.lr = model, queries, epsilon, lr
        copies = 2 * queries
        self.layers = []
        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name in TARGETS:
                    if hasattr(parent, name) and isinstance(getattr(parent, name), nn.Linear):
                        wrapped = LoraFaCopies(getattr(parent, name), 16, 32, copies)
                        setattr(parent, name, wrapped)
                        self.layers.append(wrapped)
        self.ids = ids.repeat(copies, 1)
        repeated_targets = targets.to(ids.device).repeat(copies, 1)
        self.rows = answer_rows(repeated_targets).to(ids.device)
        self.answer_targets = repeated_targets.reshape(-1).index_select(0, self.rows)
        self.copy_of_row = torch.div(self.rows, ids.numel(), rounding_mode="floor")
        self.forward = torch.compile(self._losses, fullgraph=True) if compiled else self._losses

    def _losses(self, ids, rows, answer_targets, copy_of_row):
        hidden = self.model.model(ids).last_hidden_state
        logits = self.model.lm_head(hidden.reshape(-1, hidden.size(-1)).index_select(0, rows)).float()
        nll = nn.functional.cross_entropy(logits, answer_targets, reduction="none")
        copies = 2 * self.queries
        sums = torch.zeros(copies, device=nll.device).index_add_(0, copy_of_row, nll)
        counts = torch.zeros(copies, device=nll.device).index_add_(0, copy_of_row, torch.ones_like(nll))
        return sums / counts

    @torch.inference_mode()
    def __call__(self):
        q, eps = self.queries, self.epsilon
        noise = [torch.randn(q, *layer.lora_b.shape, device=layer.lora_b.device) for layer in self.layers]
        for layer, z in zip(self.layers, noise):
            layer.b_copies[:q].copy_(layer.lora_b + eps * z)
            layer.b_copies[q:].copy_(layer.lora_b - eps * z)
        losses = self.forward(self.ids, self.rows, self.answer_targets, self.copy_of_row)
        g = (losses[:q] - losses[q:]) / (2 * eps)  # stays on the device: no host sync
        for layer, z in zip(self.layers, noise):
            layer.lora_b.sub_(torch.tensordot(g, z, dims=1), alpha=self.lr / q)
        return losses


class LoraFaBackpropStep:
    """One first-order step on LoRA-FA adapters: peft's LoRA layers, lora_A frozen, mean
    cross-entropy at the answer rows, loss.backward(), SGD on lora_B."""

    def __init__(self, model, ids: torch.Tensor, targets: torch.Tensor, lr: float, compile_mode: str | None):
        from peft import LoraConfig, get_peft_model

        get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=list(TARGETS)))  # in place
        trained = []
        for name, p in model.named_parameters():
            p.requires_grad_("lora_B" in name)
            if "lora_B" in name:
                trained.append(p)
        self.model, self.ids = model, ids
        self.rows = answer_rows(targets).to(ids.device)
        self.answer_targets = targets.to(ids.device).reshape(-1).index_select(0, self.rows)
        self.optimizer = torch.optim.SGD(trained, lr=lr)
        self.loss, self.update = self._loss, self.optimizer.step
        if compile_mode is not None:
            mode = None if compile_mode == "default" else compile_mode
            self.loss = torch.compile(self._loss, mode=mode)
            self.update = torch.compile(self.optimizer.step, mode=mode)

    def _loss(self, ids, rows, answer_targets):
        hidden = self.model.model(ids).last_hidden_state
        logits = self.model.lm_head(hidden.reshape(-1, hidden.size(-1)).index_select(0, rows)).float()
        return nn.functional.cross_entropy(logits, answer_targets)

    def __call__(self):
        loss = self.loss(self.ids, self.rows, self.answer_targets)
        loss.backward()
        self.update()
        self.optimizer.zero_grad(set_to_none=False)  # the gradients stay where a CUDA graph reads them
        return loss.detach()
