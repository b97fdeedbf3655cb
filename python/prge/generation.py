"""Text generation from a model or a finished run, through the native model's KV-cache
decoder (CausalLM.generate), and the SQuAD-style answer metrics of generation tasks.

    prge generate MODEL_OR_RUN_DIR --prompt "..." [--prompt ...] [--max-new-tokens 32]
                  [--temperature 0] [--top-k 0] [--top-p 1] [--seed 0] [--stop TOKEN] [--chat]
                  [--repetition-penalty P] [--no-repeat-ngram-size N]"""
from __future__ import annotations

import collections
import re
import string
from pathlib import Path


def load_model(source: str):
    """(model, model directory) of a run directory (its trained adapters applied, or a MeZO
    run's trained weights) or of a model name / directory. FileNotFoundError for a run that has
    not finished; ValueError for a run whose model directory holds another model now."""
    from prge._core import CausalLM
    from prge.models import resolve_model

    path = Path(source)
    if (path / "config.yaml").is_file() and not (path / "config.json").is_file():  # a run's directory
        from prge.adapters import load_run  # names a run that has not finished

        _, model_dir, model = load_run(path)
        return model, model_dir
    model_dir = resolve_model(source)
    return CausalLM.from_pretrained(str(model_dir)), model_dir


def stop_ids(model_dir) -> list[int]:
    """Every id transformers' generate stops on for the model in model_dir: generation_config.json's
    eos_token_id (int or list), else config.json's (prge.data.tokens.stop_token_ids)."""
    from prge.data.tokens import stop_token_ids

    return stop_token_ids(model_dir)


# generation_config.json settings prge's decoder applies as transformers' generate() does, with
# the value that means "off" (the CLI's --repetition-penalty / --no-repeat-ngram-size override them).
APPLIED_GENERATION_FIELDS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
# Settings that change what transformers' generate() returns and that prge's decoder does not
# apply (it decodes greedily, or samples with --temperature / --top-k / --top-p), each with the
# values under which transformers applies nothing for it.
UNAPPLIED_GENERATION_FIELDS = {
    "encoder_repetition_penalty": (None, 1.0), "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None, []), "sequence_bias": (None, {}), "suppress_tokens": (None, []),
    "begin_suppress_tokens": (None, []), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "min_length": (None, 0), "min_new_tokens": (None, 0), "num_beams": (None, 1), "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0), "min_p": (None, 0.0),
    "exponential_decay_length_penalty": (None,), "renormalize_logits": (None, False), "guidance_scale": (None, 1.0)}


def model_generation_config(model_dir):
    """transformers' GenerationConfig of the model (prge.data.tokens.read_generation_config), or
    None when there is none or it cannot be read (a malformed file is named where its stop ids
    are read: prge.data.tokens.stop_token_ids)."""
    from prge.data.tokens import read_generation_config

    try:
        return read_generation_config(model_dir)[0]
    except ValueError:
        return None


def applied_generation_settings(config) -> dict:
    """APPLIED_GENERATION_FIELDS with the model's values (their "off" values where it has none)."""
    values = {}
    for name, off in APPLIED_GENERATION_FIELDS.items():
        value = getattr(config, name, None) if config is not None else None
        values[name] = off if value is None else value
    return values


def unapplied_generation_settings(config) -> list[str]:
    """The model's generation defaults that transformers' generate() applies and `prge generate`
    does not, as "name value" strings: UNAPPLIED_GENERATION_FIELDS at a value that does something,
    and do_sample (prge samples only when --temperature is given)."""
    if config is None:
        return []
    out = [f"{name} {getattr(config, name, None)!r}" for name, off in UNAPPLIED_GENERATION_FIELDS.items()
           if getattr(config, name, None) not in off]
    if getattr(config, "do_sample", False):
        out.append(f"do_sample true (temperature {config.temperature}, top_k {config.top_k}, top_p {config.top_p})")
    return out


def generate_text(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 32, temperature: float = 0.0,
                  top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop: list[int] | None = None,
                  chat: bool = False, repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0) -> list[str]:
    """The new text after each prompt. `tokenizer`: a prge.data.tokens.ModelTokenizer; prompts are
    encoded as transformers encodes them (BOS where the tokenizer adds it), or rendered by the
    model's chat template with the generation prompt when `chat` (as training with
    data.chat_template renders them). `stop`: the ids that end a sequence (default: the model's
    stop ids). repetition_penalty / no_repeat_ngram_size: as transformers' generate() applies them
    (1 / 0: off). Raises ValueError for a prompt that encodes to no tokens."""
    ids = tokenizer.prompt_ids(prompts, chat=chat)
    if any(not x for x in ids):
        raise ValueError("a prompt encodes to no tokens")
    new = model.generate(ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed, stop_tokens=tokenizer.stop_ids if stop is None else stop,
                         repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    return [tokenizer.decode(t) for t in new]


def first_lines(text: str, count: int) -> str:
    """The first `count` lines of text, its surrounding whitespace stripped first."""
    return "\n".join(text.strip().split("\n")[:count])


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_metrics(model, encoder, examples, stop: list[int], batch_size: int = 16, shard=None) -> dict:
    """Greedy answers to the encoded prompts (the same prompt tokens training and the answer
    perplexity use: chat-rendered with the generation prompt under data.chat_template), stopping
    at `stop` (the model's stop ids) or after as many tokens as its own reference (+ 8, within the
    model's max_position_embeddings: a chunk decodes to its longest one's, and each answer is cut
    to its own, so that an example's score does not depend on the examples beside it), scored
    against the whole references as the data writes them (EncodedExample.reference; never cut by
    data.max_length): mean exact match and token F1 (SQuAD's normalisation; `shard`: split over a
    distributed run's ranks). A prediction is taken up to as many lines as its reference holds
    (MeZO's first line for one-line answers, where a model without a chat template runs on past
    its answer)."""
    from prge.evaluation import per_chunk

    positions = int(getattr(getattr(model, "spec", None), "max_position_embeddings", 0) or 0)

    def scores(start: int) -> list[tuple[float, float]]:
        chunk = examples[start: start + batch_size]
        # each answer as long as its whole reference (+ 8); no row decoded past the model's positions
        limits = [(e.answer_length or len(e.answer_ids)) + 8 for e in chunk]
        steps = max(limits)
        if positions > 0:
            steps = max(1, min(steps, positions - max(len(e.prompt_ids) for e in chunk)))
        new = model.generate([e.prompt_ids for e in chunk], max_new_tokens=steps, stop_tokens=stop)
        out = []
        for e, tokens, limit in zip(chunk, new, limits):
            tokens = tokens[:limit]
            reference = e.reference if e.reference is not None else encoder.tokenizer.decode(e.answer_ids)
            prediction = first_lines(encoder.tokenizer.decode(tokens), len(reference.strip().split("\n")))
            out.append((exact_match(prediction, reference), token_f1(prediction, reference)))
        return out

    em = f1 = 0.0
    for chunk in per_chunk(len(examples), batch_size, False, scores, shard):
        for e, f in chunk:
            em += e
            f1 += f
    return {"exact_match": em / len(examples), "token_f1": f1 / len(examples)}
