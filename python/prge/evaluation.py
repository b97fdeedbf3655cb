"""Evaluation. Classification in the MeZO protocol: the predicted class is the label word with
the highest mean log-likelihood given the prompt. Generation tasks: the perplexity of the
reference responses (mean NLL per response token)."""
from __future__ import annotations

import math

import torch

from prge.data.batching import EncodedExample, PromptEncoder


def per_chunk(n: int, batch_size: int, progress: bool, compute, shard=None) -> list:
    """compute(start) for the start of every chunk of batch_size examples, in order. `shard`
    (prge.distributed.Shard): each rank computes whole chunks, as a single process does, and
    the ranks exchange the results."""
    starts = list(range(0, n, batch_size))
    mine = starts if shard is None else shard.mine(starts)
    shown = mine
    if progress and len(mine) > 1:
        try:
            from tqdm import tqdm

            shown = tqdm(mine, desc="eval", unit="batch", leave=False, dynamic_ncols=True)
        except ImportError:
            pass
    results = {start: compute(start) for start in shown}
    if shard is not None:
        results = shard.gather(results)
    return [results[start] for start in starts]


def option_scores(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
                  batch_size: int = 16, progress: bool = False, shard=None) -> torch.Tensor:
    """[n, classes] mean log-probability of each label word."""
    classes = len(encoder.label_ids)
    candidates = torch.tensor([ids[0] for ids in encoder.label_ids], dtype=torch.int64)

    def scores(start: int) -> torch.Tensor:
        chunk = examples[start: start + batch_size]
        if encoder.single_token_labels:  # one forward scores every label word at the answer position
            return trainer.answer_logprobs(encoder.batch(chunk, labels=[0] * len(chunk)), candidates).double()
        out = torch.empty(len(chunk), classes, dtype=torch.float64)
        for c in range(classes):
            nll, count = trainer.score(encoder.batch(chunk, labels=[c] * len(chunk)))
            out[:, c] = (-nll / count).double()
        return out

    return torch.cat(per_chunk(len(examples), batch_size, progress, scores, shard))


def classification_metrics(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> dict:
    """Accuracy and macro-F1 (mean over classes of 2·TP / (2·TP + FP + FN)); macro-F1 does
    not reward always answering the majority class (at most 1 / classes for it)."""
    f1 = []
    for c in range(classes):
        tp = ((predicted == c) & (labels == c)).sum().item()
        wrong = ((predicted == c) != (labels == c)).sum().item()  # FP + FN
        f1.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return {"accuracy": (predicted == labels).double().mean().item(), "macro_f1": sum(f1) / classes}


def majority_baseline(examples: list[EncodedExample], classes: int) -> dict:
    """The metrics of always answering the most frequent label: the trivial baseline."""
    labels = torch.tensor([e.label for e in examples])
    majority = labels.bincount(minlength=classes).argmax()
    return classification_metrics(torch.full_like(labels, majority.item()), labels, classes)


def answer_perplexity(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
                      batch_size: int = 16, progress: bool = False, shard=None) -> dict:
    """Mean NLL per reference-response token and its exponential, over all examples."""

    def sums(start: int) -> tuple[float, float]:
        nll, count = trainer.score(encoder.batch(examples[start: start + batch_size]))
        return nll.double().sum().item(), count.double().sum().item()

    nll_sum, tokens = 0.0, 0.0
    for nll, count in per_chunk(len(examples), batch_size, progress, sums, shard):
        nll_sum += nll
        tokens += count
    mean = nll_sum / tokens
    return {"answer_nll": mean, "perplexity": math.exp(min(mean, 700.0))}


def evaluate(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
             batch_size: int = 16, progress: bool = False, shard=None) -> dict:
    """accuracy and macro_f1 (classification) or answer_nll and perplexity (generation);
    `shard`: split over the ranks of a distributed run (prge.distributed.Shard)."""
    if not examples:
        raise ValueError("no evaluation examples")
    if encoder.task.generation:
        return answer_perplexity(trainer, encoder, examples, batch_size, progress, shard)
    scores = option_scores(trainer, encoder, examples, batch_size, progress, shard)
    labels = torch.tensor([e.label for e in examples])
    return classification_metrics(scores.argmax(1), labels, len(encoder.label_ids))


def accuracy(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
             batch_size: int = 16, progress: bool = False) -> float:
    return evaluate(trainer, encoder, examples, batch_size, progress)["accuracy"]
