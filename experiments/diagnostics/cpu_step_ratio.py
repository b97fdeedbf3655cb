"""A P-RGE dual step against prge's inference forward of the same 32 sequences on the CPU,
interleaved in one process (SmolLM2-135M shape, fp32, T = 64, q = 4, b = 4), so that a change
can be compared with the build before it on a noisy machine: run it under each build.

    python experiments/diagnostics/cpu_step_ratio.py
"""
import statistics
import time

import torch

import prge
from prge.models import shape_config
from prge.speed import random_batch


def main(rounds: int = 6) -> None:
    config = shape_config("smollm2-135m")
    model = prge.CausalLM.random(config, 0, "cpu", "float32")
    model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32))
    trainer = prge.Trainer(model, prge.EstimatorOptions("prge", 4, 1e-2, "central", "dual", rng="counter"),
                           prge.OptimizerOptions(lr=5e-5), 0)
    batch = random_batch(config.vocab_size, 4, 64)
    ids = random_batch(config.vocab_size, 32, 64).input_ids
    forward, step = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        model.hidden_states(ids)
        forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        trainer.step(batch)
        step.append(time.perf_counter() - start)
    f, s = statistics.median(forward[1:]), statistics.median(step[1:])
    print(f"{torch.get_num_threads()} threads: inference forward of 32 sequences {f:.2f} s, "
          f"P-RGE dual q=4 step {s:.2f} s, step / forward {s / f:.2f}")


if __name__ == "__main__":
    main()
