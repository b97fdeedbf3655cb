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
    answer_ids: list[int] | None = None  # generation tasks: the response tokens


class PromptEncoder:
    """Prompt (+ label word or response) token ids. Classification tasks score their label
    words; generation tasks train on their response tokens. With a chat template (jinja, as
    in the model's tokenizer_config.json) the prompt is rendered as one user turn followed by
    the assistant's generation prompt."""

    def __init__(self, task: Task, tokenizer, max_length: int, pad_id: int = 0,
                 chat_template: str | None = None):
        self.task, self.tokenizer, self.max_length, self.pad_id = task, tokenizer, max_length, pad_id
        self.chat = compile_chat_template(chat_template) if chat_template else None
        if task.chat_template and self.chat is None:
            raise ValueError("data.chat_template: true, but the model directory has no chat template "
                             "(chat_template.jinja or tokenizer_config.json)")
        self.label_ids = [tokenizer.encode(w, add_special_tokens=False).ids for w in task.label_words]
        if any(len(ids) == 0 for ids in self.label_ids):
            raise ValueError(f"task '{task.name}': a label word encodes to no tokens")
        longest = max((len(ids) for ids in self.label_ids), default=1)
        if max_length <= longest + 1:
            raise ValueError(f"data.max_length={max_length} leaves no room for the prompt")
        self.single_token_labels = bool(self.label_ids) and all(len(ids) == 1 for ids in self.label_ids)

    def prompt_text(self, example: Example) -> str:
        text = self.task.prompt(example)
        if self.chat is None:
            return text
        return self.chat.render(messages=[{"role": "user", "content": text}], add_generation_prompt=True,
                                bos_token="", eos_token="")

    def encode(self, example: Example) -> EncodedExample:
        ids = self.tokenizer.encode(self.prompt_text(example), add_special_tokens=False).ids
        if example.response is not None:
            answer = self.tokenizer.encode(example.response, add_special_tokens=False).ids
            if not answer:
                raise ValueError(f"data.response_field: a response encodes to no tokens ({example.response!r})")
            answer = answer[: self.max_length // 2]
            return EncodedExample(ids[-(self.max_length - len(answer)):], -1, answer)
        room = self.max_length - max(len(x) for x in self.label_ids)
        # Keep the end of the prompt (the question the label word answers).
        return EncodedExample(ids[-room:], example.label)

    def encode_all(self, examples: list[Example]) -> list[EncodedExample]:
        return [self.encode(e) for e in examples]

    def answer(self, e: EncodedExample, label: int | None = None) -> list[int]:
        if e.answer_ids is not None:
            return e.answer_ids
        return self.label_ids[e.label if label is None else label]

    def batch(self, encoded: list[EncodedExample], labels: list[int] | None = None) -> TokenBatch:
        """Prompt + answer per example: the response of a generation task, else the label word
        of the gold label unless `labels` is given."""
        labels = labels if labels is not None else [None] * len(encoded)
        seqs = [(e.prompt_ids, self.answer(e, y)) for e, y in zip(encoded, labels)]
        width = max(len(p) + len(a) for p, a in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.int64)
        targets = torch.full((len(seqs), width), IGNORE, dtype=torch.int64)
        for i, (prompt, answer) in enumerate(seqs):
            full = prompt + answer
            ids[i, : len(full)] = torch.tensor(full)
            # position t predicts token t+1: the answer tokens are predicted from len(prompt)-1 on
            targets[i, len(prompt) - 1: len(full) - 1] = torch.tensor(answer)
        return TokenBatch(ids, targets)


def compile_chat_template(source: str):
    try:
        import jinja2
    except ImportError as e:
        raise ImportError("data.chat_template needs jinja2 (pip install jinja2)") from e
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source)


def load_chat_template(model_dir) -> str | None:
    """The chat template of a model directory (chat_template.jinja, or tokenizer_config.json's
    chat_template as older transformers wrote it), if it has one."""
    import json
    from pathlib import Path

    jinja = Path(model_dir) / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = Path(model_dir) / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template") if config.is_file() else None
    return template if isinstance(template, str) else None


class BatchSampler:
    """Seeded epoch-wise shuffling without replacement (same seed, same batches)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size > n:
            raise ValueError(f"data.batch_size={batch_size} exceeds the {n} training examples")
        self.n, self.batch_size, self.rng = n, batch_size, random.Random(seed)
        self.order: list[int] = []

    def state(self) -> dict:
        """The data-order position, JSON-serialisable (saved with checkpoints)."""
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss], "order": list(self.order)}

    def set_state(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.order = list(state["order"])

    def next(self) -> list[int]:
        if len(self.order) < self.batch_size:
            epoch = list(range(self.n))
            self.rng.shuffle(epoch)
            self.order = epoch
        out, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        return out
