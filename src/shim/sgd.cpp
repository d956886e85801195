// The SGD update of `src/train/sgd.rs` as one libtorch call for a whole list of parameters:
// `at::_fused_sgd_` (one multi-tensor kernel on CUDA; one vectorised pass per tensor on the CPU,
// without the temporaries of `grad + wd·p`, `μ·buf + g` and `lr·buf`). tch exposes neither the
// fused optimizers nor the `_foreach_*` ops, hence this shim.
//
// The tensors are passed as tch's handles, which are `at::Tensor*` (torch-sys `torch_api.h`:
// `typedef torch::Tensor *tensor`). Every function catches all C++ exceptions: none may unwind
// into Rust. 0 means success, -1 an error (the message is copied into `err`).

#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_sgd.h>
#include <vector>

#include "error.h"

extern "C" {

// For every i: g = grads[i] + weight_decay·params[i]; bufs[i] = g when first_step, otherwise
// momentum·bufs[i] + g (dampening 0); params[i] −= lr·bufs[i]. With momentum 0, `bufs` is
// ignored (may be null) and params[i] −= lr·g. No Nesterov, no maximise, no grad scaling.
int lipctl_fused_sgd(at::Tensor** params, at::Tensor** grads, at::Tensor** bufs, long n, double weight_decay,
                     double momentum, double lr, int first_step, char* err, long err_len) {
  return lipctl::guard(err, err_len, [&] {
    std::vector<at::Tensor> p, g, b;
    p.reserve(n);
    g.reserve(n);
    for (long i = 0; i < n; ++i) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      if (momentum != 0.0) b.push_back(*bufs[i]);
    }
    // The CPU kernel walks each parameter's elements through the gradient's and buffer's raw
    // pointers without comparing their shapes or layouts: a mismatch would read or write out of
    // bounds, or pair the wrong elements.
    auto same = [&](const at::Tensor& a, const at::Tensor& x, const char* what, long i) {
      TORCH_CHECK(a.sizes() == x.sizes() && a.scalar_type() == x.scalar_type() && a.device() == x.device() &&
                      a.is_contiguous() && x.is_contiguous(),
                  "fused SGD: parameter ", i, " is ", a.scalar_type(), a.sizes(), " on ", a.device(),
                  a.is_contiguous() ? "" : " (not contiguous)", ", its ", what, " ", x.scalar_type(), x.sizes(), " on ",
                  x.device(), x.is_contiguous() ? "" : " (not contiguous)");
    };
    for (long i = 0; i < n; ++i) {
      same(p[i], g[i], "gradient", i);
      if (momentum != 0.0) same(p[i], b[i], "momentum buffer", i);
    }
    at::_fused_sgd_(p, g, b, weight_decay, momentum, lr, /*dampening=*/0.0, /*nesterov=*/false,
                    /*maximize=*/false, /*is_first_step=*/first_step != 0);
    return 0;
  });
}

}  // extern "C"
