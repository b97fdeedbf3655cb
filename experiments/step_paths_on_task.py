"""Where do a run's step paths part on real task batches? (issue 26: the paper protocol's ARC
runs diverged on the GPU and not on the CPU, experiments/results/NOTES.md session 14)

Builds the data and model of a `prge train` config as `prge train` does, then runs the same
batches (the run's sampler) through one fresh model per step path and prints each path's loss
every --log-every steps side by side:

  graphed   the device step captured as a CUDA graph per batch shape (the default on CUDA)
  fused     the same device step, uncaptured
  plain     the plain ATen path (host-side estimate, per-matrix update)
  cpu       the plain path on the CPU (--cpu; slow: one core-second or more a step at 135M)

A path whose losses leave the others' is where to look. estimator.rng: auto is pinned to counter
for every path (auto draws from torch on the CPU and from counter on CUDA, which would part the
CPU column from the first step for a zeroth-order config); --eval-first evaluates each model on
the eval split before its first step, as `prge train` does. Nothing is written.

Usage (GPU machine, after `source experiments/device/model.sh join`):
  python experiments/step_paths_on_task.py CONFIG.yaml --steps 60 [--cpu] [--set KEY=VALUE ...]
e.g. the FO-SGD ARC-Easy run of the paper sweep, from the config.yaml its run directory holds
(the sweep writes one per run):
  python experiments/step_paths_on_task.py RUN_DIR/config.yaml --steps 60 --cpu \
    --set model.name=$PRGE_MODEL --set model.device=cuda
Checked on the CPU with the FO-SGD ARC-Easy run's config: the paths' first two losses equal
`prge train`'s on it (6.17448, 6.80562).
"""
from __future__ import annotations

import argparse
import sys

import torch

from prge._core import Trainer
from prge.cli import _load_config
from prge.data.batching import BatchSampler
from prge.evaluation import evaluate
from prge.setup import setup_data, setup_model

PATHS = {"graphed": (True, True), "fused": (True, False), "plain": (False, False)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--cpu", action="store_true", help="also the plain path on the CPU")
    parser.add_argument("--eval-first", action="store_true", help="evaluate before the first step, as prge train does")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.log_every > args.steps:
        parser.error(f"--log-every {args.log_every} is more than --steps {args.steps}: nothing would be printed")
    config = _load_config(args.config, args.set)
    if config.estimator.rng == "auto":
        config = _load_config(args.config, args.set + ["estimator.rng=counter"])
        print("estimator.rng: auto pinned to counter on every path (the same z on the CPU as on CUDA)")
    data = setup_data(config)
    sampler = BatchSampler(len(data.train), config.data.batch_size, config.run.seed)
    batches = [data.encoder.batch([data.train[i] for i in sampler.next()]) for _ in range(args.steps)]
    paths = dict(PATHS)
    devices = {name: config.model.device for name in paths}
    if args.cpu:
        paths["cpu"], devices["cpu"] = (False, False), "cpu"
    losses = {}
    for name, (fused, graphs) in paths.items():
        model = setup_model(config, data, device=devices[name])
        torch.manual_seed(config.run.seed)
        trainer = Trainer(model, config.estimator, config.optimizer, config.run.seed, fused_step=fused,
                          cuda_graphs=graphs)
        print(f"{name}: {trainer.step_path}", flush=True)
        if args.eval_first:
            metrics = evaluate(trainer, data.encoder, data.eval, full=True, model=model)
            print(f"{name}: before training {metrics}", flush=True)
        losses[name] = [trainer.step(batch).loss for batch in batches]
    print("step | " + " | ".join(paths))
    for s in range(args.log_every - 1, args.steps, args.log_every):
        print(f"{s + 1} | " + " | ".join(f"{losses[name][s]:.6g}" for name in paths), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
