"""The built-in tasks, in MeZO's prompt format (princeton-nlp/MeZO, large_models/templates.py):
a template renders the prompt and the answer follows it: a label word (classification) or
one of the example's candidates (multiple choice); prge.data.kinds says how each kind trains
and evaluates. MRPC, WNLI and QNLI, which MeZO's large-model code does not have, use the
questions of the paper's own code (MobiZO) with MeZO's answer format (the word right after the
newline; MobiZO writes a space before it); QNLI's entailment answers "Yes" (MobiZO's code maps
GLUE's label 0, entailment, to "No"). ARC's prompt is lm-evaluation-harness's (MeZO's released
templates have none for ARC or WinoGrande). WSC reads SuperGLUE's spans as published (without
Hugging Face's wsc.fixed correction, which MeZO loads: wsc_fixed applies it) and BoolQ SuperGLUE's passages (with their
titles, which Hugging Face's boolq leaves out): the README lists these differences. Adding a task of an existing kind is one entry in TASKS (and, when its records need
more than a field lookup, a record function beside it).

Every task reads data.data_dir, $PRGE_DATA/<folder>, the user data dir or ../shared/data/<folder>
(prge.data.locations), each in the published format (`files`) or a datasets.save_to_disk
directory (Hugging Face field names, handled by the same record functions)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prge.data.custom import custom_task
from prge.data.examples import Example, Task
from prge.data.kinds import CLASSIFICATION, MULTIPLE_CHOICE
from prge.whitespace import shown_names, shown_value

MODELDATA_DIR = Path("/usr/lib/R/site-library/modeldata/data")


def _index(value, names: dict[str, int], what: str = "label") -> int:
    """A label as its class index: an int (or bool) as is, a string by `names` or as a number.
    ValueError naming the value and the allowed ones otherwise."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lower() in names:
        return names[text.lower()]
    if text.lstrip("-").isdigit():
        return int(text)
    if not names:
        raise ValueError(f"{what} {shown_value(value)} is not a class index (0, 1, ...)")
    raise ValueError(f"{what} {shown_value(value)} is not one of {', '.join(names)} (or a class index)")


def _yes_no(value) -> int:
    """1 for true / 1 / "true", 0 for false / 0 / "false"."""
    return _index(value, {"true": 1, "false": 0})


def _fine_food_record(r: dict) -> Example:
    """small_fine_foods' columns: review (text) and score, 'great' (five stars) or 'other'."""
    score = r["score"]
    if score not in ("great", "other"):
        raise ValueError(f"score {shown_value(score)} is not 'great' or 'other'")
    return Example({"text": " ".join(str(r["review"]).split())}, 0 if score == "great" else 1)


def _fine_food_builtin(split: str) -> list[Example]:
    """Amazon Fine Food reviews (small_fine_foods, R package modeldata, MIT):
    4000 train / 1000 test, score 'great' (5 stars) vs 'other'."""
    if not MODELDATA_DIR.is_dir():
        raise FileNotFoundError(
            f"fine_food: {MODELDATA_DIR} not found; install Debian's r-cran-modeldata "
            "(apt-get install r-cran-modeldata) or set data.data_dir")
    from prge.data.r_lazyload import read_lazyload_object

    name = "training_data" if split == "train" else "testing_data"
    frame = read_lazyload_object(MODELDATA_DIR, name)
    return [replace(_fine_food_record({"review": t, "score": s}),
                    where=f"fine_food: {split} split ({MODELDATA_DIR}, {name}): record {i}")
            for i, (t, s) in enumerate(zip(frame["review"].tolist(), frame["score"].tolist()), 1)]


def _sst2_record(r: dict) -> Example:
    return Example({"text": str(r["sentence"]).strip()}, _index(r["label"], {}))


def _rte_record(r: dict) -> Example:
    # published: "entailment" / "not_entailment"; HF super_glue/rte: 0 / 1
    return Example({"premise": r["premise"], "hypothesis": r["hypothesis"]},
                   _index(r["label"], {"entailment": 0, "not_entailment": 1}))


def _wsc_record(r: dict) -> Example:
    spans = r.get("target", r)  # published: nested under target; HF wsc.fixed: top level
    return Example({"text": r["text"], "span1": spans["span1_text"], "span2": spans["span2_text"]},
                   _yes_no(r["label"]))


# Spans whose words the text separates ("Kamenev ... and Zinoviev"): no case or punctuation fix
# makes them substrings, and wsc.fixed leaves them as published.
WSC_SPLIT_SPANS = ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin")


def _wsc_fixed_span(text: str, spans: dict, k: int) -> str:
    """Span k (1, 2) of a WSC record as Hugging Face's super_glue `wsc.fixed` (which MeZO loads)
    corrects one that is not a substring of its text: the first letter cased as the text's word
    at the span's index ("The table" -> "the table"), a trailing "." dropped, a line break as a
    space."""
    span = spans[f"span{k}_text"]
    if span in text or span in WSC_SPLIT_SPANS:
        return span
    word = text.split()[spans[f"span{k}_index"]]
    span = (span[0].lower() if word[0].islower() else span[0].upper()) + span[1:]
    return span.rstrip(".").replace("\n", " ")


def _wsc_fixed_record(r: dict) -> Example:
    example, spans = _wsc_record(r), r.get("target", r)
    return replace(example, fields={**example.fields, "span1": _wsc_fixed_span(r["text"], spans, 1),
                                    "span2": _wsc_fixed_span(r["text"], spans, 2)})


def _wsc_prompt(f: dict) -> str:
    return (f"{f['text']}\nIn the previous sentence, does the pronoun \"{f['span2'].lower()}\" "
            f"refer to {f['span1']}? Yes or No?\n")


def _cb_record(r: dict) -> Example:
    # published: strings; HF super_glue/cb: 0 entailment, 1 contradiction, 2 neutral
    return Example({"premise": r["premise"], "hypothesis": r["hypothesis"]},
                   _index(r["label"], {"entailment": 0, "contradiction": 1, "neutral": 2}))


def _boolq_record(r: dict) -> Example:
    question = str(r["question"]).strip()
    question = question[0].upper() + question[1:]
    if not question.endswith("?"):
        question += "?"
    answer = r["label"] if "label" in r else r["answer"]  # SuperGLUE / super_glue: label; google/boolq: answer
    return Example({"passage": r["passage"], "question": question}, 0 if _yes_no(answer) else 1)


def _wic_record(r: dict) -> Example:
    return Example({"word": r["word"], "sentence1": r["sentence1"], "sentence2": r["sentence2"]}, _yes_no(r["label"]))


def _multirc_flat(paragraph: str, question: str, answer: str, label) -> Example:
    return Example({"paragraph": paragraph, "question": question, "answer": answer}, _yes_no(label))


def _multirc_record(r: dict) -> Example | list[Example]:
    """Published (SuperGLUE): one paragraph per record with its questions and their answers,
    each answer one example; HF super_glue/multirc: one answer per row."""
    if "passage" not in r:
        return _multirc_flat(r["paragraph"], r["question"], r["answer"], r["label"])
    passage = r["passage"]
    # Answers without text are left out (3 of the 27243 of the published train split).
    return [_multirc_flat(passage["text"], q["question"], a["text"], a["label"])
            for q in passage["questions"] for a in q["answers"] if str(a["text"]).strip()]


def _mrpc_record(r: dict) -> Example:
    if "Quality" in r:  # GLUE's TSV
        return Example({"sentence1": r["#1 String"], "sentence2": r["#2 String"]}, _index(r["Quality"], {}))
    return Example({"sentence1": r["sentence1"], "sentence2": r["sentence2"]}, _index(r["label"], {}))


def _wnli_record(r: dict) -> Example:
    return Example({"sentence1": r["sentence1"], "sentence2": r["sentence2"]}, _index(r["label"], {}))


def _qnli_record(r: dict) -> Example:
    # published: strings; HF glue/qnli: 0 entailment, 1 not_entailment
    return Example({"question": r["question"], "sentence": r["sentence"]},
                   _index(r["label"], {"entailment": 0, "not_entailment": 1}))


def _copa_record(r: dict) -> Example:
    """MeZO's COPA: the premise without its full stop, "because" (cause) or "so" (effect), and
    each choice with its first word in lower case (unless it is "I")."""
    connectives = {"cause": "because", "effect": "so"}
    if r["question"] not in connectives:
        raise ValueError(f"question {shown_value(r['question'])} is not 'cause' or 'effect'")
    connective = connectives[r["question"]]
    premise = str(r["premise"]).rstrip()
    premise = premise[:-1] if premise.endswith(".") else premise

    def continuation(choice: str) -> str:
        words = str(choice).strip().split(" ")
        if words[0] != "I":
            words[0] = words[0].lower()
        return " " + " ".join(words)

    label = _index(r["label"], {})
    return Example({"premise": premise, "connective": connective}, label,
                   choices=(continuation(r["choice1"]), continuation(r["choice2"])))


def _arc_record(r: dict) -> Example:
    """ARC (Hugging Face ai2_arc layout): the gold choice is the one labelled answerKey."""
    texts, labels = list(r["choices"]["text"]), [str(x) for x in r["choices"]["label"]]
    if str(r["answerKey"]) not in labels:
        raise ValueError(f"answerKey {shown_value(r['answerKey'])} is not one of the choice labels ({shown_names(labels)})")
    return Example({"question": str(r["question"]).strip()}, labels.index(str(r["answerKey"])),
                   choices=tuple(" " + str(t).strip() for t in texts))


def _winogrande_record(r: dict) -> Example:
    """The sentence up to the blank is the prompt; each candidate is an option followed by the
    rest of the sentence. The words before the blank add the same log-likelihood to both
    options' sums, so `accuracy_raw` picks as the whole filled-in sentence's sum does; the
    per-token mean (`accuracy`) is over the candidate's tokens only (neither is MeZO's mean over
    the whole sentence). `accuracy_partial` is lm-evaluation-harness's score, on its texts: the
    words after the blank (" " + the rest of the sentence, stripped), given the sentence up to the
    blank as written with each option in it (partial_scoring)."""
    sentence = str(r["sentence"])
    if sentence.count("_") != 1:
        raise ValueError(f"sentence has {sentence.count('_')} blanks '_', expected 1: {shown_value(sentence)}")
    before, after = sentence.split("_")
    space = " " if before.endswith(" ") else ""
    options = (str(r["option1"]), str(r["option2"]))
    return Example({"context": before.rstrip(" ")}, _index(r["answer"], {}) - 1,
                   choices=tuple(space + o + after for o in options),
                   partial_scoring=tuple((before + o, " " + after.strip()) for o in options))


YES_NO = ("Yes", "No")
NO_YES = ("No", "Yes")

TASKS: dict[str, Task] = {t.name: t for t in [
    # The label is five stars ('great') or not; SmolLM2-135M ranks these reviews far better
    # with a sentiment question (zero-shot AUC 0.76 on 400 test reviews) than with "Is this a
    # five-star review? Yes/No" (0.51), so fine-tuning starts from a prompt the model reads.
    Task("fine_food", "Amazon Fine Food reviews: five stars ('great', positive) or not (negative)",
         (" positive", " negative"), lambda f: f"Review: {f['text']}\nSentiment:",
         _fine_food_record, {"train": "train.csv", "eval": "test.csv"}, _fine_food_builtin),
    Task("sst2", "GLUE SST-2 sentiment", (" terrible", " great"), lambda f: f"{f['text']} It was",
         _sst2_record, {"train": "train.tsv", "eval": "validation.tsv"}),
    Task("rte", "SuperGLUE RTE entailment", YES_NO,
         lambda f: f"{f['premise']}\nDoes this mean that \"{f['hypothesis']}\" is true? Yes or No?\n",
         _rte_record, {"train": "train.jsonl", "eval": "validation.jsonl"}),
    Task("wsc", "SuperGLUE WSC coreference", NO_YES, _wsc_prompt,
         _wsc_record, {"train": "train.jsonl", "eval": "validation.jsonl"}),
    Task("wsc_fixed", "SuperGLUE WSC with Hugging Face's wsc.fixed spans (as MeZO loads it)", NO_YES, _wsc_prompt,
         _wsc_fixed_record, {"train": "train.jsonl", "eval": "validation.jsonl"}, folder="wsc"),
    Task("cb", "SuperGLUE CommitmentBank entailment (3 classes)", ("Yes", "No", "Maybe"),
         lambda f: f"Suppose {f['premise']} Can we infer that \"{f['hypothesis']}\"? Yes, No, or Maybe?\n",
         _cb_record, {"train": "train.jsonl", "eval": "val.jsonl"}),
    Task("boolq", "SuperGLUE BoolQ yes/no questions on a passage", YES_NO,
         lambda f: f"{f['passage']} {f['question']}\n",
         _boolq_record, {"train": "train.jsonl", "eval": "val.jsonl"}),
    Task("wic", "SuperGLUE WiC word sense", NO_YES,
         lambda f: f"Does the word \"{f['word']}\" have the same meaning in these two sentences? Yes, No?\n"
                   f"{f['sentence1']}\n{f['sentence2']}\n",
         _wic_record, {"train": "train.jsonl", "eval": "val.jsonl"}),
    Task("multirc", "SuperGLUE MultiRC: is this answer to a question on a paragraph correct (one example "
         "per answer)", NO_YES,
         lambda f: f"{f['paragraph']}\nQuestion: {f['question']}\nI found this answer \"{f['answer']}\". "
                   "Is that correct? Yes or No?\n",
         _multirc_record, {"train": "train.jsonl", "eval": "val.jsonl"}),
    Task("mrpc", "GLUE MRPC paraphrase", NO_YES,
         lambda f: "Do the following two sentences mean the same thing? Yes or No?\n"
                   f"Sentence 1: {f['sentence1']}\nSentence 2: {f['sentence2']}\n",
         _mrpc_record, {"train": "train.tsv", "eval": "dev.tsv"}),
    Task("wnli", "GLUE WNLI entailment", NO_YES,
         lambda f: "Given the first sentence, is the second sentence true? Yes or No?\n"
                   f"Sentence 1: {f['sentence1']}\nSentence 2: {f['sentence2']}\n",
         _wnli_record, {"train": "train.tsv", "eval": "dev.tsv"}),
    Task("qnli", "GLUE QNLI: does the sentence answer the question", YES_NO,
         lambda f: "Does this sentence answer the question? Yes or No?\n"
                   f"Question: {f['question']}\nSentence: {f['sentence']}\n",
         _qnli_record, {"train": "train.tsv", "eval": "dev.tsv"}),
    Task("copa", "SuperGLUE COPA: the more plausible cause or effect (2 candidates)", (),
         lambda f: f"{f['premise']} {f['connective']}", _copa_record,
         {"train": "train.jsonl", "eval": "val.jsonl"}, kind=MULTIPLE_CHOICE),
    Task("arc_easy", "AI2 ARC-Easy science questions (3-5 candidates)", (),
         lambda f: f"Question: {f['question']}\nAnswer:", _arc_record,
         {"train": "train.json", "eval": "validation.json"}, kind=MULTIPLE_CHOICE, folder="arc-easy"),
    Task("arc_challenge", "AI2 ARC-Challenge science questions (3-5 candidates)", (),
         lambda f: f"Question: {f['question']}\nAnswer:", _arc_record,
         {"train": "ARC-Challenge_train.jsonl", "eval": "ARC-Challenge_validation.jsonl"},
         kind=MULTIPLE_CHOICE, folder="arc-challenge"),
    Task("winogrande", "WinoGrande 1.1: which option fills the blank (2 candidates)", (),
         lambda f: f["context"], _winogrande_record,
         {"train": "train_xl.jsonl", "eval": "dev.jsonl"}, kind=MULTIPLE_CHOICE),
]}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {shown_value(name)} (known: {', '.join(sorted(TASKS))}, or custom "
                         "with data.train_file / eval_file / template)")
    return TASKS[name]


def task_for(data) -> Task:
    """The task a config's data section names: a built-in one (wrapped by the model's chat
    template when data.chat_template is set), or `custom` from its keys."""
    if data.task == "custom":
        return custom_task(data)
    task = get_task(data.task)
    return replace(task, chat_template=True) if data.chat_template else task
