"""Evaluation. Classification in the MeZO protocol: the predicted class is the label word with
the highest mean log-likelihood given the prompt. Generation tasks: the perplexity of the
reference responses (mean NLL per response token)."""
from __future__ import annotations

import math

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
                      batch_size: int = 16, progress: bool = False) -> dict:
    """Mean NLL per reference-response token and its exponential, over all examples."""
    nll_sum, tokens = 0.0, 0.0
    for start in _chunks(len(examples), batch_size, progress):
        nll, count = trainer.score(encoder.batch(examples[start: start + batch_size]))
        nll_sum += nll.double().sum().item()
        tokens += count.double().sum().item()
    mean = nll_sum / tokens
    return {"answer_nll": mean, "perplexity": math.exp(min(mean, 700.0))}


def evaluate(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
             batch_size: int = 16, progress: bool = False) -> dict:
    """accuracy and macro_f1 (classification) or answer_nll and perplexity (generation)."""
    if not examples:
        raise ValueError("no evaluation examples")
    if encoder.task.generation:
        return answer_perplexity(trainer, encoder, examples, batch_size, progress)
    scores = option_scores(trainer, encoder, examples, batch_size, progress)
    labels = torch.tensor([e.label for e in examples])
    return classification_metrics(scores.argmax(1), labels, len(encoder.label_ids))


def accuracy(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
             batch_size: int = 16, progress: bool = False) -> float:
    return evaluate(trainer, encoder, examples, batch_size, progress)["accuracy"]
