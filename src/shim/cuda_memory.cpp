// Peak-memory statistics of libtorch's CUDA caching allocator, for `lipctl measure`
// (reference-protocol §8.2: the paper reports `torch.cuda.max_memory_allocated()`, i.e. the peak of
// bytes held by tensors, not the reserved pool and not the whole GPU footprint). tch does not expose
// these statistics, so this file wraps the C++ API in a few C functions.
//
// It goes through c10's device-generic allocator interface (`c10::getDeviceAllocator(kCUDA)`, the
// interface `torch.accelerator.memory_stats` uses since torch 2.8). That is the very object
// `c10::cuda::CUDACachingAllocator::getDeviceStats` / `resetPeakStats` forward to, but its header
// needs no CUDA headers: the PyPI wheel ships `cuda_runtime_api.h` without the `crt/` headers it
// includes, so `c10/cuda/*.h` cannot be compiled against it. Only libc10 is needed at link time; the
// CUDA allocator registers itself from libc10_cuda, which libtorch_cuda loads.
//
// Every function catches all C++ exceptions: none may unwind into Rust. Without CUDA (a CPU-only
// libtorch, or no GPU) they return -1; lipctl only calls them when CUDA is available.

#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>

namespace {
constexpr auto kAggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);

c10::DeviceAllocator* cuda_allocator() {
  return c10::getDeviceAllocator(c10::DeviceType::CUDA);
}
}  // namespace

extern "C" {

// Resets the peak statistics of CUDA device `device` to the current values. 0, or -1 on error.
int lipctl_cuda_reset_peak(int device) {
  try {
    cuda_allocator()->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return -1;
  }
}

// Peak bytes allocated to tensors on CUDA device `device` since the last reset, or -1 on error.
int64_t lipctl_cuda_peak_allocated(int device) {
  try {
    return cuda_allocator()->getDeviceStats(static_cast<c10::DeviceIndex>(device)).allocated_bytes[kAggregate].peak;
  } catch (...) {
    return -1;
  }
}

// Bytes allocated to tensors on CUDA device `device` now, or -1 on error.
int64_t lipctl_cuda_current_allocated(int device) {
  try {
    return cuda_allocator()->getDeviceStats(static_cast<c10::DeviceIndex>(device)).allocated_bytes[kAggregate].current;
  } catch (...) {
    return -1;
  }
}

// Returns cached, unused blocks to the driver (`torch.cuda.empty_cache()`). 0, or -1 on error.
int lipctl_cuda_empty_cache() {
  try {
    cuda_allocator()->emptyCache();
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
