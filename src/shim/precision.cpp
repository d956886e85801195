// libtorch's TF32 switches, for lipctl's numerics policy (src/precision.rs; beyond-the-paper §3).
// tch exposes none of them. They live in `at::globalContext()` (ATen/Context.h), which is part of
// libtorch_cpu and needs no CUDA header, so this file compiles and works on CPU-only machines too
// (there the switches are plain flags that no kernel reads).
//
// * cuDNN (convolutions, RNNs): `setAllowTF32CuDNN` / `allowTF32CuDNN()`. libtorch's default is on.
// * cuBLAS (matmul, bmm, linalg): `setAllowTF32CuBLAS` / `allowTF32CuBLAS()`, i.e.
//   `float32_matmul_precision` "high" vs "highest". libtorch's default is off.
//
// Why these legacy setters and not the newer `setFloat32Precision(backend, op, ...)`: since torch
// 2.9 libtorch keeps both a legacy flag and a per-(backend, op) precision, and its legacy getters
// (which cuDNN's and cuBLAS's call sites still use) throw "you have used a mix of the legacy and
// new APIs" when the two disagree. The legacy setters update both, so the state stays coherent.
//
// Every function catches all C++ exceptions: none may unwind into Rust. -1 means an error.

#include <ATen/Context.h>

extern "C" {

// 1 when cuDNN may use TF32 for float32 convolutions, 0 when not, -1 on error.
int lipctl_tf32_cudnn_get() {
  try {
    return at::globalContext().allowTF32CuDNN() ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// Allows (on != 0) or forbids TF32 in cuDNN. 0, or -1 on error.
int lipctl_tf32_cudnn_set(int on) {
  try {
    at::globalContext().setAllowTF32CuDNN(on != 0);
    return 0;
  } catch (...) {
    return -1;
  }
}

// 1 when cuBLAS may use TF32 for float32 matrix products, 0 when not, -1 on error.
int lipctl_tf32_cublas_get() {
  try {
    return at::globalContext().allowTF32CuBLAS() ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// Allows (on != 0) or forbids TF32 in cuBLAS. 0, or -1 on error.
int lipctl_tf32_cublas_set(int on) {
  try {
    at::globalContext().setAllowTF32CuBLAS(on != 0);
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
