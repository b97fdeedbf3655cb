"""How much memory cuBLAS's cached workspace holds, per stream: the first matrix product on a
stream allocates one through the caching allocator, and it stays allocated until the cache is
cleared. A CUDA graph captured on a side stream therefore holds one beside the eager one,
unless the cache is cleared before the capture (prge's StepGraphs does; bench_step.py clears it
before each row so every row counts its own).

    python experiments/diagnostics/cublas_workspace.py
"""
import torch


def allocated_after(fn) -> int:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    keep = fn()
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated() - before - keep.numel() * keep.element_size()


def main() -> None:
    x = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    torch._C._cuda_clearCublasWorkspaces()
    default = allocated_after(lambda: x @ x)
    again = allocated_after(lambda: x @ x)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        other = allocated_after(lambda: x @ x)
    held = torch.cuda.memory_allocated()
    torch._C._cuda_clearCublasWorkspaces()
    cleared = torch.cuda.memory_allocated() - held
    mib = 2**20
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: first product on the default stream "
          f"+{default / mib:.1f} MiB, a second one +{again / mib:.1f} MiB, the first on a new stream "
          f"+{other / mib:.1f} MiB; after clearing the cache {cleared / mib:+.1f} MiB")


if __name__ == "__main__":
    main()
