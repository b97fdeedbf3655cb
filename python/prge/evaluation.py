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
    """[n, classes] float64 mean log-probability of each label word's tokens after the example's
    prompt. A chunk whose examples share the same one-token label words is scored in one forward
    (every label word read off the answer position); otherwise one forward per label word."""
    classes = encoder.classes

    def scores(start: int) -> torch.Tensor:
        chunk = examples[start: start + batch_size]
        first = chunk[0].options
        if encoder.single_token_labels and all(len(o) == 1 for o in first) and all(e.options == first for e in chunk):
            candidates = torch.tensor([o[0] for o in first], dtype=torch.int64)
            return trainer.answer_logprobs(encoder.batch(chunk, labels=[0] * len(chunk)), candidates).double()
        out = torch.empty(len(chunk), classes, dtype=torch.float64)
        for c in range(classes):
            nll, count = trainer.score(encoder.batch(chunk, labels=[c] * len(chunk)))
            out[:, c] = (-nll / count).double()
        return out

    return torch.cat(per_chunk(len(examples), batch_size, progress, scores, shard))


def check_finite_scores(per_example: torch.Tensor, split: str) -> None:
    """An evaluation whose per-example scores ([n] or [n, classes]) are not all finite gives no
    result: ValueError naming the split and how many examples scored NaN or +-inf."""
    rows = per_example.reshape(per_example.shape[0], -1)
    bad = int((~torch.isfinite(rows)).any(1).sum().item())
    if bad:
        raise ValueError(f"{split}: {bad} of {rows.shape[0]} examples scored NaN or inf (non-finite log-likelihoods), "
                         "so no metric is reported: the model's activations overflow or its weights are not finite "
                         "(with model.dtype float16, try bfloat16 or float32)")


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
                      batch_size: int = 16, progress: bool = False, shard=None, split: str = "eval") -> dict:
    """Mean NLL per reference-answer token and its exponential, over all examples. Raises
    ValueError when an example's NLL is not finite (check_finite_scores)."""

    def sums(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        nll, count = trainer.score(encoder.batch(examples[start: start + batch_size]))
        return nll.double(), count.double()

    parts = per_chunk(len(examples), batch_size, progress, sums, shard)
    nll = torch.cat([p[0] for p in parts])
    check_finite_scores(nll, split)
    mean = nll.sum().item() / torch.cat([p[1] for p in parts]).sum().item()
    return {"answer_nll": mean, "perplexity": math.exp(min(mean, 700.0))}


def evaluate(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
             batch_size: int = 16, progress: bool = False, shard=None, split: str = "eval") -> dict:
    """accuracy and macro_f1 (classification) or answer_nll and perplexity (generation);
    `shard`: split over the ranks of a distributed run (prge.distributed.Shard). Raises
    ValueError naming `split` when any example's score is NaN or infinite: no metric then."""
    if not examples:
        raise ValueError(f"{split}: no evaluation examples")
    if encoder.task.generation:
        return answer_perplexity(trainer, encoder, examples, batch_size, progress, shard, split)
    scores = option_scores(trainer, encoder, examples, batch_size, progress, shard)
    check_finite_scores(scores, split)
    labels = torch.tensor([e.label for e in examples])
    return classification_metrics(scores.argmax(1), labels, encoder.classes)


def accuracy(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
             batch_size: int = 16, progress: bool = False, split: str = "eval") -> float:
    return evaluate(trainer, encoder, examples, batch_size, progress, split=split)["accuracy"]
