"""Run an exported step from Python, one training step a call:
  OnnxRunner / AotiRunner / ExecuTorchRunner / EagerRunner
      .step(ids, targets, lr, eps, step_key) -> (loss, projected_grads, [B ...])
open_runner(export_dir) picks one from export.json; runner_binary() finds the pure C++ one."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from prge.export.step_module import MutableBufferStep


def _scalars(lr, epsilon, step_key, device="cpu"):
    return (torch.tensor(lr, dtype=torch.float32, device=device),
            torch.tensor(epsilon, dtype=torch.float32, device=device),
            torch.tensor(step_key, dtype=torch.int64, device=device))


class OnnxRunner:
    """ONNX Runtime (Python API): feeds each step's updated B into the next."""
    runtime = "onnx"

    def __init__(self, path: str | Path, initial_b: list[torch.Tensor], providers=None):
        import onnxruntime as ort

        if not Path(path).is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        self.session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        self.b = [b.detach().cpu().float().numpy() for b in initial_b]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def step(self, input_ids, targets, lr, epsilon, step_key):
        feeds = {"input_ids": input_ids.cpu().numpy(), "targets": targets.cpu().numpy(),
                 "lr": np.array(lr, dtype=np.float32), "epsilon": np.array(epsilon, dtype=np.float32),
                 "step_key": np.array(step_key, dtype=np.int64)}
        feeds.update({f"b_{i}": b for i, b in enumerate(self.b)})
        loss, grads, *self.b = self.session.run(self.output_names, feeds)
        return float(loss), torch.from_numpy(np.asarray(grads)).double(), [torch.from_numpy(b) for b in self.b]


class AotiRunner:
    """AOTInductor package loaded with torch._inductor (the same .pt2 prge_run_exported loads)."""
    runtime = "aoti"

    def __init__(self, path: str | Path, device: str = "cpu"):
        if not Path(path).is_file():
            raise FileNotFoundError(f"AOTInductor package not found: {path}")
        self.model = torch._inductor.aoti_load_package(str(path))
        self.device = device

    def step(self, input_ids, targets, lr, epsilon, step_key):
        with torch.inference_mode():
            loss, grads, *b = self.model(input_ids.to(self.device), targets.to(self.device),
                                         *_scalars(lr, epsilon, step_key, self.device))
        return float(loss), grads.double().cpu(), [x.cpu() for x in b]


class ExecuTorchRunner:
    """ExecuTorch program (.pte) run by its portable-kernel runtime (Python bindings)."""
    runtime = "executorch"

    def __init__(self, path: str | Path):
        from executorch.extension.pybindings.portable_lib import _load_for_executorch

        if not Path(path).is_file():
            raise FileNotFoundError(f"ExecuTorch program not found: {path}")
        self.module = _load_for_executorch(str(path))

    def step(self, input_ids, targets, lr, epsilon, step_key):
        loss, grads, *b = self.module.run_method(
            "forward", (input_ids.cpu().contiguous(), targets.cpu().contiguous(), *_scalars(lr, epsilon, step_key)))
        return float(loss), grads.double(), [x.clone() for x in b]


class EagerRunner:
    """The exportable module itself, run eagerly by PyTorch (reference for the runtimes)."""
    runtime = "eager-module"

    def __init__(self, step: MutableBufferStep):
        self.module = step

    def step(self, input_ids, targets, lr, epsilon, step_key):
        device = self.module.coordinates.device
        with torch.inference_mode():
            loss, grads, *b = self.module(input_ids.to(device), targets.to(device),
                                          *_scalars(lr, epsilon, step_key, device))
        return float(loss), grads.double().cpu(), [x.cpu() for x in b]


def open_runner(export_dir: str | Path):
    export_dir = Path(export_dir)
    manifest = json.loads((export_dir / "export.json").read_text())
    path = export_dir / manifest["model"]
    if manifest["runtime"] == "onnx":
        from safetensors.torch import load_file

        initial = load_file(str(export_dir / manifest["initial_b"]))
        return OnnxRunner(path, [initial[f"b_{i}"] for i in range(len(initial))])
    if manifest["runtime"] == "executorch":
        return ExecuTorchRunner(path)
    return AotiRunner(path, manifest["device"])


def runner_binary() -> Path:
    """The pure C++ runner, prge_run_exported, installed beside the package (or in the build tree)."""
    here = Path(__file__).resolve().parents[1]
    candidates = [here / "bin" / "prge_run_exported"]
    try:
        import importlib.util

        spec = importlib.util.find_spec("prge._core")
        if spec and spec.origin:
            candidates.append(Path(spec.origin).parent / "bin" / "prge_run_exported")
    except ImportError:
        pass
    candidates.append(here.parents[1] / "build" / "py" / "csrc" / "prge_run_exported")
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"prge_run_exported not found (looked in {', '.join(map(str, candidates))})")
