"""Task kinds, as lm-evaluation-harness's output types: what an example's answer is, how it
becomes training targets, and how a split is evaluated. Training, evaluation and setup call
the kind of their task (`task.kind`) and never branch on it.

  kind             answers after the prompt           loss on                 evaluation metrics
  classification   the task's label words, the same   the gold word's tokens  accuracy: the word with the highest
                   for every example                                          mean log-likelihood per token; macro_f1
  multiple_choice  the example's own candidates       the gold candidate's    accuracy: the candidate with the highest
                   (Example.choices)                  tokens                  mean log-likelihood per token (MeZO's
                                                                              score, length-normalised); accuracy_raw:
                                                                              the highest summed log-likelihood
                                                                              (lm-evaluation-harness's `acc`);
                                                                              with `full`, accuracy_partial where the
                                                                              candidates share a continuation
                                                                              (WinoGrande): its summed log-likelihood
                                                                              after each one's own context, on
                                                                              lm-evaluation-harness's texts (its
                                                                              WinoGrande `acc`; a second forward)
  generation       the response (+ EOS / end of turn)  the response tokens    answer_nll, perplexity; with `full`:
                                                                              exact_match, token_f1 of greedy answers

Answer tokens are what the whole string prompt + answer yields after the prompt's tokens
(prge.data.batching.PromptEncoder). A kind works on a `scorer` (prge.evaluation.Scorer):

  scorer.option_logliks(encoded, partial=False) -> (sums [n, K] float64 summed log-probability
          of each option's tokens (partial: of its partial-scoring continuation's, after its
          context: EncodedExample.partial), -inf where an example has fewer than K options;
          counts [n, K] float64 tokens summed, 0 there)
  scorer.answer_nll(encoded)     -> (nll [n] float64 summed NLL of the response tokens, counts [n])
  scorer.answer_metrics(encoded) -> {"exact_match", "token_f1"} of greedy answers

A kind's `evaluate` raises ValueError naming the split when a score is NaN or infinite."""
from __future__ import annotations

import math

import torch

from prge.whitespace import emptiness, shown_names, shown_value


def check_finite_scores(scores: torch.Tensor, split: str, valid: torch.Tensor | None = None) -> None:
    """An evaluation whose per-example scores ([n] or [n, K]; only the entries where `valid`,
    of the same shape, is True) are not all finite gives no result: ValueError naming the
    split and how many examples scored NaN or +-inf."""
    rows = scores.reshape(scores.shape[0], -1)
    bad = ~torch.isfinite(rows)
    if valid is not None:
        bad &= valid.reshape(rows.shape)
    count = int(bad.any(1).sum().item())
    if count:
        raise ValueError(f"{split}: {count} of {rows.shape[0]} examples scored NaN or inf (non-finite "
                         "log-likelihoods), so no metric is reported: the model's activations overflow or its "
                         "weights are not finite (with model.dtype float16, try bfloat16 or float32)")


def classification_metrics(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> dict:
    """Accuracy and macro-F1 (mean of 2·TP / (2·TP + FP + FN) over the classes among the labels
    or the predictions, as sklearn's f1_score(average="macro") without `labels`: a class of
    data.label_words that neither holds is not counted as an F1 of 0) of predicted [n] against
    labels [n] (class ids below `classes`); macro-F1 does not reward always answering the
    majority class."""
    f1 = []
    for c in range(classes):
        tp = ((predicted == c) & (labels == c)).sum().item()
        wrong = ((predicted == c) != (labels == c)).sum().item()  # FP + FN
        if tp + wrong:
            f1.append(2 * tp / (2 * tp + wrong))
    return {"accuracy": (predicted == labels).double().mean().item(), "macro_f1": sum(f1) / len(f1) if f1 else 0.0}


def _labels(encoded) -> torch.Tensor:
    return torch.tensor([e.label for e in encoded], dtype=torch.int64)


class TaskKind:
    """What a kind decides. `primary`: the metric the best checkpoint is picked by (higher is
    better unless `higher_is_better` is False)."""
    name = ""
    primary = "accuracy"
    higher_is_better = True

    def check(self, task, example, where: str) -> None:
        """ValueError naming `where` when the example's answer does not fit the kind."""
        raise NotImplementedError

    def encode(self, encoder, examples: list, full: bool = True) -> list:
        """[EncodedExample] of the examples (prge.data.batching.PromptEncoder's encodings). `full`:
        also what only `evaluate(..., full=True)` reads (False for the training and dev splits:
        what they are trained on or picked by is encoded)."""
        raise NotImplementedError

    def evaluate(self, scorer, encoded: list, split: str, full: bool = False) -> dict:
        raise NotImplementedError

    def baseline(self, task, encoded: list) -> tuple[str, dict] | None:
        """(a log phrase, summary fields) of the trivial answer on these examples, or None."""
        return None

    def describe(self, metrics: dict) -> str:
        """One log phrase of an evaluation's metrics."""
        raise NotImplementedError

    def change(self, before: dict, after: dict) -> str:
        """One log phrase of the metrics before and after training."""
        return f"{self.primary} {before[self.primary]:.4f} -> {after[self.primary]:.4f}"

    def results(self, before: dict, after: dict) -> dict:
        """Summary fields beyond {primary}_before / _after / _best."""
        return {}

    def __repr__(self) -> str:
        return self.name


class Classification(TaskKind):
    name = "classification"

    def check(self, task, example, where):
        if not 0 <= example.label < len(task.label_words):
            raise ValueError(f"{where}: label {example.label} is outside 0..{len(task.label_words) - 1} "
                             f"({shown_names(task.label_words)})")

    def encode(self, encoder, examples, full=True):
        return encoder.encode_options(examples, [encoder.task.label_words] * len(examples),
                                      "label word {} (data.label_words)")

    def evaluate(self, scorer, encoded, split, full=False):
        sums, counts = scorer.option_logliks(encoded)
        mean = sums / counts
        check_finite_scores(mean, split)
        return classification_metrics(mean.argmax(1), _labels(encoded), mean.shape[1])

    def baseline(self, task, encoded):
        labels = _labels(encoded)
        classes = len(task.label_words)
        majority = labels.bincount(minlength=classes).argmax().item()
        trivial = classification_metrics(torch.full_like(labels, majority), labels, classes)
        return (f"always answering the majority class: accuracy {trivial['accuracy']:.4f}, "
                f"macro-F1 {trivial['macro_f1']:.4f}", {"majority_accuracy": trivial["accuracy"]})

    def describe(self, metrics):
        return f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"

    def change(self, before, after):
        return (f"accuracy {before['accuracy']:.4f} -> {after['accuracy']:.4f}, "
                f"macro-F1 {before['macro_f1']:.4f} -> {after['macro_f1']:.4f}")

    def results(self, before, after):
        return {"macro_f1_before": before["macro_f1"], "macro_f1_after": after["macro_f1"]}


class MultipleChoice(TaskKind):
    name = "multiple_choice"

    def check(self, task, example, where):
        if len(example.choices) < 2:
            raise ValueError(f"{where}: {len(example.choices)} candidate(s); multiple choice needs at least 2")
        seen = {}
        for i, choice in enumerate(example.choices):
            text = str(choice).strip()
            if why := emptiness(text):
                raise ValueError(f"{where}: candidate {i} {why}")
            if text in seen:  # equal scores: the argmax would pick by position, not by the model
                raise ValueError(f"{where}: candidates {seen[text]} and {i} are the same text {shown_value(text)}")
            seen[text] = i
        if not 0 <= example.label < len(example.choices):
            raise ValueError(f"{where}: the answer index {example.label} is outside 0..{len(example.choices) - 1} "
                             "(its candidates)")
        pairs = example.partial_scoring
        if pairs and len(pairs) != len(example.choices):
            raise ValueError(f"{where}: {len(pairs)} partial-scoring pairs for {len(example.choices)} candidates")
        if pairs and len({continuation for _, continuation in pairs}) != 1:
            raise ValueError(f"{where}: its partial-scoring continuations differ; partial scoring compares one "
                             "shared continuation")

    def encode(self, encoder, examples, full=True):
        encoded = encoder.encode_options(examples, [e.choices for e in examples], "candidate {}")
        partial = [bool(e.partial_scoring) for e in examples]
        if full and any(partial):  # one metric over all examples or none; read by full evaluation only
            if not all(partial):
                where = examples[partial.index(False)].where or "an example"
                raise ValueError(f"{where}: has no partial-scoring texts, and other examples of the split have")
            encoder.encode_partial(examples, encoded)
        return encoded

    def evaluate(self, scorer, encoded, split, full=False):
        sums, counts = scorer.option_logliks(encoded)
        valid = counts > 0
        mean = torch.where(valid, sums / counts.clamp(min=1), torch.full_like(sums, -math.inf))
        check_finite_scores(mean, split, valid)
        labels = _labels(encoded)
        metrics = {"accuracy": (mean.argmax(1) == labels).double().mean().item(),
                   "accuracy_raw": (sums.argmax(1) == labels).double().mean().item()}
        if full and all(e.partial is not None for e in encoded):  # lm-evaluation-harness's WinoGrande score
            partial, counts = scorer.option_logliks(encoded, partial=True)
            check_finite_scores(partial, split, counts > 0)
            metrics["accuracy_partial"] = (partial.argmax(1) == labels).double().mean().item()
        return metrics

    def baseline(self, task, encoded):
        chance = sum(1.0 / len(e.options) for e in encoded) / len(encoded)
        return f"choosing at random: accuracy {chance:.4f}", {"chance_accuracy": chance}

    def describe(self, metrics):
        partial = f", {metrics['accuracy_partial']:.4f} (partial)" if "accuracy_partial" in metrics else ""
        return (f"accuracy {metrics['accuracy']:.4f} (mean log-likelihood per token), "
                f"{metrics['accuracy_raw']:.4f} (summed){partial}")

    def change(self, before, after):
        partial = (f"; partial: {before['accuracy_partial']:.4f} -> {after['accuracy_partial']:.4f}"
                   if "accuracy_partial" in before and "accuracy_partial" in after else "")
        return (f"accuracy {before['accuracy']:.4f} -> {after['accuracy']:.4f} "
                f"(summed log-likelihood: {before['accuracy_raw']:.4f} -> {after['accuracy_raw']:.4f}{partial})")

    def results(self, before, after):
        out = {"accuracy_raw_before": before["accuracy_raw"], "accuracy_raw_after": after["accuracy_raw"]}
        if "accuracy_partial" in before and "accuracy_partial" in after:
            out |= {"accuracy_partial_before": before["accuracy_partial"],
                    "accuracy_partial_after": after["accuracy_partial"]}
        return out


class Generation(TaskKind):
    name = "generation"
    primary = "perplexity"
    higher_is_better = False

    def check(self, task, example, where):
        if why := "is empty" if example.response is None else emptiness(example.response):
            field = shown_value(task.response_field or "response")
            raise ValueError(f"{where}: field {field} (data.response_field) {why}")

    def encode(self, encoder, examples, full=True):
        return encoder.encode_responses(examples)

    def evaluate(self, scorer, encoded, split, full=False):
        nll, counts = scorer.answer_nll(encoded)
        check_finite_scores(nll, split)
        mean = nll.sum().item() / counts.sum().item()
        metrics = {"answer_nll": mean, "perplexity": math.exp(min(mean, 700.0))}
        if full:  # greedy answers through the KV-cache decoder, SQuAD-style scores
            metrics.update(scorer.answer_metrics(encoded))
        return metrics

    def describe(self, metrics):
        text = f"answer perplexity {metrics['perplexity']:.4f}"
        if "exact_match" in metrics:
            text += f", exact match {metrics['exact_match']:.4f}, token F1 {metrics['token_f1']:.4f}"
        return text

    def change(self, before, after):
        text = f"answer perplexity {before['perplexity']:.4f} -> {after['perplexity']:.4f}"
        for key, name in (("exact_match", "exact match"), ("token_f1", "token F1")):
            if key in after:
                text += f", {name} " + (f"{before[key]:.4f} -> " if key in before else "") + f"{after[key]:.4f}"
        return text

    def results(self, before, after):
        return {"exact_match_after": after["exact_match"], "token_f1_after": after["token_f1"]}


CLASSIFICATION = Classification()
MULTIPLE_CHOICE = MultipleChoice()
GENERATION = Generation()
KINDS = {k.name: k for k in (CLASSIFICATION, MULTIPLE_CHOICE, GENERATION)}
