"""The notebooks run end to end (nbclient) with their parameters cell swapped for a tiny
config: random tiny Llama + word-level tokenizer + a labelled CSV made by the test."""
from pathlib import Path

import pytest
import yaml

from conftest import make_tiny_assets, write_config

from installed import installed_module

nbformat = installed_module("nbformat", "pip install nbformat")
nbclient = installed_module("nbclient", "pip install nbclient ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, parameters: str, cwd: Path):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    cells[0].source = parameters
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def test_quickstart_notebook(tmp_path):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    notebook = execute("quickstart.ipynb", "\n".join([
        f"MODEL = {str(model_dir)!r}", "TASK = 'fine_food'", f"DATA_DIR = {str(data_dir)!r}",
        "STEPS = 4", "QUERIES = 2", "BATCH_SIZE = 2", "MAX_LENGTH = 16", "EVAL_EXAMPLES = 8",
        "EVAL_EVERY = 2", f"OUTPUT_DIR = {str(tmp_path / 'run')!r}"]), tmp_path)
    assert (tmp_path / "run" / "summary.json").is_file()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)


def test_reproduction_notebook(tmp_path):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    base = write_config(tmp_path, model_dir, data_dir, run={"steps": 2, "eval_every": 1})
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": base.name, "grid": {"run.seed": [1, 2]},
        "variants": [{"name": "lora_fa_q1", "estimator.queries": 1, "estimator.parallel": "sequential"},
                     {"name": "prge_q2_dual", "estimator.queries": 2, "estimator.parallel": "dual"}]}))
    report = tmp_path / "report"
    execute("reproduction.ipynb", "\n".join([
        f"SWEEP = {str(sweep)!r}", "OVERRIDES = {}", f"OUTPUT_ROOT = {str(tmp_path / 'runs')!r}",
        f"REPORT_DIR = {str(report)!r}"]), tmp_path)
    table = (report / "reproduction.md").read_text()
    assert "| lora_fa_q1 |" in table and "| prge_q2_dual |" in table and "1 2" in table  # seeds aggregated
    assert (report / "reproduction_accuracy_vs_forward_passes.png").is_file()
