"""Diagnose AOTInductor packages of the training step on CUDA: compile the mutable-buffer
and the functional flavour of the step for a tiny model, then load and run each (in
separate processes, so a crash in one does not hide the other)."""
import subprocess
import sys

import torch


def build(flavour, path):
    import prge
    from prge.export import exporters
    from prge.export.step_module import FunctionalStep, MutableBufferStep, StepSpec
    from prge.models import shape_config

    if flavour == "plain":  # no prge at all: a two-layer MLP
        mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).cuda()
        program = torch.export.export(mlp, (torch.randn(4, 8, device="cuda"),))
        return torch._inductor.aoti_compile_and_package(program, package_path=path)
    model = prge.CausalLM.random(shape_config("tiny-debug"), 0, "cuda", "float32")
    model.attach_adapters(prge.AdapterOptions(rank=4, alpha=8))
    spec = StepSpec(2, 2, 8, 1)
    if flavour == "mutable":
        return exporters.export_aoti(MutableBufferStep(model, spec), path)
    step = FunctionalStep(model, spec)
    inputs = exporters.example_inputs(step) + tuple(step.initial_inputs())
    with torch.no_grad():
        program = torch.export.export(step, inputs, strict=False)
        return torch._inductor.aoti_compile_and_package(program, package_path=path)


def load_and_run(flavour, path):
    """Runs in a child process that never imports prge."""
    runner = torch._inductor.aoti_load_package(path)
    if flavour == "plain":
        print("plain ran:", runner(torch.randn(4, 8, device="cuda")).shape)
        return
    ids = torch.randint(1, 500, (2, 8), device="cuda")
    targets = torch.full_like(ids, -100)
    targets[:, -2] = 3
    scalars = (torch.tensor(1e-3, device="cuda"), torch.tensor(1e-2, device="cuda"),
               torch.tensor(7, dtype=torch.int64, device="cuda"))
    extra = ()
    if flavour == "functional":
        extra = tuple(torch.zeros(o, 4, device="cuda") for o in (64, 32, 32, 64, 160, 160, 64) * 2)
    out = runner(ids, targets, *scalars, *extra)
    print(flavour, "ran: loss", float(out[0]))


if __name__ == "__main__":
    if len(sys.argv) == 3:
        load_and_run(sys.argv[1], sys.argv[2])
        sys.exit(0)
    for flavour in ("plain", "functional"):
        path = f"/tmp/aoti_{flavour}.pt2"
        build(flavour, path)
        print(flavour, "compiled", flush=True)
        done = subprocess.run([sys.executable, "-X", "faulthandler", __file__, flavour, path],
                              capture_output=True, text=True)
        print(flavour, "load rc", done.returncode, done.stdout.strip(), done.stderr.strip()[-1500:], flush=True)
