"""One source of truth for tokens: every sequence prge trains on or scores is what transformers'
tokenizer (AutoTokenizer, and apply_chat_template) gives the whole text, BOS / EOS included,
for SmolLM2's real tokenizer and for tokenizers built here in the Llama-2, Llama-3 and Gemma
layouts (tokenizer_layouts.py); label and answer tokens are the ones the whole string yields
after the prompt (lm-evaluation-harness: whole[len(enc(prompt)):]); SFT targets end with the
end-of-turn token the chat template writes, or with EOS without a template."""
import json

import pytest


from tokenizer_layouts import LAYOUTS
from prge.data.batching import PromptEncoder
from prge.data.examples import Example, Task
from prge.data.kinds import CLASSIFICATION, GENERATION
from prge.data.tokens import ModelTokenizer

TEXTS = ["The movie was great.", "Stale crackers, never again!", "café ☕ and 2+2 = 4", "  leading spaces"]
QUESTIONS = [("What is 2+2?", "4"), ("What is the capital of France?", " Paris"), ("Say hi", "hi there")]
# The ids each layout's generate stops on (generation_config.json); END is the end-of-turn token
# its chat template writes after an assistant message.
STOPS = {"llama2": ["</s>"], "llama2-fast": ["</s>"], "llama3": ["<|end_of_text|>", "<|eot_id|>"], "gemma": ["<eos>", "<end_of_turn>"]}
END = {"llama3": "<|eot_id|>", "gemma": "<end_of_turn>", "smollm2": "<|im_end|>"}


def task(template, labels=(), response=None, chat=False):
    return Task("t", "test task", tuple(labels), lambda f: template.format(**f), lambda r: r,
                response_field=response, chat_template=chat, kind=GENERATION if response else CLASSIFICATION)


@pytest.fixture(params=["llama2", "llama2-fast", "llama3", "gemma", "smollm2"])
def layout(request, tmp_path):
    """(name, ModelTokenizer, transformers tokenizer) of one tokenizer layout."""
    name = request.param
    if name == "smollm2":
        from installed import registered_model

        model_dir = registered_model("smollm2-135m")
    else:
        model_dir = LAYOUTS[name](tmp_path / name)
        hf = ModelTokenizer(model_dir).tokenizer
        (model_dir / "generation_config.json").write_text(json.dumps(
            {"eos_token_id": [hf.convert_tokens_to_ids(t) for t in STOPS[name]]}))
    tokens = ModelTokenizer(model_dir)
    return name, tokens, tokens.tokenizer


def chat_ids(hf, messages, generation_prompt):
    out = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_encode_is_the_tokenizers_call(layout):
    """ModelTokenizer.encode (the Rust backend's batch call where that is exact) gives the ids of
    transformers' tokenizer call, special tokens written in the text included."""
    name, tokens, hf = layout
    texts = TEXTS + ["", " ", "\n\n", "a  b\tc", "<s> </s> <bos> <|eot_id|> <|im_end|> inside", "x" * 300]
    for specials in (True, False):
        assert tokens.encode(texts, specials) == [hf(t, add_special_tokens=specials)["input_ids"] for t in texts]
        assert tokens.encode(texts, specials) == hf(texts, add_special_tokens=specials)["input_ids"]


def test_classification_sequences_are_transformers_encodings_of_prompt_plus_label(layout):
    name, tokens, hf = layout
    for template, labels in (("{text} It was", (" positive", " negative")),
                             ("{text}\nDoes it mean yes? Yes or No?\n", (" Yes", " No"))):
        t = task(template, labels)
        encoder = PromptEncoder(t, tokens, 128)
        for text, e in zip(TEXTS, encoder.encode_all([Example({"text": x}, 0) for x in TEXTS])):
            prompt = t.prompt(Example({"text": text}, 0))
            context = hf(prompt)["input_ids"]
            assert e.prompt_ids == context  # lm-eval: the context is enc(prompt) ...
            for label, option in zip(labels, e.options):
                whole = hf(prompt + label)["input_ids"]
                assert e.prompt_ids + option == whole  # ... and the sequence is enc(prompt + label)
                assert option == whole[len(context):]
            if tokens.bos_id is not None and name != "smollm2":  # BOS once, first, as transformers adds it
                assert (e.prompt_ids[0], e.prompt_ids.count(tokens.bos_id)) == (tokens.bos_id, 1)
    if name == "smollm2":  # transformers adds no BOS for SmolLM2: neither does prge
        assert hf("Review: good")["input_ids"][0] != hf.bos_token_id
        assert e.prompt_ids[0] != tokens.bos_id


@pytest.mark.parametrize("name", ["llama2", "llama2-fast"])
def test_a_label_word_is_the_piece_running_text_gives_under_sentencepiece(tmp_path, name):
    """The issue's case: Llama-2's layout, " positive" after "...It was" is one piece ▁positive,
    not ['▁', '▁positive'] as encoding the label word on its own gives."""
    tokens = ModelTokenizer(LAYOUTS[name](tmp_path / name))
    encoder = PromptEncoder(task("{text} It was", (" positive", " negative")), tokens, 64)
    e = encoder.encode(Example({"text": "The movie was great."}, 0))
    pieces = [tokens.tokenizer.convert_ids_to_tokens(o) for o in e.options]
    assert pieces == [["▁positive"], ["▁negative"]]
    assert tokens.tokenizer.convert_ids_to_tokens(e.prompt_ids)[:2] == ["<s>", "▁The"]
    from tokenizers import Tokenizer  # the old way: the label word encoded alone by the raw tokenizer.json

    alone = Tokenizer.from_file(str(tokens.model_dir / "tokenizer.json")).encode(" positive", add_special_tokens=False)
    assert alone.tokens == ["▁", "▁positive"]


def test_plain_sft_targets_are_the_response_then_eos(layout):
    name, tokens, hf = layout
    t = task("Question: {q}\nAnswer:", response="a")
    encoder = PromptEncoder(t, tokens, 128)
    for (q, a), e in zip(QUESTIONS, encoder.encode_all([Example({"q": q}, -1, a) for q, a in QUESTIONS])):
        prompt = t.prompt(Example({"q": q}, -1))
        assert e.prompt_ids == hf(prompt)["input_ids"]
        assert e.prompt_ids + e.answer_ids == hf(prompt + a)["input_ids"] + [hf.eos_token_id]
        assert e.answer_ids[-1] == hf.eos_token_id and e.answer_ids.count(hf.eos_token_id) == 1


@pytest.mark.parametrize("layout", ["llama3", "gemma", "smollm2"], indirect=True)
def test_chat_sft_targets_end_with_the_end_of_turn_token_the_template_writes(layout):
    name, tokens, hf = layout
    end = hf.convert_tokens_to_ids(END[name])
    assert end in tokens.stop_ids  # generation stops where the targets end
    t = task("{q}", response="a", chat=True)
    encoder = PromptEncoder(t, tokens, 256)
    for (q, a), e in zip(QUESTIONS, encoder.encode_all([Example({"q": q}, -1, a) for q, a in QUESTIONS])):
        user = [{"role": "user", "content": q}]
        assert e.prompt_ids == chat_ids(hf, user, True)  # apply_chat_template(add_generation_prompt=True)
        conversation = chat_ids(hf, user + [{"role": "assistant", "content": a}], False)
        sequence = e.prompt_ids + e.answer_ids
        assert sequence == conversation[: len(sequence)]  # the template's own tokens, cut after the turn
        assert e.answer_ids[-1] == end and end not in e.answer_ids[:-1]
        assert hf.decode(conversation[len(sequence):]).strip() == ""  # after the turn: its newline at most
        if tokens.bos_id is not None and name != "smollm2":  # {{ bos_token }} in the template: BOS once
            assert (sequence[0], sequence.count(tokens.bos_id)) == (tokens.bos_id, 1)
    if name == "smollm2":  # the example
        e = encoder.encode(Example({"q": "What is 2+2?"}, -1, "4"))
        assert hf.convert_ids_to_tokens(e.answer_ids) == ["4", "<|im_end|>"]


@pytest.mark.parametrize("layout", ["llama3", "gemma", "smollm2"], indirect=True)
def test_chat_classification_scores_label_words_after_the_generation_prompt(layout):
    name, tokens, hf = layout
    labels = (" positive", " negative")
    encoder = PromptEncoder(task("Review: {text}\nSentiment:", labels, chat=True), tokens, 256)
    e = encoder.encode(Example({"text": TEXTS[0]}, 0))
    user = [{"role": "user", "content": f"Review: {TEXTS[0]}\nSentiment:"}]
    assert e.prompt_ids == chat_ids(hf, user, True)
    rendered = hf.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    for label, option in zip(labels, e.options):
        assert e.prompt_ids + option == hf(rendered + label, add_special_tokens=False)["input_ids"]


def test_truncation_keeps_bos_first_and_the_end_of_the_prompt(tmp_path):
    tokens = ModelTokenizer(LAYOUTS["llama2"](tmp_path / "llama2"))
    labels = (" positive", " negative")
    long_text = " ".join(["The movie was great, a positive surprise."] * 20)
    full = PromptEncoder(task("{text} It was", labels), tokens, 4096).encode(Example({"text": long_text}, 0))
    cut = PromptEncoder(task("{text} It was", labels), tokens, 16).encode(Example({"text": long_text}, 0))
    room = 16 - max(len(o) for o in cut.options)
    assert len(cut.prompt_ids) == room and cut.prompt_ids[0] == tokens.bos_id
    assert cut.prompt_ids[1:] == full.prompt_ids[-(room - 1):]  # the end of the prompt: "... It was"
    assert cut.options == full.options
    encoder = PromptEncoder(task("{text} It was", labels), tokens, 9)  # BOS and 8 tokens or fewer: a warning
    short = encoder.encode(Example({"text": long_text}, 0))
    assert short.prompt_ids[0] == tokens.bos_id and len(short.prompt_ids) <= 8
    assert encoder.truncation_report().startswith(  # the prompt's own tokens are counted, BOS is not
        "prge: warning: data.max_length=9: 1 of 1 prompts were cut to fit beside their answers, to as few as "
        f"{len(short.prompt_ids) - 1} tokens of prompt text"), encoder.truncation_report()
    # without BOS (SmolLM2's case), the last tokens only
    from conftest import make_tiny_assets

    model_dir, _ = make_tiny_assets(tmp_path)
    plain = ModelTokenizer(model_dir)
    assert plain.bos_id is None
    words = task("Review : {text} Sentiment :", labels)
    text = " ".join(["good tasty great love"] * 10)
    full = PromptEncoder(words, plain, 4096).encode(Example({"text": text}, 0))
    cut = PromptEncoder(words, plain, 8).encode(Example({"text": text}, 0))
    assert cut.prompt_ids == full.prompt_ids[-7:]


def test_a_cut_that_keeps_only_the_templates_own_text_is_refused(tmp_path):
    """A prompt cut to its last tokens where the template writes a long text after its last
    field keeps none of the example: every long prompt would read the same (as a template with no
    {field}, which the config check refuses). Refused naming the record; a cut that keeps some of
    the field's text passes."""
    from conftest import make_tiny_assets

    model_dir, _ = make_tiny_assets(tmp_path)
    tokens = ModelTokenizer(model_dir)
    words = task("{text} Review : good bad it Sentiment :", (" positive", " negative"))
    tail = len(tokens.encode([" Review : good bad it Sentiment :"], specials=False)[0])
    example = Example({"text": " ".join(["tasty great love"] * 10)}, 0, where="data.train_file: t.jsonl: record 3")
    with pytest.raises(ValueError, match=r"data.train_file: t.jsonl: record 3: data.max_length=\d+ leaves \d+ tokens "
                                         r"for the prompt beside its 1-token answer, .*all of them the template's own "
                                         r"text after its last field \(' Review : good bad it Sentiment :'\)"):
        PromptEncoder(words, tokens, tail + 1).encode(example)
    kept = PromptEncoder(words, tokens, tail + 4).encode(example)  # three tokens of the review kept
    assert tokens.decode(kept.prompt_ids) == "tasty great love Review : good bad it Sentiment :"


def test_a_cut_that_keeps_only_a_records_trailing_whitespace_says_so(tmp_path):
    """A template that ends at its field cuts into the record's own text: refused only where the
    kept tokens are whitespace (the record's trailing newlines), named as such (not as template
    text: there is none after the field)."""
    tokens = ModelTokenizer(LAYOUTS["llama2"](tmp_path / "llama2"))
    example = Example({"text": "The movie was great, a positive surprise." * 3 + "\n\n\n\n"}, 0)
    with pytest.raises(ValueError, match=r"leaves \d+ tokens for the prompt beside its 1-token answer, label word "
                                         r"' positive' \(data.label_words\), which hold only whitespace, so no text"):
        PromptEncoder(task("{text}", (" positive", " negative")), tokens, 5).encode(example)
    kept = PromptEncoder(task("{text}", (" positive", " negative")), tokens, 8).encode(example)
    assert tokens.decode(kept.prompt_ids).endswith("surprise.\n\n\n\n")


def test_a_long_response_is_cut_to_half_of_max_length_with_a_warning_and_kept_whole_as_the_reference(tmp_path):
    """data.max_length cuts a response to its first max_length // 2 tokens (its EOS with it):
    a warning says how many and how long the longest is; the whole text stays the reference
    that exact match and token F1 compare with, and its length sets how far generation runs."""
    tokens = ModelTokenizer(LAYOUTS["llama2"](tmp_path / "llama2"))
    t = task("Question: {q}\nAnswer:", response="a")
    long_answer = " ".join(["a long answer that goes on"] * 8)
    examples = [Example({"q": "Say something long"}, -1, long_answer), Example({"q": "Say hi"}, -1, " hi")]
    whole = PromptEncoder(t, tokens, 4096).encode_all(examples)
    encoder = PromptEncoder(t, tokens, 32)
    cut, short = encoder.encode_all(examples)
    assert cut.answer_ids == whole[0].answer_ids[:16] and cut.answer_ids[-1] != tokens.eos_id
    assert cut.answer_length == len(whole[0].answer_ids) > 16 and cut.reference == long_answer
    assert short.answer_ids == whole[1].answer_ids and short.answer_ids[-1] == tokens.eos_id
    assert encoder.truncation_report().splitlines()[-1] == (  # after the line on the prompt cut beside it
        "prge: warning: data.max_length=32: 1 of 2 responses did not fit whole beside their prompts and were cut (each "
        "keeping at least its first 16 tokens, half of max_length), so their end and their EOS token are neither trained nor in the answer perplexity (exact match and token F1 "
        f"compare with the whole response); the longest response has {len(whole[0].answer_ids)} tokens: raise "
        "data.max_length (at most the model's max_position_embeddings) to train on more of them")
    assert PromptEncoder(t, tokens, 4096).truncation_report() is None
    # A response longer than half of max_length that fits beside its prompt is kept whole; one
    # that does not keeps what fits beside the whole prompt when that is more than half.
    prompt_length = len(whole[0].prompt_ids)
    fits = PromptEncoder(t, tokens, prompt_length + len(whole[0].answer_ids)).encode(examples[0])
    assert fits.answer_ids == whole[0].answer_ids
    tight = PromptEncoder(t, tokens, prompt_length + len(whole[0].answer_ids) - 1)
    assert tight.encode(examples[0]).answer_ids == whole[0].answer_ids[:-1] and tight.responses_cut == 1


@pytest.mark.parametrize("layout", ["llama3", "gemma", "smollm2"], indirect=True)
def test_chat_truncation_keeps_the_templates_own_tokens_and_drops_the_start_of_the_user_text(layout):
    """With a chat template, a prompt cut to fit keeps what the template writes before the
    user's text (BOS, SmolLM2's default system prompt, the user turn's opening) and the
    generation prompt after it: the model still reads a conversation, missing only the start of
    the user's text. A max_length that leaves no room beside the template's own tokens is refused."""
    name, tokens, hf = layout
    labels = (" positive", " negative")
    t = task("Review: {text}\nSentiment:", labels, chat=True)
    long_text = " ".join(["The movie was great, a positive surprise."] * 20)
    content = f"Review: {long_text}\nSentiment:"
    rendered = hf.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    before, after = rendered.split(content)  # the template's own text around the user's
    header = hf(before, add_special_tokens=False)["input_ids"]
    closing = hf(after, add_special_tokens=False)["input_ids"]
    full = PromptEncoder(t, tokens, 4096).encode(Example({"text": long_text}, 0))
    length = len(header) + len(closing) + 40  # room for the end of the review, not only "\nSentiment:"
    cut = PromptEncoder(t, tokens, length).encode(Example({"text": long_text}, 0))
    room = length - max(len(o) for o in cut.options)
    assert len(cut.prompt_ids) == room < len(full.prompt_ids) and cut.options == full.options
    # the header's tokens (its last one may merge with the user's first character), then the end
    kept = next(h for h in (len(header), len(header) - 1) if full.prompt_ids[:h] == header[:h])
    assert cut.prompt_ids in ([*full.prompt_ids[:h], *full.prompt_ids[len(full.prompt_ids) - (room - h):]]
                              for h in (kept, kept + 1))
    assert cut.prompt_ids[-len(closing):] == closing  # the generation prompt
    if name == "smollm2":  # its template's default system prompt stays
        assert "You are a helpful AI assistant" in hf.decode(cut.prompt_ids)
    with pytest.raises(ValueError, match=r"data.max_length=\d+ leaves no room for the prompt beside the chat "
                                         r"template's \d+ tokens before and \d+ after the user's text"):
        PromptEncoder(t, tokens, len(header) + len(closing) + 1).encode(Example({"text": long_text}, 0))
    # room for two tokens of the user's text: both of "\nSentiment:", none of the review
    with pytest.raises(ValueError, match=r"all of them the template's own text after its last field \('\\nSentiment:'\)"):
        PromptEncoder(t, tokens, len(header) + len(closing) + max(len(o) for o in cut.options) + 2).encode(
            Example({"text": long_text}, 0))


@pytest.mark.parametrize("layout", ["llama3", "gemma", "smollm2"], indirect=True)
def test_chat_truncation_keeps_the_closing_when_the_response_merges_with_it(layout):
    """An SFT response starting with newlines can merge with the generation prompt's last token
    (that token then counts as answer): the rest of the closing still ends every cut prompt, after
    at least one token of the user's text, or the length is refused naming data.max_length; a cut
    keeping fewer than 8 tokens of user text is a warning, counting the user's text only."""
    name, tokens, hf = layout
    t = task("Q: {q}", response="a", chat=True)
    question = " ".join(["What is the capital of France, and why?"] * 20)
    example = Example({"q": question}, -1, "\n\nParis")
    full = PromptEncoder(t, tokens, 4096).encode(example)
    rendered = hf.apply_chat_template([{"role": "user", "content": f"Q: {question}"}], tokenize=False,
                                      add_generation_prompt=True)
    before, after = rendered.split(f"Q: {question}")
    header = hf(before, add_special_tokens=False)["input_ids"]
    closing = hf(after, add_special_tokens=False)["input_ids"]
    present = next(n for n in range(len(closing), -1, -1)  # the closing tokens the prompt keeps (not merged)
                   if full.prompt_ids[len(full.prompt_ids) - n:] == closing[:n])
    assert present >= len(closing) - 1
    smallest = len(header) + len(closing) + len(full.answer_ids)
    for length in range(smallest - 2, smallest + 12):
        encoder = PromptEncoder(t, tokens, length)
        try:
            cut = encoder.encode(example)
        except ValueError as e:
            assert f"data.max_length={length} leaves no room" in str(e) and length < smallest + 2, (length, e)
            continue
        room = length - len(cut.answer_ids)
        assert cut.answer_ids == full.answer_ids and len(cut.prompt_ids) == room
        assert cut.prompt_ids[room - present:] == full.prompt_ids[len(full.prompt_ids) - present:], length
        kept = next(h for h in (len(header), len(header) - 1) if full.prompt_ids[:h] == header[:h])
        assert cut.prompt_ids[:kept] == full.prompt_ids[:kept]
        user_tokens = room - present - kept
        assert user_tokens >= 1, length
        report = encoder.truncation_report()
        assert report.startswith("prge: warning:" if encoder.fewest_kept < 8 else "[prge] note:"), report
        assert "tokens of user text" in report
        if name == "smollm2":
            assert hf.decode(cut.prompt_ids).endswith("<|im_end|>\n<|im_start|>assistant"), hf.decode(cut.prompt_ids)


def test_a_prompt_and_label_that_merge_at_the_boundary_share_one_prompt(tmp_path):
    """A prompt ending in a space: byte-level BPE writes ' positive' as one token, so enc(prompt)
    (ending in 'Ġ') is not a prefix of enc(prompt + label). The sequence stays enc(prompt +
    label); the prompt keeps the tokens every label's encoding shares (the 'Ġ' goes), so both
    label words are scored after the same prompt tokens."""
    tokens = ModelTokenizer(LAYOUTS["llama3"](tmp_path / "llama3"))
    hf = tokens.tokenizer
    labels = ("positive", "42")  # 'Ġpositive' merges with the space; the digits do not (Llama 3's split)
    encoder = PromptEncoder(task("Review: {text}\nSentiment: ", labels), tokens, 128)
    e = encoder.encode(Example({"text": TEXTS[0]}, 0))
    prompt = f"Review: {TEXTS[0]}\nSentiment: "
    context = hf(prompt)["input_ids"]
    assert hf.convert_ids_to_tokens(context[-1:]) == ["Ġ"]
    assert e.prompt_ids == context[:-1]
    for label, option in zip(labels, e.options):
        assert e.prompt_ids + option == hf(prompt + label)["input_ids"]
    assert hf.convert_ids_to_tokens(e.options[0]) == ["Ġpositive"]
    assert hf.convert_ids_to_tokens(e.options[1])[0] == "Ġ"


def test_batch_targets_are_the_answer_tokens(tmp_path):
    tokens = ModelTokenizer(LAYOUTS["gemma"](tmp_path / "gemma"))
    encoder = PromptEncoder(task("{q}", response="a", chat=True), tokens, 64)
    encoded = encoder.encode_all([Example({"q": q}, -1, a) for q, a in QUESTIONS])
    batch = encoder.batch(encoded)
    for row, e in enumerate(encoded):
        n = len(e.prompt_ids)
        assert batch.input_ids[row, : n + len(e.answer_ids)].tolist() == e.prompt_ids + e.answer_ids
        scored = batch.targets[row][batch.targets[row] != -100].tolist()
        assert scored == e.answer_ids and batch.targets[row, n - 1].item() == e.answer_ids[0]


def test_label_words_do_not_take_the_eos_a_tokenizer_appends(tmp_path):
    """A tokenizer that appends EOS to every text (add_eos_token: true): each label word is its
    own tokens, scored and trained without that EOS (lm-evaluation-harness's continuation)."""
    from tokenizers import Tokenizer, processors

    model_dir = LAYOUTS["llama2-fast"](tmp_path / "llama2")  # tokenizer.json's own post-processor
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    bos, eos = raw.token_to_id("<s>"), raw.token_to_id("</s>")
    raw.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    raw.save(str(model_dir / "tokenizer.json"))
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    (model_dir / "tokenizer_config.json").write_text(json.dumps({**config, "add_eos_token": True}))
    tokens = ModelTokenizer(model_dir)
    hf = tokens.tokenizer
    assert hf("It was")["input_ids"][-1] == hf.eos_token_id  # the layout appends it
    assert tokens.end_specials == [hf.eos_token_id]
    encoder = PromptEncoder(task("{text} It was", (" positive", " negative")), tokens, 64)
    e = encoder.encode(Example({"text": "The movie was great."}, 0))
    assert [hf.convert_ids_to_tokens(o) for o in e.options] == [["▁positive"], ["▁negative"]]
    assert hf.eos_token_id not in e.prompt_ids


def _llama3_with_template(tmp_path, template: str):
    model_dir = LAYOUTS["llama3"](tmp_path / "llama3")
    (model_dir / "chat_template.jinja").write_text(template)
    hf = ModelTokenizer(model_dir).tokenizer
    (model_dir / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [hf.convert_tokens_to_ids(t) for t in STOPS["llama3"]]}))
    return ModelTokenizer(model_dir)


def test_a_chat_template_that_leaves_out_the_users_text_is_refused(tmp_path):
    """A template that renders only list-of-parts content (Idefics3 / SmolVLM style) writes the
    same prompt for every example: refused, naming the record."""
    template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                "{% if m['content'] is not string %}{{ m['content'][0]['text'] }}{% endif %}<|eot_id|>{% endfor %}"
                "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    tokens = _llama3_with_template(tmp_path, template)
    encoder = PromptEncoder(task("Review: {text}\nSentiment:", (" positive", " negative"), chat=True), tokens, 128)
    with pytest.raises(ValueError, match="does not write the user's text into the conversation"):
        encoder.encode(Example({"text": TEXTS[0]}, 0, where="r.jsonl:1"))


def test_a_templates_own_text_before_the_reply_is_prompt_not_answer(tmp_path):
    """Qwen3's template writes an empty <think></think> block before the reply: the block is
    part of the prompt, the answer is the reply and its end of turn, so a model that writes
    exactly the reply scores exact match 1."""
    from prge.generation import exact_match, first_lines

    template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                "{% if m['role'] == 'assistant' %}<think>\n\n</think>\n\n{% endif %}{{ m['content'] | trim }}"
                "<|eot_id|>{% endfor %}"
                "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    tokens = _llama3_with_template(tmp_path, template)
    hf = tokens.tokenizer
    encoder = PromptEncoder(task("{q}", response="a", chat=True), tokens, 256)
    # "in" and "think" also occur inside the block: found where the template writes the reply
    questions = QUESTIONS + [("Where?", "in"), ("Verb?", "think")]
    for (q, a), e in zip(questions, encoder.encode_all([Example({"q": q}, -1, a) for q, a in questions])):
        conversation = chat_ids(hf, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], False)
        assert e.prompt_ids + e.answer_ids == conversation[: len(e.prompt_ids) + len(e.answer_ids)]
        assert hf.decode(e.prompt_ids).endswith("</think>\n\n") and "</think>" not in hf.decode(e.answer_ids)
        assert e.answer_ids[-1] == hf.convert_tokens_to_ids("<|eot_id|>")
        assert exact_match(first_lines(tokens.decode(e.answer_ids), 1), a) == 1.0


def test_a_reply_the_template_rewrites_is_answer_as_written(tmp_path):
    """A reasoning reply that a Qwen3-like template re-renders ('<think>X</think>Paris' written
    as '<think>\\nX\\n</think>\\n\\nParis'): trained on the template's rendering, not refused."""
    template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                "{% if m['role'] == 'assistant' %}{% if '</think>' in m['content'] %}"
                "{% set r = m['content'].split('</think>')[0].split('<think>')[-1].strip() %}"
                "{% set c = m['content'].split('</think>')[-1].strip() %}"
                "<think>\n{{ r }}\n</think>\n\n{{ c }}{% else %}<think>\n\n</think>\n\n{{ m['content'] | trim }}"
                "{% endif %}{% else %}{{ m['content'] | trim }}{% endif %}<|eot_id|>{% endfor %}"
                "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    tokens = _llama3_with_template(tmp_path, template)
    hf = tokens.tokenizer
    encoder = PromptEncoder(task("{q}", response="a", chat=True), tokens, 256)
    reply = "<think>It is in France.</think>Paris"
    e = encoder.encode(Example({"q": "Capital?"}, -1, reply))
    conversation = chat_ids(hf, [{"role": "user", "content": "Capital?"}, {"role": "assistant", "content": reply}], False)
    assert e.prompt_ids == chat_ids(hf, [{"role": "user", "content": "Capital?"}], True)
    assert e.prompt_ids + e.answer_ids == conversation[: len(e.prompt_ids) + len(e.answer_ids)]
    assert hf.decode(e.answer_ids).startswith("<think>\nIt is in France.\n</think>\n\nParis")
