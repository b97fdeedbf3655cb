"""Accuracy in the MeZO protocol: the predicted class is the label word with the highest
mean log-likelihood given the prompt."""
from __future__ import annotations

import torch

from prge.data.batching import EncodedExample, PromptEncoder


def _chunks(n: int, batch_size: int, progress: bool):
    starts = range(0, n, batch_size)
    if progress and n > batch_size:
        try:
            from tqdm import tqdm

            return tqdm(starts, desc="eval", unit="batch", leave=False, dynamic_ncols=True)
        except ImportError:
            pass
    return starts


def option_scores(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
                  batch_size: int = 16, progress: bool = False) -> torch.Tensor:
    """[n, classes] mean log-probability of each label word."""
    classes = len(encoder.label_ids)
    out = torch.empty(len(examples), classes, dtype=torch.float64)
    if encoder.single_token_labels:
        # One forward per prompt scores every label word at the answer position.
        candidates = torch.tensor([ids[0] for ids in encoder.label_ids], dtype=torch.int64)
        for start in _chunks(len(examples), batch_size, progress):
            chunk = examples[start: start + batch_size]
            out[start: start + len(chunk)] = trainer.answer_logprobs(
                encoder.batch(chunk, labels=[0] * len(chunk)), candidates).double()
        return out
    for start in _chunks(len(examples), batch_size, progress):
        chunk = examples[start: start + batch_size]
        for c in range(classes):
            nll, count = trainer.score(encoder.batch(chunk, labels=[c] * len(chunk)))
            out[start: start + len(chunk), c] = (-nll / count).double()
    return out


def accuracy(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
             batch_size: int = 16, progress: bool = False) -> float:
    if not examples:
        raise ValueError("no evaluation examples")
    scores = option_scores(trainer, encoder, examples, batch_size, progress)
    labels = torch.tensor([e.label for e in examples])
    return (scores.argmax(1) == labels).double().mean().item()
