"""Evaluation: the scores a task kind's metrics are made of (prge.data.kinds), read off the
model in chunks of examples, each chunk one forward:

  options    (classification, multiple choice) the summed log-probability of every option's
             tokens after its example's prompt: one forward over every option of every example
             of the chunk (TokenBatch rows e0o0, e0o1, ..., e1o0, ...), or, where the chunk's
             examples share the same one-token label words, one forward of the prompts with
             every label word read off the answer position
  responses  (generation) the summed NLL of the reference response tokens
  answers    (generation, full evaluation) greedy answers through the KV-cache decoder

Under torchrun (`shard`: prge.distributed.Shard) each rank scores whole chunks, as a single
process does, and the ranks exchange the results."""
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


class Scorer:
    """What a task kind's evaluation reads off the model (the interface prge.data.kinds
    documents). `trainer`: a prge.Trainer (its unperturbed `score` / `answer_logprobs`);
    `model`: the model whose `generate` answers generation prompts (default trainer.model)."""

    def __init__(self, trainer, encoder: PromptEncoder, batch_size: int = 16, progress: bool = False,
                 shard=None, model=None):
        self.trainer, self.encoder, self.batch_size, self.progress, self.shard = \
            trainer, encoder, batch_size, progress, shard
        self.model = model

    def _chunks(self, examples: list, compute) -> list:
        return per_chunk(len(examples), self.batch_size, self.progress,
                         lambda start: compute(examples[start: start + self.batch_size]), self.shard)

    def option_logliks(self, examples: list[EncodedExample], partial: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(sums [n, K] float64: summed log-probability of each option's tokens after its
        example's prompt, -inf where an example has fewer than K options; counts [n, K] float64:
        the option's token count, 0 there); K the most options an example has. partial: of each
        candidate's partial-scoring continuation, after its context (EncodedExample.partial)."""
        encoder, trainer = self.encoder, self.trainer

        def scores(chunk: list[EncodedExample]) -> tuple[torch.Tensor, torch.Tensor]:
            if partial:
                nll, count = trainer.score(encoder.batch_partial(chunk))
                return _per_example(-nll.double(), count.double(), [len(e.options) for e in chunk])
            first = chunk[0].options
            shared = all(e.options == first for e in chunk)
            if encoder.single_token_labels and shared and all(len(o) == 1 for o in first):
                candidates = torch.tensor([o[0] for o in first], dtype=torch.int64)
                logp = trainer.answer_logprobs(encoder.batch(chunk, labels=[0] * len(chunk)), candidates).double()
                return logp, torch.ones_like(logp)
            nll, count = trainer.score(encoder.batch_options(chunk))  # [sum of option counts] each
            return _per_example(-nll.double(), count.double(), [len(e.options) for e in chunk])

        parts = self._chunks(examples, scores)
        width = max(p[0].shape[1] for p in parts)
        sums = torch.cat([_pad(p[0], width, -math.inf) for p in parts])
        counts = torch.cat([_pad(p[1], width, 0.0) for p in parts])
        return sums, counts

    def answer_nll(self, examples: list[EncodedExample]) -> tuple[torch.Tensor, torch.Tensor]:
        """(nll [n] float64: summed NLL of each reference response's tokens; counts [n] float64)."""

        def sums(chunk: list[EncodedExample]) -> tuple[torch.Tensor, torch.Tensor]:
            nll, count = self.trainer.score(self.encoder.batch(chunk))
            return nll.double(), count.double()

        parts = self._chunks(examples, sums)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def answer_metrics(self, examples: list[EncodedExample]) -> dict:
        """Mean exact match and token F1 of greedy answers (prge.generation.answer_metrics)."""
        from prge.generation import answer_metrics

        model = self.model if self.model is not None else self.trainer.model
        return answer_metrics(model, self.encoder, examples, self.encoder.tokenizer.stop_ids,
                              self.batch_size, shard=self.shard)


def _per_example(values: torch.Tensor, counts: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of consecutive examples' options ([sum(sizes)]) as [len(sizes), max(sizes)], padded
    with -inf (values) and 0 (counts)."""
    out = torch.full((len(sizes), max(sizes)), -math.inf, dtype=torch.float64)
    n = torch.zeros_like(out)
    start = 0
    for i, size in enumerate(sizes):
        out[i, :size] = values[start: start + size]
        n[i, :size] = counts[start: start + size]
        start += size
    return out, n


def _pad(t: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)


def option_scores(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
                  batch_size: int = 16, progress: bool = False, shard=None) -> torch.Tensor:
    """[n, K] float64 mean log-probability per token of each option (label word or candidate)
    after the example's prompt; -inf where an example has fewer than K options."""
    sums, counts = Scorer(trainer, encoder, batch_size, progress, shard).option_logliks(examples)
    return torch.where(counts > 0, sums / counts.clamp(min=1), sums)


def evaluate(trainer, encoder: PromptEncoder, examples: list[EncodedExample], batch_size: int = 16,
             progress: bool = False, shard=None, split: str = "eval", full: bool = False, model=None) -> dict:
    """The metrics of the task's kind on the examples (prge.data.kinds): accuracy and macro_f1
    (classification), accuracy and accuracy_raw (multiple choice; with `full`, accuracy_partial
    too where the examples have a shared continuation, WinoGrande), answer_nll and perplexity
    (generation; with `full`, also exact_match and token_f1 of greedy answers by `model`,
    default trainer.model). `full`: the metrics that take a forward or decoding of their own
    (the eval split's; the dev split's best-checkpoint pick reads the primary one only). `shard`: split over the ranks of a distributed run
    (prge.distributed.Shard). Raises ValueError naming `split` when there are no examples or
    any example's score is NaN or infinite: no metric then."""
    if not examples:
        raise ValueError(f"{split}: no evaluation examples")
    scorer = Scorer(trainer, encoder, batch_size, progress, shard, model)
    return encoder.task.kind.evaluate(scorer, examples, split, full)


def accuracy(trainer, encoder: PromptEncoder, examples: list[EncodedExample],
             batch_size: int = 16, progress: bool = False, split: str = "eval") -> float:
    return evaluate(trainer, encoder, examples, batch_size, progress, split=split)["accuracy"]
