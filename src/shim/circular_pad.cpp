// Circular padding of the last two dimensions by `p` on every side, for
// `src/nn/ortho.rs::conv2d_circular` (Standard, AOL, BCOP, SN and AOC train through it), with a
// backward that folds the gradient back in one pass.
//
// The values are `at::pad(x, {p, p, p, p}, "circular")`'s. The gradient is what differs: ATen
// writes the padded tensor as five copies into slices of one buffer, so autograd's backward runs
// five `CopySlices` nodes, each of which copies the whole padded gradient before it takes its
// slice, and then sums the slices' contributions. Its adjoint is a fold: input pixel (i, j)
// receives the gradient of every padded pixel that copies it, (i + p) and, near the borders,
// (i + p ± n). Here that is one copy of the centre and additions of the p-wide strips:
// `fold_last` folds the last dimension, and the rows are folded from three pieces of it.
//
// The fold is itself an autograd function whose backward is the padding again (the padding and
// the fold are each other's transposes), so double backward works.
//
// Tensors travel as tch's handles (`at::Tensor*`); the result is a new `at::Tensor*` that the Rust
// side owns. 0 means success, -1 an error (src/shim/error.h), 1 "not applicable": autograd
// records nothing (the caller pads with `at::pad` directly, which is as fast without a graph).

#include <ATen/core/Tensor.h>
#include <ATen/ops/pad.h>
#include <torch/csrc/autograd/custom_function.h>

#include "error.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// t [..., m + 2p] → [..., m]: the centre, plus each outer strip added to the entries it copies.
at::Tensor fold_last(const at::Tensor& t, int64_t p) {
  const int64_t m = t.size(-1) - 2 * p;
  at::Tensor out = t.narrow(-1, p, m).clone(at::MemoryFormat::Contiguous);
  out.narrow(-1, 0, p).add_(t.narrow(-1, m + p, p));
  out.narrow(-1, m - p, p).add_(t.narrow(-1, 0, p));
  return out;
}

// g [..., n + 2p, n + 2p] → [..., n, n], the transpose of the circular padding.
at::Tensor fold(const at::Tensor& g, int64_t p) {
  const int64_t n = g.size(-2) - 2 * p;
  at::Tensor out = fold_last(g.narrow(-2, p, n), p);
  out.narrow(-2, 0, p).add_(fold_last(g.narrow(-2, n + p, p), p));
  out.narrow(-2, n - p, p).add_(fold_last(g.narrow(-2, 0, p), p));
  return out;
}

at::Tensor pad(const at::Tensor& x, int64_t p) { return at::pad(x, {p, p, p, p}, "circular"); }

struct Fold;

struct CircularPad : public torch::autograd::Function<CircularPad> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t p) {
    ctx->saved_data["p"] = p;
    return pad(x, p);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad);
};

struct Fold : public torch::autograd::Function<Fold> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& g, int64_t p) {
    ctx->saved_data["p"] = p;
    return fold(g, p);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {CircularPad::apply(grad[0], ctx->saved_data["p"].toInt()), at::Tensor()};
  }
};

variable_list CircularPad::backward(AutogradContext* ctx, variable_list grad) {
  return {Fold::apply(grad[0], ctx->saved_data["p"].toInt()), at::Tensor()};
}

}  // namespace

extern "C" {

// *out = the circular padding of *x by p on each side of its last two dimensions, as a new tensor
// with autograd; returns 0. When autograd would record nothing (grad mode off, or x needs no
// gradient) returns 1 and leaves *out alone. x: a CPU tensor [..., n, n], 1 ≤ p ≤ n.
int lipctl_circular_pad(const at::Tensor* x, long p, at::Tensor** out, char* err, long err_len) {
  return lipctl::guard(err, err_len, [&] {
    TORCH_CHECK(x->device().is_cpu(), "circular pad: the shim is CPU-only, got ", x->device());
    TORCH_CHECK(x->dim() >= 2 && p >= 1 && p <= x->size(-1) && p <= x->size(-2),
                "circular pad: needs [..., h, w] with 1 ≤ p ≤ h, w; got p = ", p, " for ", x->sizes());
    if (!(at::GradMode::is_enabled() && x->requires_grad())) return 1;
    *out = new at::Tensor(CircularPad::apply(*x, p));
    return 0;
  });
}

}  // extern "C"
