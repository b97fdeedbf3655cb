#include "prge/cuda/triton_kernels.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <fmt/format.h>

#include <map>
#include <mutex>
#include <stdexcept>

namespace prge::cuda::triton_kernels {
namespace {

void check(cudaError_t status, const CompiledKernel& kernel, const char* what) {
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // not left pending for the next, unrelated launch check
    throw std::runtime_error(fmt::format("Triton kernel {} (sm_{}): {} failed: {}", kernel.key, kernel.arch, what,
                                         cudaGetErrorString(status)));
  }
}

std::mutex& handles_mutex() {
  static std::mutex mutex;
  return mutex;
}

std::map<const CompiledKernel*, cudaKernel_t>& handles() {
  static std::map<const CompiledKernel*, cudaKernel_t> loaded;
  return loaded;
}

// Loaded once per process (context-independent: the driver loads it into each device's context
// when the kernel first runs there); never unloaded, as the kernels live as long as the process.
cudaKernel_t load(const CompiledKernel& kernel) {
  std::lock_guard<std::mutex> lock(handles_mutex());
  const auto found = handles().find(&kernel);
  if (found != handles().end()) return found->second;
  cudaLibrary_t library = nullptr;
  check(cudaLibraryLoadData(&library, kernel.cubin, nullptr, nullptr, 0, nullptr, nullptr, 0), kernel,
        "cudaLibraryLoadData");
  cudaKernel_t handle = nullptr;
  check(cudaLibraryGetKernel(&handle, library, kernel.function), kernel, "cudaLibraryGetKernel");
  handles().emplace(&kernel, handle);
  return handle;
}

bool is_loaded(const CompiledKernel& kernel) {
  std::lock_guard<std::mutex> lock(handles_mutex());
  return handles().count(&kernel) > 0;
}

// The device's compute capability as one number (90 for sm_90), asked of the driver once per device.
int device_arch(int device) {
  static std::mutex mutex;
  static std::map<int, int> archs;
  std::lock_guard<std::mutex> lock(mutex);
  const auto found = archs.find(device);
  if (found != archs.end()) return found->second;
  int major = 0, minor = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return archs[device] = major * 10 + minor;
}

}  // namespace

const CompiledKernel* find(const std::string& key) {
  if (kCompiledKernelCount == 0) return nullptr;
  const int arch = device_arch(c10::cuda::current_device());
  for (size_t i = 0; i < kCompiledKernelCount; ++i) {
    const auto& kernel = kCompiledKernels[i];
    if (kernel.arch != arch || key != kernel.key) continue;
    if (!is_loaded(kernel)) {
      // Loading is no stream work: not while the stream is being captured (a graph's eager
      // warm-up run loads it; a capture without one takes the plain path).
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      check(cudaStreamIsCapturing(c10::cuda::getCurrentCUDAStream(), &capture), kernel, "cudaStreamIsCapturing");
      if (capture != cudaStreamCaptureStatusNone) return nullptr;
      load(kernel);
    }
    return &kernel;
  }
  return nullptr;
}

void launch(const CompiledKernel& kernel, unsigned grid_x, unsigned grid_y, std::vector<void*> args) {
  if (static_cast<int>(args.size()) != kernel.runtime_params) {
    throw std::runtime_error(fmt::format("Triton kernel {}: {} arguments given, it takes {}", kernel.key, args.size(),
                                         kernel.runtime_params));
  }
  if (grid_x == 0 || grid_y == 0) return;
  const auto handle = load(kernel);
  static void* const null_pointer = nullptr;
  for (int i = 0; i < kernel.extra_params; ++i) args.push_back(const_cast<void**>(&null_pointer));
  check(cudaLaunchKernel(reinterpret_cast<const void*>(handle), dim3(grid_x, grid_y, 1), dim3(32 * kernel.num_warps),
                         args.data(), static_cast<size_t>(kernel.shared_bytes), c10::cuda::getCurrentCUDAStream()),
        kernel, "cudaLaunchKernel");
}

}  // namespace prge::cuda::triton_kernels
