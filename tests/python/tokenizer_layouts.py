"""Tokenizers in the layouts of three model families, built with the `tokenizers` library into
tokenizer.json + tokenizer_config.json (+ the chat template) in a directory, as the models'
own repositories hold them:

  llama2  SentencePiece BPE: normalizer Prepend('▁') + Replace(' ', '▁'), byte fallback
          (<0x00>..<0xFF>), BOS <s> from the post-processor, add_bos_token true, no chat template
          (llama2-fast: the same files read as PreTrainedTokenizerFast, which keeps the normalizer)
  llama3  byte-level BPE with Llama 3's split pattern, <|begin_of_text|> BOS from the post-processor,
          a chat template that writes {{ bos_token }} and ends turns with <|eot_id|>
  gemma   SentencePiece-like BPE without a prefix space, byte fallback, <bos> from the
          post-processor, add_bos_token true, a chat template with <start_of_turn> / <end_of_turn>

Vocabularies are trained on a few sentences, so the pieces are small but real merges."""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

CORPUS = [
    "Review: Great coffee, will buy again. It was positive and tasty.",
    "Review: Stale crackers, never again. It was negative and awful.",
    "The movie was great. It was terrible. It was wonderful, a positive surprise.",
    "Does this mean that the cat sat on the mat? Yes or No? Yes. No.",
    "Question: What is 2+2? Answer: 4. What is the capital of France? Paris.",
    "Sentiment: positive. Sentiment: negative. good bad tasty awful great stale love hate",
    "In the previous sentence, does the pronoun refer to the dog? The answer is four.",
] * 4

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

LLAMA3_CHAT = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")

GEMMA_CHAT = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def _trained_bpe(pre_tokenizer, alphabet=(), vocab_size: int = 300):
    """(vocab, merges) of a BPE trained on CORPUS with the given pre-tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=list(alphabet),
                                                        show_progress=False))
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def _sentencepiece_vocab(specials: list[str], pre_tokenizer) -> tuple[dict, list]:
    """Specials first, then the 256 byte-fallback pieces, then the trained pieces (Llama / Gemma order)."""
    trained, merges = _trained_bpe(pre_tokenizer)
    vocab = {s: i for i, s in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in sorted(trained, key=trained.get):
        vocab.setdefault(piece, len(vocab))
    return vocab, merges


def _write(out: Path, tok: Tokenizer, config: dict, chat_template: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    if chat_template is not None:
        (out / "chat_template.jinja").write_text(chat_template)
    return out


def llama2(out: Path, tokenizer_class: str = "LlamaTokenizer") -> Path:
    """tokenizer_class LlamaTokenizer: transformers 5 rebuilds the pipeline from the vocabulary
    (a Metaspace pre-tokenizer); PreTrainedTokenizerFast: tokenizer.json's own pipeline, the
    Prepend('▁') normalizer included."""
    specials = ["<unk>", "<s>", "</s>"]
    vocab, merges = _sentencepiece_vocab(specials, pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                                            split=True))
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return _write(out, tok, {"tokenizer_class": tokenizer_class, "add_bos_token": True, "add_eos_token": False,
                             "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
                             "legacy": False, "clean_up_tokenization_spaces": False, "model_max_length": 4096})


def llama3(out: Path) -> Path:
    split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)
    vocab, merges = _trained_bpe(pre_tokenizers.Sequence([split, byte_level]), pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return _write(out, tok, {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                             "eos_token": "<|eot_id|>", "clean_up_tokenization_spaces": True,
                             "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 131072},
                  LLAMA3_CHAT)


def gemma(out: Path) -> Path:
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    vocab, merges = _sentencepiece_vocab(specials, pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never",
                                                                            split=True))
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", vocab["<bos>"])])
    return _write(out, tok, {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False,
                             "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
                             "clean_up_tokenization_spaces": False, "model_max_length": 8192}, GEMMA_CHAT)


LAYOUTS = {"llama2": llama2, "llama2-fast": lambda out: llama2(out, "PreTrainedTokenizerFast"), "llama3": llama3,
           "gemma": gemma}
