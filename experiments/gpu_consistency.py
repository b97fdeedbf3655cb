"""GPU-path checks that the CPU test suite cannot make (run on the device machine):
the native model gives the same logits on CUDA as on the CPU (fp32), and on CUDA the
dual P-RGE forward gives the same per-point losses as evaluating each point alone."""
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

import prge
from prge.models import SHAPES


def tiny_checkpoint(root: Path) -> Path:
    shape = SHAPES["tiny-debug"]
    d, f, L = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    q, kv = shape["num_attention_heads"] * shape["head_dim"], shape["num_key_value_heads"] * shape["head_dim"]
    g = torch.Generator().manual_seed(0)
    w = {"model.embed_tokens.weight": torch.randn(shape["vocab_size"], d, generator=g) * 0.1,
         "model.norm.weight": 1 + 0.1 * torch.randn(d, generator=g),
         "lm_head.weight": torch.randn(shape["vocab_size"], d, generator=g) * 0.1}
    for i in range(L):
        p = f"model.layers.{i}."
        for name, shp in [("self_attn.q_proj", (q, d)), ("self_attn.k_proj", (kv, d)), ("self_attn.v_proj", (kv, d)),
                          ("self_attn.o_proj", (d, q)), ("mlp.gate_proj", (f, d)), ("mlp.up_proj", (f, d)),
                          ("mlp.down_proj", (d, f))]:
            w[p + name + ".weight"] = torch.randn(*shp, generator=g) * 0.1
        w[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(d, generator=g)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(d, generator=g)
    save_file(w, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"model_type": "llama", **shape}))
    return root


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_checkpoint(Path(tmp))
        ids = torch.randint(1, 512, (3, 24), generator=torch.Generator().manual_seed(1))
        cpu = prge.CausalLM.from_pretrained(str(path), "cpu", "float32")
        gpu = prge.CausalLM.from_pretrained(str(path), "cuda", "float32")
        diff = (cpu.logits(ids) - gpu.logits(ids).cpu()).abs().max().item()
        print(f"logits cpu vs cuda (fp32): max |diff| = {diff:.2e}")
        gpu.attach_adapters(prge.AdapterOptions(rank=8, alpha=16))
        for a in gpu.adapters():
            a["lora_b"].normal_(0, 0.05)
        targets = torch.full((3, 24), -100)
        targets[:, -2] = ids[:, -1]
        batch = prge.TokenBatch(ids, targets)
        stream = prge.PerturbationStream(5)
        dual = gpu.plan_losses(batch, prge.PerturbationPlan.central_dual(stream, 0, 4, 1e-2))
        alone = [gpu.plan_losses(batch, prge.PerturbationPlan.single_query(stream, 0, 4, i % 4, s))[0]
                 for s in (1e-2, -1e-2) for i in range(4)]
        gap = max(abs(a - b) for a, b in zip(dual, alone))
        print(f"cuda dual vs one-at-a-time losses: max |diff| = {gap:.2e}")
        ok = diff < 1e-4 and gap < 1e-5
        print("GPU consistency:", "PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
