"""Export the training step for a runtime and run it from Python.

  export_onnx(step: FunctionalStep, path)     ONNX (torch.onnx dynamo exporter); B as I/O
  export_aoti(step: MutableBufferStep, path)  AOTInductor .pt2; B in mutable buffers
  export_executorch(step: MutableBufferStep, path)  ExecuTorch .pte (portable kernels);
                                              B in mutable buffers (needs shift_mode='divide')
  OnnxRunner / AotiRunner / ExecuTorchRunner / EagerRunner
                                              .step(ids, targets, lr, eps, step_key)
                                              -> (loss, projected_grads, [B ...])"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from prge._core import IGNORE_INDEX

from prge.export.step_module import FunctionalStep, MutableBufferStep


def example_inputs(step, lr: float = 1e-3, epsilon: float = 1e-2, step_key: int = 0):
    s = step.spec
    device = step.coordinates.device
    ids = torch.ones(s.batch_size, s.seq_len, dtype=torch.int64, device=device)
    targets = torch.full((s.batch_size, s.seq_len), IGNORE_INDEX, dtype=torch.int64, device=device)
    targets[:, -1] = 1
    return (ids, targets, torch.tensor(lr, dtype=torch.float32, device=device),
            torch.tensor(epsilon, dtype=torch.float32, device=device),
            torch.tensor(step_key, dtype=torch.int64, device=device))


def export_onnx(step: FunctionalStep, path: str | Path) -> Path:
    """ONNX through torch.onnx's dynamo exporter. The onnxscript graph optimizer is off: on a
    30-layer model it ran for over ten minutes (ONNX Runtime optimises the graph at load)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    b_inputs = tuple(step.initial_inputs())
    names = ["input_ids", "targets", "lr", "epsilon", "step_key"] + [f"b_{i}" for i in range(len(b_inputs))]
    outputs = ["loss", "projected_grads"] + [f"b_{i}_updated" for i in range(len(b_inputs))]
    with torch.no_grad():
        program = torch.onnx.export(step, example_inputs(step) + b_inputs, dynamo=True,
                                    input_names=names, output_names=outputs, optimize=False,
                                    external_data=False)
    program.save(str(path))
    return path


def export_program(step: MutableBufferStep):
    with torch.no_grad():
        return torch.export.export(step, example_inputs(step), strict=False)


def export_aoti(step: MutableBufferStep, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = export_program(step)
    with torch.no_grad():
        return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(path)))


def export_executorch(step: MutableBufferStep, path: str | Path) -> Path:
    if step.spec.shift_mode != "divide":
        raise ValueError("ExecuTorch's core ATen opset has no right shift: build the step with shift_mode='divide'")
    try:
        from executorch.exir import to_edge_transform_and_lower
    except ImportError as e:
        raise ImportError("the executorch runtime needs `pip install --no-deps executorch` "
                          "(see scripts/install_deps.sh)") from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = to_edge_transform_and_lower(export_program(step)).to_executorch()
    path.write_bytes(program.buffer)
    return path


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
