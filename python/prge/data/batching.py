"""Prompts (+ answers) as right-padded TokenBatches in the MeZO format: targets hold the answer
tokens at the positions that predict them and IGNORE_INDEX elsewhere.

Tokens come from the model's own tokenizer through transformers (prge.data.tokens), and every
sequence is the encoding of one whole string, as lm-evaluation-harness builds it:

  context = enc(prompt)            whole = enc(prompt + answer)
  k       = the length of their common prefix (len(context) unless the last prompt token and
            the first answer token merge, e.g. a prompt ending in a space before a word)
  prompt tokens = whole[:k]        answer tokens = whole[k:]

so the model is trained and scored on exactly the tokens transformers gives the full text, BOS /
EOS included (add_special_tokens for plain prompts; with a chat template the rendered text,
which writes its own BOS, is encoded without added specials, as apply_chat_template does). When
the boundary tokens merge, the merged token counts as answer, and the prompt keeps only the
tokens both encodings share. Where an example has several options (the label words of a
classification task, the candidates of a multiple-choice example), one k serves all of them
(the smallest of theirs), so every option is scored after the very same prompt tokens and
their log-likelihoods compare.

Answers (which ones is the task kind's choice, prge.data.kinds):
  options               each option text, appended to the prompt as written (" positive",
                        " the sun was rising."); an EOS the tokenizer appends to every text
                        (add_eos_token) is not an option's token
  generation, plain     the response, then the tokenizer's EOS token (none when the tokenizer
                        defines none; not twice when its post-processor appends one)
  generation, chat      what the chat template writes for the assistant turn after the
                        generation prompt, up to and including the first of the model's stop
                        ids (its end-of-turn token, e.g. SmolLM2's '4<|im_end|>'); trailing
                        whitespace after the turn is not a target, and what the template writes
                        in the turn before the reply (Qwen3's empty <think></think>) is prompt.
                        A template that leaves out the user's text is refused.

Truncation to data.max_length keeps the end of the prompt (the question the answer answers)
and its start: BOS where the sequence starts with it, and with a chat template everything the
template writes before and after the user's text (BOS, a system prompt, the turn markers, the
generation prompt: found where the user's text lies in the rendered prompt), so that only the
start of the user's text is dropped and the model still reads a well-formed conversation;
a response that does not fit whole beside its prompt keeps its first max(max_length // 2,
max_length - prompt tokens) tokens."""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace

import torch

from prge._core import IGNORE_INDEX, TokenBatch
from prge.data.examples import Example, Task
from prge.data.tokens import ModelTokenizer, common_prefix
from prge.jsonl import is_json_int
from prge.whitespace import shown_value

IGNORE = IGNORE_INDEX


@dataclass
class EncodedExample:
    prompt_ids: list[int]
    label: int                                # gold option; -1 for generation tasks
    answer_ids: list[int] | None = None       # generation: the response tokens (+ EOS / end of turn)
    options: list[list[int]] | None = None    # label words / candidates: each one's tokens after prompt_ids
    reference: str | None = None              # generation: the response as the data writes it (EM / F1)
    answer_length: int = 0                    # generation: len(answer_ids) before data.max_length cut it
    partial: list[tuple[list[int], list[int]]] | None = None  # partial scoring: each candidate's
                                              # (context, continuation) tokens (Example.partial_scoring)


MIN_KEPT_PROMPT_TOKENS = 8  # a prompt cut shorter than this is warned about
REPLY_MARKER = "prge-reply-marker"  # a reply that finds where a chat template writes the assistant's text


def _whitespace_to_continuation(context: str, continuation: str) -> tuple[str, str]:
    """(context, continuation) with the context's trailing whitespace moved to the continuation's
    start, as lm-evaluation-harness's request encoding moves it."""
    kept = context.rstrip()
    return kept, context[len(kept):] + continuation


class PromptEncoder:
    """Encodes a task's examples with a model's tokenizer (see the module docstring).

    encode_all(examples) -> [EncodedExample] (through the task kind's `encode`);
    batch(encoded, labels=None) -> TokenBatch [b, T]: one sequence per example (its gold option
    or response), right-padded with pad_id; batch_options(encoded) -> TokenBatch [sum of the
    examples' option counts, T]: every option of every example; batch_partial(encoded): every
    candidate's partial-scoring context and continuation (WinoGrande). Data mistakes raise ValueError
    naming the example's record (Example.where) and the field, label word or candidate."""

    def __init__(self, task: Task, tokenizer: ModelTokenizer, max_length: int, pad_id: int = 0):
        self.task, self.tokenizer, self.max_length, self.pad_id = task, tokenizer, max_length, pad_id
        # prompts fitted, cut to fit, the longest and the fewest tokens a cut one kept
        self.fitted, self.cut, self.longest, self.fewest_kept = 0, 0, 0, max_length
        # responses encoded, cut to fit (at least their first max_length // 2 tokens kept), the longest
        self.responses, self.responses_cut, self.longest_response = 0, 0, 0
        # partial-scoring contexts fitted, cut to fit, the fewest tokens a cut one kept (BOS not counted)
        self.partial_fitted, self.partial_cut, self.partial_fewest_kept = 0, 0, max_length
        self.chat = bool(task.chat_template)
        if self.chat:
            tokenizer.require_chat_template("data.chat_template: true")
        # Evaluation scores all label words in one forward read off the answer position where
        # each is one token after the same prompt (False: every option as its own sequence; the
        # same numbers, for tests).
        self.single_token_labels = True

    def prompt_text(self, example: Example) -> str:
        """The prompt as the model reads it: the task's template, wrapped in one user turn and
        the assistant's generation prompt by the chat template when data.chat_template is set."""
        text = self.task.prompt(example)
        if not self.chat:
            return text
        rendered = self.tokenizer.chat_prompt(text)
        if text.strip() not in rendered:  # e.g. a template that renders only a list of content parts
            raise ValueError(f"{self._where(example)}: the chat template of {self.tokenizer.model_dir} does not write "
                             "the user's text into the conversation (it renders the prompt without it), so the model "
                             "would read the same prompt for every example")
        return rendered

    def _prompt_and_whole(self, example: Example, prompt: str) -> tuple[str, str]:
        """(prompt, prompt + response) as texts (generation tasks). With a chat template, what the
        template writes in the assistant's turn before the reply (Qwen3's empty <think></think>
        block) belongs to the prompt: the reply alone, then its end of turn, is the answer."""
        if not self.chat:
            return prompt, prompt + example.response
        full = self.tokenizer.chat_turn(self.task.prompt(example), example.response).rstrip()
        if not full.startswith(prompt):
            raise ValueError(f"{self.tokenizer.model_dir}: the chat template does not write the conversation with the "
                             "assistant's turn as a continuation of its generation prompt, so the response tokens "
                             f"cannot be told apart ({example.where or 'an example'})")
        # The template's own text before the reply: where it writes a marker reply (the same for
        # every example). When the real conversation starts with it, it is prompt; a template that
        # rewrites the reply itself (Qwen3 splitting a <think> block off it) keeps it as answer.
        marked = self.tokenizer.chat_turn(self.task.prompt(example), REPLY_MARKER)
        at = marked.find(REPLY_MARKER, len(prompt)) if marked.startswith(prompt) else -1
        preamble = marked[len(prompt):at] if at >= 0 else ""
        if preamble.strip() and full.startswith(prompt + preamble):
            return prompt + preamble, full
        return prompt, full

    def encode(self, example: Example) -> EncodedExample:
        return self.encode_all([example])[0]

    def encode_all(self, examples: list[Example], full: bool = True) -> list[EncodedExample]:
        """All examples, encoded as their task's kind says (prge.data.kinds); full=False for
        examples trained on or scored by the primary metric only (the training and dev splits):
        what only a full evaluation reads, partial-scoring pairs, is left out."""
        return self.task.kind.encode(self, examples, full)

    def encode_options(self, examples: list[Example], options: list, what: str = "option {}") -> list[EncodedExample]:
        """Examples whose answer is one of several texts: options[i] holds example i's option
        texts (label words, or its candidates), each appended to the prompt as written; the gold
        one is options[i][example.label]. One batched tokenizer call for the prompts and every
        prompt + option text. `what` names an option in errors ("label word {} (data.label_words)",
        the option shown by shown_value)."""
        prompts = [self.prompt_text(e) for e in examples]
        wholes = [p + text for p, texts in zip(prompts, options) for text in texts]
        ids = self.tokenizer.encode(prompts + wholes, specials=not self.chat)
        contexts, whole_ids = ids[: len(prompts)], ids[len(prompts):]
        suffix = [] if self.chat else self.tokenizer.end_specials
        if suffix:  # an EOS the tokenizer appends to every text (add_eos_token) is no option's own token
            whole_ids = [w[: -len(suffix)] if w[-len(suffix):] == suffix else w for w in whole_ids]
        out, start = [], 0
        for example, context, texts in zip(examples, contexts, options):
            out.append(self._with_options(example, context, whole_ids[start: start + len(texts)], texts, what))
            start += len(texts)
        return out

    def encode_partial(self, examples: list[Example], encoded: list[EncodedExample]) -> None:
        """Sets each encoded example's `partial` from its Example.partial_scoring: lm-evaluation-
        harness's request pairs, tokenized as it tokenizes them: the context alone, and the
        continuation as the tokens of context + continuation past as many as the context alone
        has (BOS where the tokenizer writes one; never the task's template or chat template).
        A context's trailing whitespace moves to its continuation first, as lm-evaluation-harness
        moves it. The context's start is dropped (BOS kept) where both pass data.max_length. One batched
        tokenizer call. ValueError naming the record where a pair is not one per candidate or a
        continuation has no tokens of its own."""
        pairs = [_whitespace_to_continuation(*pair) for e in examples for pair in e.partial_scoring]
        ids = self.tokenizer.encode([c for c, _ in pairs] + [c + t for c, t in pairs], specials=True)
        suffix = self.tokenizer.end_specials
        if suffix:  # an EOS the tokenizer appends to every text (add_eos_token) is neither's
            ids = [i[: -len(suffix)] if i[-len(suffix):] == suffix else i for i in ids]
        contexts, wholes = ids[: len(pairs)], ids[len(pairs):]
        start = 0
        for example, e in zip(examples, encoded):
            n = len(example.partial_scoring)
            if n != len(e.options):
                raise ValueError(f"{self._where(example)}: {n} partial-scoring pairs for {len(e.options)} candidates")
            e.partial = [self._fit_partial(example, c, w) for c, w in zip(contexts[start: start + n],
                                                                          wholes[start: start + n])]
            start += n

    def _fit_partial(self, example: Example, context: list[int], whole: list[int]) -> tuple[list[int], list[int]]:
        continuation = whole[len(context):]
        if not continuation:
            raise ValueError(f"{self._where(example)}: the words after the blank tokenize to no tokens after the "
                             "sentence up to the option (partial scoring)")
        bos = int(self.tokenizer.bos_id is not None and context[:1] == [self.tokenizer.bos_id])
        room = self.max_length - len(continuation)
        if room < 1 + bos:
            raise ValueError(f"{self._where(example)}: data.max_length={self.max_length} leaves no room for the "
                             f"context beside its {len(continuation)}-token continuation (partial scoring)")
        self.partial_fitted += 1
        if len(context) > room:
            context = context[:bos] + context[len(context) - (room - bos):]
            self.partial_cut += 1
            self.partial_fewest_kept = min(self.partial_fewest_kept, room - bos)
        return context, continuation

    def encode_responses(self, examples: list[Example]) -> list[EncodedExample]:
        """Generation examples: prompt + response (see the module docstring), one batched
        tokenizer call."""
        pairs = [self._prompt_and_whole(e, self.prompt_text(e)) for e in examples]
        prompts, wholes = [p for p, _ in pairs], [w for _, w in pairs]
        ids = self.tokenizer.encode(prompts + wholes, specials=not self.chat)
        return [self._generation(e, c, w) for e, c, w in zip(examples, ids[: len(prompts)], ids[len(prompts):])]

    def _where(self, example: Example) -> str:
        return example.where or f"{self.task.name}: an example"

    def _with_options(self, example: Example, context: list[int], wholes: list[list[int]], texts, what: str):
        k = min(common_prefix(context, w) for w in wholes)
        if k == 0:
            raise ValueError(f"{self._where(example)}: the prompt leaves no token before the answers "
                             "(the template renders to text that merges with them)")
        options = [w[k:] for w in wholes]
        for i, (text, tokens) in enumerate(zip(texts, options)):
            if not tokens:
                raise ValueError(f"{self._where(example)}: {what.format(shown_value(text))} tokenizes to no tokens "
                                 "after the prompt")
            if tokens in options[:i]:  # e.g. both unknown to the vocabulary: every score would tie
                other = texts[options.index(tokens)]
                raise ValueError(f"{self._where(example)}: {what.format(shown_value(text))} and "
                                 f"{what.format(shown_value(other))} "
                                 f"tokenize to the same tokens after the prompt ({tokens}), so they can never be told "
                                 "apart")
        longest = max(range(len(options)), key=lambda i: len(options[i]))
        prompt = self._fit(example, context, k, len(options[longest]), what.format(shown_value(texts[longest])))
        return EncodedExample(prompt, example.label, options=options)

    def _generation(self, example: Example, context: list[int], whole: list[int]) -> EncodedExample:
        k = common_prefix(context, whole)
        answer = whole[k:]
        if self.chat:  # the assistant's turn up to and including its end-of-turn token
            stops = set(self.tokenizer.stop_ids)
            end = next((i for i, t in enumerate(answer) if t in stops), None)
            if end is not None:
                answer = answer[: end + 1]
            bare = not answer or (end == 0)
        else:
            bare = not answer
            eos = self.tokenizer.eos_id
            if eos is not None and (not answer or answer[-1] != eos):
                answer = answer + [eos]
        if bare:
            raise ValueError(f"{self._where(example)}: field {shown_value(self.task.response_field)} (data.response_field) "
                             "tokenizes to no tokens after the prompt")
        if k == 0:
            raise ValueError(f"{self._where(example)}: the prompt leaves no token before the response")
        whole_length = len(answer)
        self.responses += 1
        self.longest_response = max(self.longest_response, whole_length)
        if k + whole_length > self.max_length and whole_length > self.max_length // 2:  # it does not fit whole
            self.responses_cut += 1
            answer = answer[: max(self.max_length // 2, self.max_length - k)]
        return EncodedExample(self._fit(example, context, k, len(answer)), -1, answer_ids=answer,
                              reference=example.response, answer_length=whole_length)

    def _fit(self, example: Example, context: list[int], k: int, answer_length: int, answer: str = "") -> list[int]:
        """The prompt (context[:k], the tokens before the answer) cut to fit data.max_length
        beside the answer: its end kept, and its start (BOS, or what the chat template writes
        before the user's text) kept first, the tokens between dropped. `answer`: the longest
        option, named in errors (a label word is every example's: the record is only the first
        that met it)."""
        prompt = context[:k]
        room = self.max_length - answer_length
        bos = self.tokenizer.bos_id is not None and prompt[0] == self.tokenizer.bos_id
        named = f", {answer}" if answer else ""
        if room < 1 + bos:
            raise ValueError(f"{self._where(example)}: data.max_length={self.max_length} leaves no room for the prompt "
                             f"beside its {answer_length}-token answer{named}")
        self.fitted += 1
        self.longest = max(self.longest, len(prompt))
        if len(prompt) <= room:
            return prompt
        start, end = self._template_frame(example, context, k) if self.chat else (int(bos), 0)
        if room < start + end + 1:
            framed = f"the chat template's {start} tokens before and {end} after the user's text and " if self.chat else ""
            raise ValueError(f"{self._where(example)}: data.max_length={self.max_length} leaves no room for the prompt "
                             f"beside {framed}its {answer_length}-token answer{named}")
        self.cut += 1
        self.fewest_kept = min(self.fewest_kept, room - start - end)  # the prompt's own tokens, BOS not counted
        kept = prompt[len(prompt) - (room - start): len(prompt) - end]  # of the (user) text
        self._refuse_fieldless_cut(example, kept, answer_length, named)
        return prompt[:start] + prompt[len(prompt) - (room - start):]

    def _refuse_fieldless_cut(self, example: Example, kept: list[int], answer_length: int, named: str) -> None:
        """ValueError naming the record when the tokens a cut prompt keeps of its (user) text are
        all of the template's own text after its last field: every such prompt reads the same, as
        a template without a {field} would, which the config check refuses. Checked where the
        task's prompt writes the fields' values as given (a marker put in each is found)."""
        marker = "\ue000"  # a private-use character: no template or tokenizer writes it
        marked = self.task.prompt(replace(example, fields={name: marker for name in example.fields}))
        if marker not in marked:
            return
        tail = marked[marked.rfind(marker) + len(marker):]
        text = self.tokenizer.decode(kept).strip()
        if text and not tail.strip().endswith(text):
            return
        what = (f"all of them the template's own text after its last field ({shown_value(tail)})" if text
                else "which hold only whitespace")
        advice = " (or put the fields nearer the template's end)" if self.task.name == "custom" and text else ""
        raise ValueError(f"{self._where(example)}: data.max_length={self.max_length} leaves {len(kept)} tokens for the "
                         f"prompt beside its {answer_length}-token answer{named}, {what}, so no text of the example "
                         f"is kept and every long example's prompt reads the same; raise data.max_length{advice}")

    def _template_frame(self, example: Example, context: list[int], k: int) -> tuple[int, int]:
        """(tokens the chat template writes before the user's text, tokens of its closing, the
        generation prompt, that are among context[:k]), from where the user's text lies in the
        rendered prompt; a closing token merged into the answer is the answer's. ValueError naming
        the record where the template writes the user's text changed (it cannot be found)."""
        text = self.task.prompt(example).strip()  # templates commonly trim the content
        rendered = self.tokenizer.chat_prompt(self.task.prompt(example))
        at = rendered.rfind(text) if text else -1  # the user's turn is the conversation's last
        if at < 0:
            raise ValueError(f"{self._where(example)}: data.max_length={self.max_length} cuts the prompt, and the chat "
                             "template writes the user's text changed, so its own tokens cannot be told from the "
                             "user's; raise data.max_length")
        before, after = self.tokenizer.encode([rendered[:at], rendered[at + len(text):]], specials=False)
        start = common_prefix(context, before)
        closing = common_prefix(context[::-1], after[::-1])
        return start, max(0, closing - (len(context) - k))

    def truncation_report(self) -> str | None:
        """Lines on the prompts, partial-scoring contexts and responses cut to fit data.max_length
        so far (None if none were): a 'warning' when a prompt or context kept fewer than
        MIN_KEPT_PROMPT_TOKENS, so a too small max_length is not trained or scored on silently, and
        whenever a response was cut, since its end (its EOS or end-of-turn token too) is then
        neither trained nor scored by perplexity."""
        lines = []
        if self.cut:
            level = "prge: warning:" if self.fewest_kept < MIN_KEPT_PROMPT_TOKENS else "[prge] note:"
            lines.append(
                f"{level} data.max_length={self.max_length}: {self.cut} of {self.fitted} prompts were cut to fit "
                f"beside their answers, to as few as {self.fewest_kept} tokens"
                + (" of user text (its start dropped, the chat template's own tokens kept" if self.chat
                   else " of prompt text (their start dropped, BOS kept where the tokenizer writes one")
                + f"; the longest whole prompt has {self.longest} tokens)")
        if self.partial_cut:
            level = "prge: warning:" if self.partial_fewest_kept < MIN_KEPT_PROMPT_TOKENS else "[prge] note:"
            lines.append(
                f"{level} data.max_length={self.max_length}: {self.partial_cut} of {self.partial_fitted} partial-scoring "
                f"contexts (accuracy_partial's sentence up to each option) were cut to fit beside their continuations, "
                f"to as few as {self.partial_fewest_kept} tokens (their start dropped, BOS kept where the tokenizer "
                "writes one)")
        if self.responses_cut:
            lines.append(
                f"prge: warning: data.max_length={self.max_length}: {self.responses_cut} of {self.responses} responses "
                f"did not fit whole beside their prompts and were cut (each keeping at least its first "
                f"{self.max_length // 2} tokens, half of max_length), so their end and their "
                f"{'end-of-turn' if self.chat else 'EOS'} token are neither trained nor in the answer perplexity "
                "(exact match and token F1 compare with the whole response); the longest response has "
                f"{self.longest_response} tokens: raise data.max_length (at most the model's max_position_embeddings) "
                "to train on more of them")
        return "\n".join(lines) or None

    def answer(self, e: EncodedExample, label: int | None = None) -> list[int]:
        """The answer tokens a batch puts after e's prompt: the response, or option `label`
        (default: the gold one)."""
        if e.answer_ids is not None:
            return e.answer_ids
        return e.options[e.label if label is None else label]

    def batch(self, encoded: list[EncodedExample], labels: list[int] | None = None) -> TokenBatch:
        """Prompt + answer per example: the response of a generation task, else the option of the
        gold label unless `labels` is given. input_ids, targets: [b, T], T the longest."""
        labels = labels if labels is not None else [None] * len(encoded)
        return self._pack([(e.prompt_ids, self.answer(e, y)) for e, y in zip(encoded, labels)])

    def batch_options(self, encoded: list[EncodedExample]) -> TokenBatch:
        """Every option of every example, example by example (rows e0o0, e0o1, ..., e1o0, ...):
        input_ids, targets [sum of len(e.options), T], T the longest; one forward scores them all."""
        return self._pack([(e.prompt_ids, option) for e in encoded for option in e.options])

    def batch_partial(self, encoded: list[EncodedExample]) -> TokenBatch:
        """Every candidate's partial-scoring pair of every example, in batch_options' row order:
        input_ids [rows, T] its context then continuation; targets the continuation's tokens."""
        return self._pack([pair for e in encoded for pair in e.partial])

    def _pack(self, seqs: list[tuple[list[int], list[int]]]) -> TokenBatch:
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

    def state(self) -> dict:
        """The data-order position, JSON-serialisable (saved with checkpoints)."""
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss], "order": list(self.order)}

    def set_state(self, state: dict, changed_data: bool = False) -> int:
        """Restores a position state() gave; ValueError saying what is wrong when `state` is not
        one (a damaged or edited checkpoint): the generator's state, or an order naming an example
        twice or one outside the n training examples. changed_data (a resume the user allowed on
        changed data): examples past n are dropped from the order instead (the training set
        shrank); returns how many were."""
        if not isinstance(state, dict) or not isinstance(state.get("rng"), list) or len(state["rng"]) != 3 \
                or not isinstance(state.get("order"), list):
            raise ValueError("not the sampler state prge writes (an object with rng [version, state, gauss] "
                             "and order, a list)")
        version, internal, gauss = state["rng"]
        try:
            if not is_json_int(version):
                raise TypeError(f"its version {json.dumps(version)} is not an integer")
            if not isinstance(internal, list) or not all(is_json_int(x) and 0 <= x < 2 ** 32 for x in internal):
                raise TypeError("the generator's state is not a list of 32-bit unsigned integers")
            if not (gauss is None or isinstance(gauss, float) and math.isfinite(gauss)):
                raise TypeError("its gauss value is neither null nor a finite number")
            rng = random.Random()
            rng.setstate((version, tuple(internal), gauss))
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"rng is not a generator state ({e})") from None
        order = state["order"]
        if not all(is_json_int(i) and i >= 0 for i in order) or len(set(order)) != len(order):
            raise ValueError(f"order is not a list of distinct example indices below {self.n} (the training "
                             "examples)")
        kept = [i for i in order if i < self.n]
        if len(kept) < len(order) and not changed_data:
            raise ValueError(f"order names example {max(order)}, and there are {self.n} training examples")
        self.rng, self.order = rng, kept
        return len(order) - len(kept)

    def next(self) -> list[int]:
        if len(self.order) < self.batch_size:
            epoch = list(range(self.n))
            self.rng.shuffle(epoch)
            self.order = epoch
        out, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        return out
