#pragma once
// prge's Triton kernels, compiled ahead of time (csrc/prge/cuda/triton/compile_kernels.py writes
// the table below into the build) and launched through the CUDA runtime's library API, so that
// LibTorch code, CUDA graph capture included, runs them without Python. Built only in a CUDA
// build (PRGE_WITH_CUDA); the table is empty where the build found no Triton.
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <vector>

namespace prge::cuda::triton_kernels {

struct CompiledKernel {
  const char* key;              // e.g. "gated_low_rank/bf16/r16/silu"
  int arch;                     // compute capability * 10 the cubin runs on (exactly)
  const unsigned char* cubin;
  size_t cubin_bytes;
  const char* function;         // the cubin's entry point
  int num_warps;
  int shared_bytes;             // dynamic shared memory per block (<= 48 KiB)
  int runtime_params;           // the kernel's non-constexpr arguments
  int extra_params;             // Triton's trailing pointer parameters, passed as null
  int block_m, block_n;         // the tile of one program (grid: ceil(rows / block_m), ceil(cols / block_n))
};

extern const CompiledKernel kCompiledKernels[];
extern const size_t kCompiledKernelCount;

// The variant `key` compiled for the current CUDA device's architecture, loaded, or nullptr
// (none compiled; or not loaded yet while the current stream is being captured). Throws
// std::runtime_error when the cubin does not load.
const CompiledKernel* find(const std::string& key);

// Launches `kernel` on the current CUDA stream with grid (x, y, 1). `args` point at the kernel's
// runtime arguments in order (kernel.runtime_params of them); `kernel` comes from find. Throws std::runtime_error
// naming the kernel on a wrong argument count or a CUDA error.
void launch(const CompiledKernel& kernel, unsigned grid_x, unsigned grid_y, std::vector<void*> args);

}  // namespace prge::cuda::triton_kernels
