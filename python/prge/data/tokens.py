"""The model's text, as transformers reads it from the model's own files: one source of truth
for token ids, chat rendering and end tokens.

  tokenizer    transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True):
               tokenizer.json / tokenizer.model with tokenizer_config.json, so BOS / EOS come
               where transformers puts them (post-processor, add_bos_token, add_eos_token)
  chat         tokenizer.apply_chat_template (chat_template.jinja or tokenizer_config.json), the
               rendered text tokenized without added specials, as apply_chat_template does
  stop ids     what transformers' generate stops on: generation_config.json's eos_token_id (an
               int or a list), or config.json's when the model has no generation_config.json

prge never tokenizes a piece of text on its own to glue it to another: prompts, label words and
responses are encoded as whole strings (see prge.data.batching.PromptEncoder)."""
from __future__ import annotations

import json
from pathlib import Path

from prge.whitespace import shown_value


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ImportError("prge reads tokenizers, chat templates and generation configs through transformers: "
                          "pip install transformers jinja2") from e
    return transformers


def load_tokenizer(model_dir: str | Path):
    """transformers' tokenizer of a model directory (local files only). Raises FileNotFoundError
    when the directory has no tokenizer.json (nor tokenizer.model), ValueError naming config.json
    when transformers cannot read that (a value its config class refuses), else the directory."""
    model_dir = Path(model_dir)
    if not (model_dir / "tokenizer.json").is_file() and not (model_dir / "tokenizer.model").is_file():
        raise FileNotFoundError(f"{model_dir / 'tokenizer.json'} not found: the model directory needs a tokenizer.json "
                                "(or a SentencePiece tokenizer.model)")
    for name in ("config.json", "tokenizer_config.json"):  # transformers reads both to pick the tokenizer class
        path = model_dir / name
        if path.is_file():
            try:
                json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path}: malformed {name}: {e}") from e
    transformers = _transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as e:  # transformers' and huggingface_hub's own error types: named by directory
        if (model_dir / "config.json").is_file():  # which file it was: AutoTokenizer reads config.json too
            try:
                transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
            except Exception as config_error:
                raise ValueError(f"{model_dir / 'config.json'}: transformers cannot read it (its tokenizer is picked "
                                 f"through it): {config_error}") from e
        raise ValueError(f"{model_dir}: transformers cannot read the tokenizer files: {e}") from e


def read_generation_config(model_dir: str | Path):
    """(transformers' GenerationConfig, the file it came from) of the model: generation_config.json,
    or config.json when there is none (transformers' from_pretrained reads the model config then);
    (None, None) when neither exists. Raises ValueError naming a malformed file."""
    model_dir = Path(model_dir)
    generation = _transformers().GenerationConfig
    own = model_dir / "generation_config.json"
    source = own if own.is_file() else model_dir / "config.json"
    if not source.is_file():
        return None, None
    try:
        if own.is_file():
            return generation.from_pretrained(str(model_dir), local_files_only=True), source
        return generation.from_pretrained(str(model_dir), config_file_name="config.json",
                                          local_files_only=True), source
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{source}: cannot read the generation settings: {e}") from e


def stop_token_ids(model_dir: str | Path) -> list[int]:
    """Every token id transformers' `generate` stops on for this model, sorted: the eos_token_id
    (an int or a list) of its generation settings (read_generation_config); an empty list when
    they name none. Raises ValueError naming a malformed file."""
    config, source = read_generation_config(model_dir)
    if config is None:
        return []
    eos = config.eos_token_id
    if eos is None:
        return []
    ids = [eos] if isinstance(eos, int) else list(eos)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(f"{source}: eos_token_id must be a token id or a list of them, got {shown_value(eos)}")
    return sorted(set(ids))


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ModelTokenizer:
    """A model directory's tokenizer, chat template and stop ids (all read by transformers).

    encode(texts, specials)  [[id, ...], ...]: one call of the tokenizer on the batch of texts
    decode(ids)              text, special tokens skipped
    chat_prompt(text)        the chat template's rendering of one user turn + the generation prompt
    chat_turn(text, reply)   the same conversation with the assistant's reply, as the template writes it
    prompt_ids(texts, chat)  generation prompts: rendered by the chat template when `chat`, else the
                             text with the tokenizer's leading specials (BOS) and without the ones a
                             post-processor appends after a sequence (an EOS would end it)"""

    def __init__(self, model_dir: str | Path, tokenizer=None):
        self.model_dir = Path(model_dir)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.model_dir)
        self.stop_ids = stop_token_ids(self.model_dir)
        self.bos_id = self.tokenizer.bos_token_id
        self.eos_id = self.tokenizer.eos_token_id
        # Specials a post-processor appends after a single sequence (add_eos_token): counted
        # once on a probe, since a template adds the same tokens to every sequence.
        with_specials = self.encode(["a"], specials=True)[0]
        bare = self.encode(["a"], specials=False)[0]
        start = next((i for i in range(len(with_specials) - len(bare) + 1)
                      if with_specials[i: i + len(bare)] == bare), len(with_specials))
        self.appended = max(0, len(with_specials) - start - len(bare))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def require_chat_template(self, what: str) -> None:
        if not self.has_chat_template:
            raise ValueError(f"{what}: {self.model_dir} has no chat template (chat_template.jinja or "
                             "tokenizer_config.json's chat_template)")

    def encode(self, texts: list[str], specials: bool) -> list[list[int]]:
        """Token ids of each text as `tokenizer(texts, add_special_tokens=specials)` gives them
        (`specials`: BOS / EOS as the tokenizer's post-processor adds them), in one batched call.
        Fast path: a fast tokenizer with no truncation or padding stored in its backend and
        special tokens not split is exactly a call of its Rust backend's encode_batch, so the
        backend is called directly, without building transformers' per-text Python objects
        (a quarter of the time on 4000 reviews); any other tokenizer goes through the call."""
        if not texts:
            return []
        try:
            return self._encode(list(texts), specials)
        except Exception as e:  # tokenizers raises a plain Exception (e.g. for an unk token not in its vocabulary)
            failing = next((t for t in texts if not self._encodes(t, specials)), texts[0])
            raise ValueError(f"{self.model_dir}: its tokenizer cannot encode the text {shown_value(failing)}: "
                             f"{type(e).__name__}: {e}") from e

    def _encodes(self, text: str, specials: bool) -> bool:
        try:
            self._encode([text], specials)
            return True
        except Exception:
            return False

    def _encode(self, texts: list[str], specials: bool) -> list[list[int]]:
        backend = getattr(self.tokenizer, "backend_tokenizer", None) if self.tokenizer.is_fast else None
        if (backend is not None and hasattr(backend, "encode_batch_fast") and backend.truncation is None
                and backend.padding is None and not getattr(self.tokenizer, "split_special_tokens", False)
                and not getattr(backend, "encode_special_tokens", False)):
            return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=specials)]
        return list(self.tokenizer(texts, add_special_tokens=specials, return_attention_mask=False,
                                   verbose=False)["input_ids"])

    @property
    def end_specials(self) -> list[int]:
        """The special tokens the tokenizer's post-processor appends after a text (an EOS under
        add_eos_token: true; usually none)."""
        if not hasattr(self, "_end_specials"):
            probe = "Hello world"
            plain, full = self.encode([probe], specials=False)[0], self.encode([probe], specials=True)[0]
            at = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), None)
            self._end_specials = [] if at is None else full[at + len(plain):]
        return self._end_specials

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as e:  # jinja2's TemplateError, raise_exception() in the template, ...
            raise ValueError(f"{self.model_dir}: the chat template fails on a {'/'.join(m['role'] for m in messages)} "
                             f"conversation: {type(e).__name__}: {e}") from e

    def chat_prompt(self, text: str) -> str:
        return self._render([{"role": "user", "content": text}], True)

    def chat_turn(self, text: str, reply: str) -> str:
        return self._render([{"role": "user", "content": text}, {"role": "assistant", "content": reply}], False)

    def prompt_ids(self, texts: list[str], chat: bool = False) -> list[list[int]]:
        if chat:
            self.require_chat_template("--chat")
            return self.encode([self.chat_prompt(t) for t in texts], specials=False)
        ids = self.encode(texts, specials=True)
        return [x[: len(x) - self.appended] for x in ids] if self.appended else ids
