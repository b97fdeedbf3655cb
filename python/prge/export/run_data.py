"""The training batches of a run, drawn exactly as `prge train` draws them, padded to the
exported step's static shape."""
from __future__ import annotations

import torch

from prge._core import IGNORE_INDEX, RunConfig
from prge.data.batching import BatchSampler
from prge.setup import setup_data


def pad_to(batch, length: int):
    ids, targets = batch.input_ids, batch.targets
    if ids.shape[1] > length:
        raise ValueError(f"a batch is {ids.shape[1]} tokens long, longer than data.max_length={length}")
    pad = length - ids.shape[1]
    return (torch.nn.functional.pad(ids, (0, pad), value=0),
            torch.nn.functional.pad(targets, (0, pad), value=IGNORE_INDEX))


class RunData:
    """The run's encoder, splits and training batches, as `prge train` builds them."""

    def __init__(self, config: RunConfig):
        self.setup = setup_data(config)  # the data `prge train` sees: same tokenizer, chat template, splits
        self.task, self.model_dir, self.encoder = self.setup.task, self.setup.model_dir, self.setup.encoder
        self.train, self.dev, self.eval = self.setup.train, self.setup.dev, self.setup.eval
        # K of the exported loss: the most answer tokens a training sequence has (its gold label word)
        self.answer_tokens = max(len(self.encoder.answer(e)) for e in self.train)
        self._sampler_args = (len(self.train), config.data.batch_size, config.run.seed)
        sampler = BatchSampler(*self._sampler_args)
        batches = [pad_to(self.encoder.batch([self.train[i] for i in sampler.next()]), config.data.max_length)
                   for _ in range(config.run.steps)]
        shape = (0, config.data.batch_size, config.data.max_length)
        self.input_ids = torch.stack([b[0] for b in batches]) if batches else torch.zeros(shape, dtype=torch.int64)
        self.targets = torch.stack([b[1] for b in batches]) if batches else torch.zeros(shape, dtype=torch.int64)

    def sampler_state(self, step: int) -> dict:
        """The data order's position after `step` batches (BatchSampler.state), for a checkpoint."""
        sampler = BatchSampler(*self._sampler_args)
        for _ in range(step):
            sampler.next()
        return sampler.state()
