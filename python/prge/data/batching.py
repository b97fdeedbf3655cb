"""Tokenise prompts into right-padded TokenBatches in the MeZO format: targets hold the
answer tokens at the positions that predict them and IGNORE_INDEX elsewhere."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from prge._core import IGNORE_INDEX, TokenBatch
from prge.data.tasks import Example, Task

IGNORE = IGNORE_INDEX


@dataclass
class EncodedExample:
    prompt_ids: list[int]
    label: int


class PromptEncoder:
    def __init__(self, task: Task, tokenizer, max_length: int, pad_id: int = 0):
        self.task, self.tokenizer, self.max_length, self.pad_id = task, tokenizer, max_length, pad_id
        self.label_ids = [tokenizer.encode(w, add_special_tokens=False).ids for w in task.label_words]
        if any(len(ids) == 0 for ids in self.label_ids):
            raise ValueError(f"task '{task.name}': a label word encodes to no tokens")
        longest = max(len(ids) for ids in self.label_ids)
        if max_length <= longest + 1:
            raise ValueError(f"data.max_length={max_length} leaves no room for the prompt")
        self.single_token_labels = all(len(ids) == 1 for ids in self.label_ids)

    def encode(self, example: Example) -> EncodedExample:
        ids = self.tokenizer.encode(self.task.prompt(example), add_special_tokens=False).ids
        room = self.max_length - max(len(x) for x in self.label_ids)
        # Keep the end of the prompt (the question the label word answers).
        return EncodedExample(ids[-room:], example.label)

    def encode_all(self, examples: list[Example]) -> list[EncodedExample]:
        return [self.encode(e) for e in examples]

    def batch(self, encoded: list[EncodedExample], labels: list[int] | None = None) -> TokenBatch:
        """Prompt + label word per example (the gold label unless `labels` is given)."""
        labels = labels if labels is not None else [e.label for e in encoded]
        seqs = [(e.prompt_ids, self.label_ids[y]) for e, y in zip(encoded, labels)]
        width = max(len(p) + len(a) for p, a in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.int64)
        targets = torch.full((len(seqs), width), IGNORE, dtype=torch.int64)
        for i, (prompt, answer) in enumerate(seqs):
            full = prompt + answer
            ids[i, : len(full)] = torch.tensor(full)
            # position t predicts token t+1: the answer tokens are predicted from len(prompt)-1 on
            targets[i, len(prompt) - 1: len(full) - 1] = torch.tensor(answer)
        return TokenBatch(ids, targets)


class BatchSampler:
    """Seeded epoch-wise shuffling without replacement (same seed, same batches)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size > n:
            raise ValueError(f"data.batch_size={batch_size} exceeds the {n} training examples")
        self.n, self.batch_size, self.rng = n, batch_size, random.Random(seed)
        self.order: list[int] = []

    def next(self) -> list[int]:
        if len(self.order) < self.batch_size:
            epoch = list(range(self.n))
            self.rng.shuffle(epoch)
            self.order = epoch
        out, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        return out
