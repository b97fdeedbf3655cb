"""The build step that compiles prge's Triton kernels ahead of time (csrc/prge/cuda/triton/
compile_kernels.py). CI has no GPU and no Triton: what runs here is what every CPU build and a
CUDA build without Triton take (an empty table, said on stderr), and the agreement between the
compiled specializations and the kernel's own arguments. The kernels themselves are checked on
the GPU against ATen (experiments/gpu_checks.py: check_gated_low_rank_kernel / _model)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import torch

import prge
from conftest import REPO, load_script, make_batch, make_hf_llama

SCRIPT = REPO / "csrc/prge/cuda/triton/compile_kernels.py"


def run_script(tmp_path, archs, blocked=True):
    env = dict(os.environ)
    if blocked:  # a `triton` that cannot be imported, whatever this machine has installed
        blocker = tmp_path / "block" / "triton"
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text("raise ImportError('no triton here (test)')\n")
        env["PYTHONPATH"] = str(tmp_path / "block")
    out = tmp_path / "triton_cubins.cpp"
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--archs", archs], env=env,
                            capture_output=True, text=True, timeout=120)
    return result, out.read_text() if out.exists() else None


def test_without_triton_the_table_is_empty_and_the_build_goes_on(tmp_path):
    result, text = run_script(tmp_path, "80;90")
    assert result.returncode == 0, result.stderr
    assert "kCompiledKernelCount = 0;" in text
    assert "no triton here (test)" in text  # the reason, in the generated source's header
    assert "the Triton kernels are left out" in result.stderr and "no triton here (test)" in result.stderr
    assert "kCubin" not in text
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, moved into place


def test_no_numbered_architecture_is_said(tmp_path):
    result, text = run_script(tmp_path, "none", blocked=False)
    assert result.returncode == 0
    assert "kCompiledKernelCount = 0;" in text
    assert "no numbered GPU architecture in 'none'" in result.stderr


def test_specializations_name_every_kernel_argument_in_order():
    compile_kernels = load_script("csrc/prge/cuda/triton/compile_kernels.py", "prge_compile_kernels")
    assert compile_kernels.SPECIALIZATIONS
    for spec in compile_kernels.SPECIALIZATIONS:
        source = (SCRIPT.parent / spec.source).read_text()
        kernel = next(node for node in ast.walk(ast.parse(source))
                      if isinstance(node, ast.FunctionDef) and node.name == spec.kernel)
        assert [name for name, _ in spec.signature] == [a.arg for a in kernel.args.args], spec.key
        constexprs = {a.arg for a in kernel.args.args
                      if a.annotation is not None and ast.unparse(a.annotation) == "tl.constexpr"}
        given = {name for name, kind in spec.signature if isinstance(kind, int)}
        assert given == constexprs, spec.key  # every constexpr fixed, nothing else
    keys = [spec.key for spec in compile_kernels.SPECIALIZATIONS]
    assert len(keys) == len(set(keys))
    # the C++ side looks variants up by dtype, rank (16, 32, 64) and activation
    assert {k.split("/", 1)[1] for k in keys} == {f"{d}/r{r}/{a}" for d in ("bf16", "fp16") for r in (16, 32, 64)
                                                  for a in ("silu", "gelu_tanh")}


def test_generated_source_lists_each_compiled_variant():
    compile_kernels = load_script("csrc/prge/cuda/triton/compile_kernels.py", "prge_compile_kernels")
    spec = compile_kernels.SPECIALIZATIONS[0]
    fake = compile_kernels.Compiled(spec, 90, bytes([0, 255, 16]), "gated_low_rank", 8192, 13, 2)
    text = compile_kernels.cpp_source([fake], "test")
    assert "const unsigned char kCubin0[] = {0x00, 0xff, 0x10};" in text
    assert (f'{{"{spec.key}", 90, kCubin0, sizeof(kCubin0), "gated_low_rank", {spec.num_warps}, 8192, 13, 2, '
            f"{spec.block_m}, {spec.block_n}}}," in text)
    assert "kCompiledKernelCount = 1;" in text


def test_gated_low_rank_kernel_is_on_by_default_and_leaves_cpu_forwards_alone(tmp_path):
    """CausalLM.gated_low_rank_kernel is on by default (checked and timed on an H200 in session 31);
    where no variant applies (a CPU device, float32) it changes nothing, bit for bit."""
    model = prge.CausalLM.from_pretrained(str(make_hf_llama(tmp_path)[0]), dtype="float32")
    model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32, init_seed=3))
    g = torch.Generator().manual_seed(5)
    for a in model.adapters():
        a["lora_b"].copy_(0.05 * torch.randn(a["lora_b"].shape, generator=g))
    assert model.gated_low_rank_kernel is True
    ids = make_batch(model.spec.vocab_size).input_ids
    on = model.logits(ids)
    assert model.gated_low_rank_kernel_calls == 0  # nothing took the kernel: the count says so
    model.gated_low_rank_kernel = False
    assert model.gated_low_rank_kernel is False
    assert torch.equal(model.logits(ids), on)


def test_an_architecture_that_fails_leaves_the_others_in_the_table(tmp_path, monkeypatch, capsys):
    """One architecture whose kernels do not compile (or one below sm_80) is left out, said on
    stderr and in the generated source; the others' variants stay (the runtime matches exactly)."""
    import types

    compile_kernels = load_script("csrc/prge/cuda/triton/compile_kernels.py", "prge_compile_kernels")
    monkeypatch.setitem(sys.modules, "triton", types.SimpleNamespace(__version__="9.9.9"))

    def compile_one(spec, arch):
        if arch == 100:
            raise RuntimeError("no such target (test)")
        return compile_kernels.Compiled(spec, arch, bytes([arch]), "gated_low_rank", 0, 13, 2)

    monkeypatch.setattr(compile_kernels, "compile_one", compile_one)
    out = tmp_path / "triton_cubins.cpp"
    monkeypatch.setattr(sys, "argv", ["compile_kernels.py", "--out", str(out), "--archs", "75;90;100"])
    assert compile_kernels.main() == 0
    text = out.read_text()
    count = len(compile_kernels.SPECIALIZATIONS)
    assert f"kCompiledKernelCount = {count};" in text
    assert text.count(", 90, kCubin") == count and ", 100, kCubin" not in text and ", 75, kCubin" not in text
    err = capsys.readouterr().err
    for said in (err, text):
        assert "sm_75: below sm_80" in said and "sm_100: RuntimeError: no such target (test)" in said


def test_architectures_are_read_in_cmake_and_torch_forms():
    compile_kernels = load_script("csrc/prge/cuda/triton/compile_kernels.py", "prge_compile_kernels")
    assert compile_kernels.parse_archs("80;90") == ([80, 90], [])
    assert compile_kernels.parse_archs("9.0;8.6+PTX 90-real, sm_90a compute_100") == ([86, 90, 100], [])
    assert compile_kernels.parse_archs("") == ([], [])
    assert compile_kernels.parse_archs("sm_86;8.6(8.0);x") == ([86], ["8.6(8.0)", "x"])


def test_a_token_that_names_no_architecture_is_said(tmp_path):
    result, text = run_script(tmp_path, "90;ampere", blocked=False)
    assert result.returncode == 0 and "kCompiledKernelCount = 0;" in text
    assert "not a GPU architecture: 'ampere'" in result.stderr
