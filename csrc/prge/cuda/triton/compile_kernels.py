"""Build step of a CUDA build: compile prge's Triton kernels ahead of time into cubins embedded in
one C++ source (csrc/prge/cuda/triton_kernels.h declares its table; triton_kernels.cpp launches
them through the CUDA runtime's library API). Run by csrc/CMakeLists.txt; nothing imports it.

Each entry of SPECIALIZATIONS is compiled for every requested GPU architecture from sm_80 on. Where
Triton is not importable the table is written empty; an architecture below sm_80 or one where a
kernel does not compile is left out of it (the others stay). Each is said on stderr and in the
generated source, and prge runs the plain path those kernels would replace there.

    python compile_kernels.py --out triton_cubins.cpp --archs "80;90"
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TRITON_DISABLE_LINE_INFO", "1")  # cubins without line tables: ~4x smaller


@dataclass(frozen=True)
class Specialization:
    """One compiled variant: `key` is what the C++ side looks up (see gated_low_rank.cpp)."""
    key: str
    source: str          # file beside this one
    kernel: str          # @triton.jit function in it
    signature: tuple     # (argument name, Triton type[:16 divisibility hint] or constexpr value)
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


# gated_low_rank: one tile shape for every variant (32 rows x 128 columns, 4 warps, 1 stage: the
# fastest of twelve tiles summed over the Qwen2.5-1.5B and Llama-3.2-1B MLP shapes with 32 copies
# of B, on an H200; experiments/diagnostics/gated_kernel_tiles.py --choose, results in
# experiments/results/gated_kernel_tiles_session34/; timed there in bf16 at rank 16 with SiLU only,
# the other variants and architectures checked for correctness, not timed. The earlier 64 x 128
# needed 255 registers a thread). The pointers are promised 16-byte aligned, f and every stride divisible by 16 elements
# (the C++ side, gated_low_rank.cpp's meets_hints, makes them so before it launches).
GATED_BLOCK_M, GATED_BLOCK_N, GATED_WARPS, GATED_STAGES = 32, 128, 4, 1


def gated_low_rank(dtype: str, rank: int, gelu: bool) -> Specialization:
    pointer = f"*{dtype}:16"
    signature = (("gate_up_ptr", pointer), ("u_ptr", pointer), ("b_ptr", pointer), ("out_ptr", pointer),
                 ("rows", "i32"), ("f", "i32:16"), ("rows_per_copy", "i32"), ("scaling", "fp32"),
                 ("stride_gate_up", "i32:16"), ("stride_u", "i32:16"), ("stride_b_copy", "i32:16"),
                 ("stride_b_row", "i32:16"), ("stride_out", "i32:16"),
                 ("R", rank), ("GELU", int(gelu)), ("BLOCK_M", GATED_BLOCK_M), ("BLOCK_N", GATED_BLOCK_N))
    return Specialization(f"gated_low_rank/{dtype}/r{rank}/{'gelu_tanh' if gelu else 'silu'}", "gated_low_rank.py",
                          "gated_low_rank", signature, GATED_BLOCK_M, GATED_BLOCK_N, GATED_WARPS, GATED_STAGES)


SPECIALIZATIONS = [gated_low_rank(dtype, rank, gelu)
                   for dtype in ("bf16", "fp16") for rank in (16, 32, 64) for gelu in (False, True)]


@dataclass
class Compiled:
    spec: Specialization
    arch: int
    cubin: bytes
    function: str
    shared_bytes: int
    runtime_params: int
    extra_params: int  # Triton's trailing pointer parameters (scratch buffers), passed as null


def load_kernel(spec: Specialization):
    path = HERE / spec.source
    module_spec = importlib.util.spec_from_file_location(f"prge_triton_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, spec.kernel)


def entry_params(ptx: str, function: str) -> list[str]:
    match = re.search(r"\.entry\s+" + re.escape(function) + r"\s*\(([^)]*)\)", ptx)
    if not match:
        raise RuntimeError(f"no .entry {function} in the PTX")
    return [p.strip() for p in match.group(1).split(",") if p.strip()]


def compile_one(spec: Specialization, arch: int) -> Compiled:
    import triton
    from triton.backends.compiler import GPUTarget

    kernel = load_kernel(spec)
    names = [name for name, _ in spec.signature]
    if names != list(kernel.arg_names):
        raise RuntimeError(f"{spec.key}: signature names {names} are not the kernel's {list(kernel.arg_names)}")
    constexprs, signature, attrs = {}, {}, {}
    for i, (name, kind) in enumerate(spec.signature):
        if isinstance(kind, int):
            constexprs[name] = kind
            signature[name] = "constexpr"
            continue
        base, _, hint = kind.partition(":")
        signature[name] = base
        if hint:
            attrs[(i,)] = [["tt.divisibility", int(hint)]]
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    target = GPUTarget("cuda", arch, 32)
    options = triton.compiler.make_backend(target).parse_options(
        {"num_warps": spec.num_warps, "num_stages": spec.num_stages})
    compiled = triton.compile(source, target=target, options=options.__dict__)
    meta = compiled.metadata
    for scratch in ("global_scratch_size", "profile_scratch_size"):
        if getattr(meta, scratch, 0):
            buffer = scratch.replace("_size", "")
            raise RuntimeError(f"{spec.key}: needs a {buffer} buffer (not supported ahead of time)")
    if getattr(meta, "cluster_dims", (1, 1, 1)) not in ((1, 1, 1), [1, 1, 1]):
        raise RuntimeError(f"{spec.key}: thread block clusters {meta.cluster_dims} are not supported")
    if meta.shared > 48 * 1024:
        raise RuntimeError(f"{spec.key}: {meta.shared} bytes of shared memory (over the 48 KiB default)")
    params = entry_params(compiled.asm["ptx"], meta.name)
    runtime = sum(1 for v in signature.values() if v != "constexpr")
    extra = params[runtime:]
    if len(params) < runtime or any(".u64" not in p for p in extra):
        raise RuntimeError(f"{spec.key}: {len(params)} kernel parameters for {runtime} arguments: {params}")
    return Compiled(spec, arch, compiled.asm["cubin"], meta.name, meta.shared, runtime, len(extra))


MIN_ARCH = 80  # bf16 tensor-core dots: Ampere and later


def parse_archs(text: str) -> tuple[list[int], list[str]]:
    """The architectures of a list such as '80;90', '90-real', 'sm_90a', '8.6' or '9.0+PTX' (as
    CMake's or TORCH_CUDA_ARCH_LIST's), as sorted numbers (86), and the tokens that are none."""
    archs, unread = set(), []
    for token in filter(None, re.split(r"[;, ]+", text.strip())):
        match = re.fullmatch(r"(?:sm_|compute_)?(\d+)(?:\.(\d))?[a-z]?(?:-real|-virtual|\+PTX)?", token)
        if match:
            archs.add(int(match[1]) * 10 + int(match[2]) if match[2] else int(match[1]))
        else:
            unread.append(token)
    return sorted(archs), unread


def left_out(where: str, error: Exception) -> str:
    """One line saying why `where` (an architecture, or "" for all) has no kernels."""
    reason = " ".join(str(error).split())[:300]
    return f"{where + ': ' if where else ''}{type(error).__name__}: {reason}"


def cpp_source(compiled: list[Compiled], note: str) -> str:
    lines = ["// Generated by csrc/prge/cuda/triton/compile_kernels.py; do not edit.", f"// {note}",
             '#include "prge/cuda/triton_kernels.h"', "", "namespace prge::cuda::triton_kernels {", "namespace {"]
    for i, c in enumerate(compiled):
        data = ", ".join(f"0x{b:02x}" for b in c.cubin)
        lines.append(f"alignas(16) const unsigned char kCubin{i}[] = {{{data}}};")
    lines += ["}  // namespace", ""]
    entries = [f'    {{"{c.spec.key}", {c.arch}, kCubin{i}, sizeof(kCubin{i}), "{c.function}", {c.spec.num_warps}, '
               f"{c.shared_bytes}, {c.runtime_params}, {c.extra_params}, {c.spec.block_m}, {c.spec.block_n}}},"
               for i, c in enumerate(compiled)]
    if not entries:  # C++ has no empty arrays: one placeholder, counted out
        entries = ['    {"", 0, nullptr, 0, "", 0, 0, 0, 0, 0, 0},']
    lines += ["const CompiledKernel kCompiledKernels[] = {", *entries, "};",
              f"const size_t kCompiledKernelCount = {len(compiled)};", "",
              "}  // namespace prge::cuda::triton_kernels", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the C++ source to write")
    parser.add_argument("--archs", default="90",
                        help="GPU architectures, e.g. '80;90' (CMake passes those of torch's -gencode flags)")
    parser.add_argument("--triton-version", default=None,
                        help="the version CMake found when it configured (on the command line so that the build "
                             "re-runs this step when Triton changes); a different one here is said")
    args = parser.parse_args()
    archs, unread = parse_archs(args.archs)
    compiled: list[Compiled] = []
    try:
        if unread and args.archs.strip().lower() not in ("none", "off"):  # none: CMake's PRGE_TRITON=OFF
            raise RuntimeError(f"not a GPU architecture: {', '.join(repr(a) for a in unread)} (give e.g. '80;90', "
                               "'8.6' or 'sm_90a')")
        if not archs:
            raise RuntimeError(f"no numbered GPU architecture in '{args.archs}'")
        import triton
        version = triton.__version__
        if args.triton_version not in (None, version):
            print(f"prge: note: CMake configured with triton {args.triton_version}, this is {version} "
                  "(reconfigure to record it)", file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - any failure leaves the plain path, said out loud
        archs, failed = [], [left_out("", error)]
    else:
        failed = [f"sm_{a}: below sm_{MIN_ARCH}" for a in archs if a < MIN_ARCH]
        archs = [a for a in archs if a >= MIN_ARCH]
    for arch in archs:  # each architecture on its own: a partial table serves the GPUs it names
        try:
            compiled += [compile_one(spec, arch) for spec in SPECIALIZATIONS]
        except Exception as error:  # noqa: BLE001
            failed.append(left_out(f"sm_{arch}", error))
    done = sorted({c.arch for c in compiled})
    note = f"triton {version}, sm {', '.join(map(str, done))}" if done else "no Triton kernels"
    if failed:
        note += "; left out: " + "; ".join(failed)
        print(f"prge: note: the Triton kernels are left out ({'; '.join(failed)}); the plain path runs there "
              "instead", file=sys.stderr)
    text = cpp_source(compiled, note)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(f"prge: {len(compiled)} Triton kernel variant(s) compiled ahead of time ({note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
