"""Run an exported step from Python, one training step a call:
  OnnxRunner / AotiRunner / ExecuTorchRunner / EagerRunner
      .step(ids, targets, lr, eps, step_key) -> (loss, projected_grads, [B ...])
      .set_b([B ...])   continue from other B (a resumed run); ExecuTorch cannot
open_runner(export_dir) picks one from export.json and checks every step's batch against the
exported shape; runner_binary() finds the pure C++ one."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from prge.export.step_module import MutableBufferStep
from prge.whitespace import shown_value


def _scalars(lr, epsilon, step_key, device="cpu"):
    return (torch.tensor(lr, dtype=torch.float32, device=device),
            torch.tensor(epsilon, dtype=torch.float32, device=device),
            torch.tensor(step_key, dtype=torch.int64, device=device))


class OnnxRunner:
    """ONNX Runtime (Python API): feeds each step's updated B into the next."""
    runtime = "onnx"

    def __init__(self, path: str | Path, initial_b: list[torch.Tensor], providers=None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("the onnx runtime needs ONNX Runtime: pip install onnxruntime") from e

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

    def set_b(self, bs: list[torch.Tensor]) -> None:
        """The next step's B: copies of `bs` (.numpy() would share the caller's memory)."""
        self.b = [b.detach().cpu().float().numpy().copy() for b in bs]


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

    def set_b(self, bs: list[torch.Tensor]) -> None:
        """The package's B buffers (MutableBufferStep.lora_b_i), replaced by copies of `bs`: the
        package steps on the tensors it is given, so a caller's own tensors (a model's B, which a
        resumed run writes again) would be stepped on and overwritten under it. The copies are
        held here for as long as the package uses them."""
        self.b = {f"lora_b_{i}": b.detach().to(self.device, torch.float32, copy=True).contiguous()
                  for i, b in enumerate(bs)}
        self.model.load_constants(self.b, check_full_update=False)


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

    def set_b(self, bs: list[torch.Tensor]) -> None:
        raise ValueError("the executorch runtime keeps B inside the program, and its Python bindings cannot set it: "
                         "a run through it cannot continue from a checkpoint (start it again with --overwrite)")


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

    def set_b(self, bs: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for buffer, b in zip(self.module.lora_b(), bs):
                buffer.copy_(b)


class CheckedRunner:
    """A runner whose every step's batch is checked against the exported static shape first
    (export.json's batch_size, seq_len): a runtime given another shape crashes (AOTInductor) or
    computes something else."""

    def __init__(self, runner, manifest_path: Path, manifest: dict):
        self.runner, self.runtime = runner, runner.runtime
        self.manifest_path, self.shape = manifest_path, (manifest["batch_size"], manifest["seq_len"])

    def step(self, input_ids, targets, lr, epsilon, step_key):
        for name, t in (("input_ids", input_ids), ("targets", targets)):
            if tuple(t.shape) != self.shape:
                raise ValueError(f"{name} of shape {list(t.shape)}: the step in {self.manifest_path.parent} was exported "
                                 f"for batches of [batch_size, seq_len] = {list(self.shape)} ({self.manifest_path})")
        return self.runner.step(input_ids, targets, lr, epsilon, step_key)

    def set_b(self, bs: list[torch.Tensor]) -> None:
        self.runner.set_b(bs)


def open_runner(export_dir: str | Path) -> CheckedRunner:
    """The runner export_dir/export.json names, loaded. Raises FileNotFoundError for a missing
    file, ImportError naming the package a runtime needs, ValueError for a damaged export.json."""
    export_dir = Path(export_dir)
    manifest_path = export_dir / "export.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        path = export_dir / manifest["model"]
        runtime, shape = manifest["runtime"], (int(manifest["batch_size"]), int(manifest["seq_len"]))
    except FileNotFoundError:
        raise FileNotFoundError(f"{manifest_path}: not found (an export directory of `prge export` holds it)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{manifest_path}: not an export.json prge writes ({type(e).__name__}: {e})") from None
    if runtime == "onnx":
        from safetensors.torch import load_file

        initial = load_file(str(export_dir / manifest["initial_b"]))
        runner = OnnxRunner(path, [initial[f"b_{i}"] for i in range(len(initial))])
    elif runtime == "executorch":
        runner = ExecuTorchRunner(path)
    elif runtime == "aoti":
        runner = AotiRunner(path, manifest["device"])
    else:
        raise ValueError(f"{manifest_path}: runtime {shown_value(runtime)} is none of onnx, aoti, executorch")
    return CheckedRunner(runner, manifest_path, {**manifest, "batch_size": shape[0], "seq_len": shape[1]})


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
