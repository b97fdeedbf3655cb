"""Every built-in task on a tiny fixture this test writes in the task's published format (as
../shared/data/<folder> holds it; tests never read ../shared): the prompt is MeZO's template
written out by hand here, the answer is the label word or candidate MeZO scores, the label is
the record's; tasks published without a training split name data.train_from; `prge data list`
shows every task with its kind and where its data is; bad records are named."""
import json

import pytest

from prge.cli import main
from prge.data.examples import MissingSplit
from prge.data.tasks import TASKS, get_task


def jsonl(*records):
    return "".join(json.dumps(r) + "\n" for r in records)


def tsv(header, *rows):
    return "\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows)


# task -> (files of its folder, {split: [(prompt, gold answer as appended, label), ...]})
FIXTURES = {
    "sst2": ({"train.tsv": tsv(["sentence", "label"], ["a gripping film ", 1], ["dull", 0]),
              "validation.tsv": tsv(["sentence", "label"], ["it 's a charming journey .", 1])},
             {"train": [("a gripping film It was", " great", 1), ("dull It was", " terrible", 0)],
              "eval": [("it 's a charming journey . It was", " great", 1)]}),
    "rte": ({"train.jsonl": jsonl({"premise": "Dana sold a car.", "hypothesis": "A car was sold.",
                                   "label": "entailment", "idx": 0}),
             "validation.jsonl": jsonl({"premise": "P.", "hypothesis": "H", "label": "not_entailment", "idx": 0})},
            {"train": [('Dana sold a car.\nDoes this mean that "A car was sold." is true? Yes or No?\n', "Yes", 0)],
             "eval": [('P.\nDoes this mean that "H" is true? Yes or No?\n', "No", 1)]}),
    "wsc": ({"train.jsonl": jsonl({"text": "Mark told Pete many lies. He was sorry.", "label": True, "idx": 0,
                                   "target": {"span1_text": "Mark", "span2_text": "He", "span1_index": 0,
                                              "span2_index": 5}}),
             "validation.jsonl": jsonl({"text": "T", "label": False, "idx": 0,
                                        "target": {"span1_text": "Ann", "span2_text": "Her"}})},
            {"train": [('Mark told Pete many lies. He was sorry.\nIn the previous sentence, does the pronoun "he" '
                        "refer to Mark? Yes or No?\n", "Yes", 1)],
             "eval": [('T\nIn the previous sentence, does the pronoun "her" refer to Ann? Yes or No?\n', "No", 0)]}),
    # MeZO's WSC (Hugging Face's wsc.fixed): a span the text writes otherwise is cased as the text's word at
    # its index, without a final "." or a line break; one the text holds, or whose words it separates, stays.
    "wsc_fixed": ({"train.jsonl": jsonl({"text": "The cat sat on the table because it was flat.", "label": True,
                                         "idx": 0, "target": {"span1_text": "The table.", "span2_text": "it",
                                                              "span1_index": 4, "span2_index": 7}},
                                        {"text": "Kamenev told Zinoviev he would go.", "label": False, "idx": 1,
                                         "target": {"span1_text": "Kamenev and Zinoviev", "span2_text": "he",
                                                    "span1_index": 0, "span2_index": 3}}),
                   "validation.jsonl": jsonl({"text": "Mark told Pete\nmany lies. He was sorry.", "label": False,
                                              "idx": 0, "target": {"span1_text": "pete\nmany", "span2_text": "He",
                                                                   "span1_index": 2, "span2_index": 5}})},
                  {"train": [('The cat sat on the table because it was flat.\nIn the previous sentence, does the '
                              'pronoun "it" refer to the table? Yes or No?\n', "Yes", 1),
                             ('Kamenev told Zinoviev he would go.\nIn the previous sentence, does the pronoun "he" '
                              "refer to Kamenev and Zinoviev? Yes or No?\n", "No", 0)],
                   "eval": [('Mark told Pete\nmany lies. He was sorry.\nIn the previous sentence, does the pronoun '
                             '"he" refer to Pete many? Yes or No?\n', "No", 0)]}),
    "cb": ({"train.jsonl": jsonl({"premise": "It rained.", "hypothesis": "it was wet", "label": "neutral", "idx": 0},
                                 {"premise": "A.", "hypothesis": "b", "label": "contradiction", "idx": 1}),
            "val.jsonl": jsonl({"premise": "A.", "hypothesis": "a", "label": "entailment", "idx": 0})},
           {"train": [('Suppose It rained. Can we infer that "it was wet"? Yes, No, or Maybe?\n', "Maybe", 2),
                      ('Suppose A. Can we infer that "b"? Yes, No, or Maybe?\n', "No", 1)],
            "eval": [('Suppose A. Can we infer that "a"? Yes, No, or Maybe?\n', "Yes", 0)]}),
    "boolq": ({"val.jsonl": jsonl({"question": "is water wet", "passage": "Water -- Water is wet.", "idx": 0,
                                   "label": True},
                                  {"question": "Is fire cold?", "passage": "Fire -- Hot.", "idx": 1, "label": False})},
              {"eval": [("Water -- Water is wet. Is water wet?\n", "Yes", 0), ("Fire -- Hot. Is fire cold?\n", "No", 1)]}),
    "wic": ({"train.jsonl": jsonl({"word": "class", "sentence1": "A new class.", "sentence2": "Real class.",
                                   "idx": 0, "label": False, "start1": 6, "end1": 11, "start2": 5, "end2": 10,
                                   "version": 1.1}),
             "val.jsonl": jsonl({"word": "bank", "sentence1": "A river bank.", "sentence2": "The bank's shore.",
                                 "idx": 0, "label": True})},
            {"train": [('Does the word "class" have the same meaning in these two sentences? Yes, No?\n'
                        "A new class.\nReal class.\n", "No", 0)],
             "eval": [('Does the word "bank" have the same meaning in these two sentences? Yes, No?\n'
                       "A river bank.\nThe bank's shore.\n", "Yes", 1)]}),
    "multirc": ({"train.jsonl": jsonl({"idx": 0, "version": 1.1, "passage": {"text": "Sam ran home.", "questions": [
                    {"question": "Who ran?", "idx": 0, "answers": [{"text": "Sam", "idx": 0, "label": 1},
                                                                  {"text": "", "idx": 1, "label": 0},
                                                                  {"text": "Kim", "idx": 2, "label": 0}]},
                    {"question": "Where to?", "idx": 1, "answers": [{"text": "home", "idx": 3, "label": 1}]}]}}),
                 "val.jsonl": jsonl({"idx": 0, "passage": {"text": "P.", "questions": [
                     {"question": "Q?", "idx": 0, "answers": [{"text": "A", "idx": 0, "label": 0}]}]}})},
                {"train": [('Sam ran home.\nQuestion: Who ran?\nI found this answer "Sam". Is that correct? Yes or No?\n',
                            "Yes", 1),
                           ('Sam ran home.\nQuestion: Who ran?\nI found this answer "Kim". Is that correct? Yes or No?\n',
                            "No", 0),
                           ('Sam ran home.\nQuestion: Where to?\nI found this answer "home". Is that correct? '
                            "Yes or No?\n", "Yes", 1)],
                 "eval": [('P.\nQuestion: Q?\nI found this answer "A". Is that correct? Yes or No?\n', "No", 0)]}),
    "mrpc": ({"train.tsv": "\ufeff" + tsv(["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                                          [1, 11, 12, 'He said " yes .', "He agreed ."]),
              "dev.tsv": "\ufeff" + tsv(["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], [0, 1, 2, "A .", "B ."])},
             {"train": [("Do the following two sentences mean the same thing? Yes or No?\n"
                         'Sentence 1: He said " yes .\nSentence 2: He agreed .\n', "Yes", 1)],
              "eval": [("Do the following two sentences mean the same thing? Yes or No?\n"
                        "Sentence 1: A .\nSentence 2: B .\n", "No", 0)]}),
    "wnli": ({"train.tsv": tsv(["index", "sentence1", "sentence2", "label"], [0, "Jane knocked.", "Jane did.", 1]),
              "dev.tsv": tsv(["index", "sentence1", "sentence2", "label"], [0, "The drain is clogged.", "It is.", 0])},
             {"train": [("Given the first sentence, is the second sentence true? Yes or No?\n"
                         "Sentence 1: Jane knocked.\nSentence 2: Jane did.\n", "Yes", 1)],
              "eval": [("Given the first sentence, is the second sentence true? Yes or No?\n"
                        "Sentence 1: The drain is clogged.\nSentence 2: It is.\n", "No", 0)]}),
    "qnli": ({"dev.tsv": tsv(["index", "question", "sentence", "label"], [0, "What came?", "The law came.", "entailment"],
                             [1, "Who?", "Nobody knows.", "not_entailment"])},
             {"eval": [("Does this sentence answer the question? Yes or No?\nQuestion: What came?\n"
                        "Sentence: The law came.\n", "Yes", 0),
                       ("Does this sentence answer the question? Yes or No?\nQuestion: Who?\nSentence: Nobody knows.\n",
                        "No", 1)]}),
    "copa": ({"train.jsonl": jsonl({"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
                                    "choice2": "The grass was cut.", "question": "cause", "label": 0, "idx": 0}),
              "val.jsonl": jsonl({"premise": "I knocked", "choice1": "Nobody came.", "choice2": "I left.",
                                  "question": "effect", "label": 1, "idx": 0})},
             {"train": [("My body cast a shadow over the grass because", (" the sun was rising.", " the grass was cut."), 0)],
              "eval": [("I knocked so", (" nobody came.", " I left."), 1)]}),
    "arc_easy": ({"train.json": json.dumps([{"id": "a", "question": "Which is a gas? ", "choices": {
                      "text": ["ice", "steam", "rock"], "label": ["A", "B", "C"]}, "answerKey": "B"}], indent=2),
                  "validation.json": json.dumps([{"id": "b", "question": "Which is hot?", "choices": {
                      "text": ["sun", "snow", "ice", "rain"], "label": ["1", "2", "3", "4"]}, "answerKey": "1"}])},
                 {"train": [("Question: Which is a gas?\nAnswer:", (" ice", " steam", " rock"), 1)],
                  "eval": [("Question: Which is hot?\nAnswer:", (" sun", " snow", " ice", " rain"), 0)]}),
    "arc_challenge": ({"ARC-Challenge_train.jsonl": jsonl({"id": "a", "question": "Q1?", "choices": {
                           "text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "B"}),
                       "ARC-Challenge_validation.jsonl": jsonl({"id": "b", "question": "Q2?", "choices": {
                           "text": ["u", "v", "w"], "label": ["A", "B", "C"]}, "answerKey": "C"})},
                      {"train": [("Question: Q1?\nAnswer:", (" x", " y"), 1)],
                       "eval": [("Question: Q2?\nAnswer:", (" u", " v", " w"), 2)]}),
    "winogrande": ({"dev.jsonl": jsonl({"qID": "q", "sentence": "Sarah beat Maria so _ got the cup.",
                                        "option1": "Sarah", "option2": "Maria", "answer": "1"})},
                   {"eval": [("Sarah beat Maria so", (" Sarah got the cup.", " Maria got the cup."), 0)]}),
}
ONLY_VALIDATION = {"boolq": "train.jsonl", "qnli": "train.tsv", "winogrande": "train_xl.jsonl"}


def test_every_built_in_task_has_a_fixture():
    assert set(FIXTURES) | {"fine_food"} == set(TASKS)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_task_reads_its_published_files_with_mezos_prompt_and_answers(tmp_path, monkeypatch, name):
    files, expected = FIXTURES[name]
    task = get_task(name)
    folder = tmp_path / task.data_folder
    folder.mkdir()
    for file, text in files.items():
        (folder / file).write_text(text, encoding="utf-8")
    monkeypatch.setenv("PRGE_DATA", str(tmp_path))  # found as $PRGE_DATA/<folder>, as ../shared/data holds it
    for split, rows in expected.items():
        examples = task.load(split)
        assert len(examples) == len(rows)
        for example, (prompt, answer, label) in zip(examples, rows):
            assert task.prompt(example) == prompt
            assert example.label == label
            if isinstance(answer, tuple):  # multiple choice: the example's own candidates
                assert example.choices == answer and task.label_words == ()
            else:
                assert task.label_words[example.label] == answer and example.choices == ()
            assert example.where.startswith(f"{name}: {split} split: {folder}/") and ": record " in example.where
    if name in ONLY_VALIDATION:
        with pytest.raises(MissingSplit, match=f"{name}: {folder / ONLY_VALIDATION[name]} not found"):
            task.load("train")


def test_multirc_answers_are_examples_named_by_record_and_item(tmp_path):
    files, _ = FIXTURES["multirc"]
    (tmp_path / "train.jsonl").write_text(files["train.jsonl"])
    examples = get_task("multirc").load("train", tmp_path)
    assert [e.where.rsplit(": ", 1)[1] for e in examples] == ["record 1 (line 1), item 1", "record 1 (line 1), item 2",
                                                             "record 1 (line 1), item 3"]  # the empty answer is left out


@pytest.mark.parametrize("name, file, record, message", [
    ("arc_easy", "train.json", [{"question": "Q", "choices": {"text": ["a", "b"], "label": ["A", "B"]},
                                 "answerKey": "E"}], "answerKey 'E' is not one of the choice labels ('A', 'B')"),
    ("copa", "train.jsonl", {"premise": "P.", "choice1": "a", "choice2": "b", "question": "reason", "label": 0},
     "question 'reason' is not 'cause' or 'effect'"),
    ("cb", "train.jsonl", {"premise": "P.", "hypothesis": "h", "label": "maybe"},
     "label 'maybe' is not one of entailment, contradiction, neutral"),
    ("winogrande", "train_xl.jsonl", {"sentence": "No blank here.", "option1": "a", "option2": "b", "answer": "1"},
     "sentence has 0 blanks '_', expected 1"),
    ("wic", "train.jsonl", {"word": "w", "sentence1": "a", "label": True}, "no field 'sentence2' (it has: 'word', 'sentence1', 'label')"),
])
def test_bad_records_are_named_by_task_split_file_and_record(tmp_path, name, file, record, message):
    text = json.dumps(record) if file.endswith(".json") else jsonl(record)
    (tmp_path / file).write_text(text)
    with pytest.raises(ValueError) as error:
        get_task(name).load("train", tmp_path)
    assert str(error.value).startswith(f"{name}: train split: {tmp_path / file}: record 1")
    assert message in str(error.value), str(error.value)


def test_a_json_array_file_that_is_not_one_is_named(tmp_path):
    (tmp_path / "train.json").write_text('{"question": "Q"}')
    with pytest.raises(ValueError, match=f"{tmp_path / 'train.json'}: expected one JSON array of objects"):
        get_task("arc_easy").load("train", tmp_path)
    (tmp_path / "train.json").write_text("[{")
    with pytest.raises(ValueError, match=f"{tmp_path / 'train.json'}:1: malformed JSON"):
        get_task("arc_easy").load("train", tmp_path)


def test_data_list_shows_every_task_with_its_kind_and_data_and_copy_uses_its_folder(tmp_path, monkeypatch, capsys):
    source = tmp_path / "published"
    source.mkdir()
    for file, text in FIXTURES["arc_easy"][0].items():
        (source / file).write_text(text)
    monkeypatch.setenv("PRGE_DATA", str(tmp_path / "userdata"))
    assert main(["data", "copy", "arc_easy", "--from", str(source)]) == 0
    assert (tmp_path / "userdata" / "arc-easy" / "train.json").is_file()
    (tmp_path / "userdata" / "boolq").mkdir()
    (tmp_path / "userdata" / "boolq" / "val.jsonl").write_text(FIXTURES["boolq"][0]["val.jsonl"])
    assert main(["data", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert set(lines) == set(TASKS)
    for name, task in TASKS.items():
        assert lines[name].split()[1] == task.kind.name
    assert str(tmp_path / "userdata" / "arc-easy") in lines["arc_easy"] and "no training split" not in lines["arc_easy"]
    assert f"{tmp_path / 'userdata' / 'boolq'} (no training split: data.train_from: validation)" in lines["boolq"]
    assert lines["copa"].split()[1] == "multiple_choice" and lines["sst2"].split()[1] == "classification"


def test_hf_save_to_disk_layouts_of_the_new_tasks(tmp_path):
    from installed import installed_module

    datasets = installed_module("datasets", "pip install datasets")

    def save(name, train, validation):
        path = tmp_path / name
        datasets.DatasetDict({"train": datasets.Dataset.from_list(train),
                              "validation": datasets.Dataset.from_list(validation)}).save_to_disk(str(path))
        return path

    # super_glue/multirc: one answer per row; super_glue/cb: integer labels; super_glue/copa as published
    multirc = save("multirc", [{"paragraph": "P.", "question": "Q?", "answer": "A", "idx": {"paragraph": 0},
                                "label": 1}], [{"paragraph": "P.", "question": "Q?", "answer": "B",
                                                "idx": {"paragraph": 0}, "label": 0}])
    assert [(e.fields["answer"], e.label) for e in get_task("multirc").load("train", multirc)] == [("A", 1)]
    cb = save("cb", [{"premise": "P.", "hypothesis": "h", "label": 2, "idx": 0}],
              [{"premise": "P.", "hypothesis": "h", "label": 1, "idx": 0}])
    assert get_task("cb").load("train", cb)[0].label == 2 and get_task("cb").load("eval", cb)[0].label == 1
    # glue/qnli: 0 = entailment ("Yes"); boolq as google/boolq writes it: answer
    qnli = save("qnli", [{"question": "Q?", "sentence": "S.", "label": 1, "idx": 0}],
                [{"question": "Q?", "sentence": "S.", "label": 0, "idx": 0}])
    assert get_task("qnli").load("eval", qnli)[0].label == 0
    boolq = save("boolq", [{"question": "q", "passage": "p", "answer": False}],
                 [{"question": "q", "passage": "p", "answer": True}])
    assert [e.label for e in get_task("boolq").load("train", boolq)] == [1]
    copa = save("copa", [{"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "effect", "label": 1,
                          "idx": 0}], [{"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "cause",
                                        "label": 0, "idx": 0}])
    example = get_task("copa").load("train", copa)[0]
    assert example.choices == (" a.", " b.") and example.label == 1
    only_validation = tmp_path / "winogrande"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(
        [{"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "2"}])}).save_to_disk(str(only_validation))
    assert get_task("winogrande").load("eval", only_validation)[0].label == 1
    with pytest.raises(MissingSplit, match="no 'train' split"):
        get_task("winogrande").load("train", only_validation)
