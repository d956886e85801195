// MaxMin (reference-protocol §3) on the CPU as one fused pass forward and one backward, for
// `src/nn/blocks.rs::max_min`. Composed from ATen ops, the training path needs a comparison, an
// int64 index tensor (8 bytes per element), a `gather` and, backward, a zero fill and a
// `scatter_add`: the activations of one ConvNetXS training step (batch 64, 2 threads) took
// 75–95 ms that way, a quarter to a third of a Standard step, against 24–43 ms here (`cargo bench --bench speed`,
// part 4). Here the forward writes the output and a one-byte mask per pair
// ("the pair was swapped"), and the backward applies the same swap to the gradient: MaxMin's
// Jacobian is the permutation that sorts each pair, a product of disjoint transpositions, so it
// is its own transpose. The backward is itself an autograd function (the same swap again), so
// double backward works.
//
// Layout: x is [B, C, ...] with C even; pair j of sample b is channels (2j, 2j+1), each a plane of
// S = numel / (B·C) contiguous values. Values exactly those of the composed training path (the
// gather): a pair is swapped iff first < second, so at a tie nothing moves, and with a NaN neither.
// Gradients are the composed path's too, except the sign of a zero: `scatter_add` into zeros turns
// −0.0 into +0.0, a copy keeps it.
//
// Tensors travel as tch's handles (`at::Tensor*`); the result is a new `at::Tensor*` that the
// Rust side owns. Every function catches all C++ exceptions: none may unwind into Rust. 0 means
// success, -1 an error (the message is copied into `err`), 1 "not applicable" (see below).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "error.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Pairs per parallel chunk: about 16 k values (two planes of `plane` each), so a late block's
// small map still splits over two threads and no chunk is too small to pay for one.
int64_t grain(int64_t plane) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(1, plane)); }

// (pairs, plane): the pair count B·C/2 and the values per channel plane S.
std::pair<int64_t, int64_t> pair_layout(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2, "MaxMin: expected [B, C, ...], got ", x.dim(), " dimension(s)");
  TORCH_CHECK(x.size(1) % 2 == 0, "MaxMin: the fused kernel needs an even channel count, got ", x.size(1));
  const int64_t batch_channels = x.size(0) * x.size(1);
  const int64_t plane = batch_channels == 0 ? 0 : x.numel() / batch_channels;
  return {batch_channels / 2, plane};
}

// `when ? yes : no` without a branch: written as a ternary on a loaded mask, GCC emits a jump,
// which random data mispredicts half the time (measured: the backward 3× slower than the
// forward). Selecting the bits is exact for every value, NaN included.
template <typename T>
inline T select(bool when, T yes, T no) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static_assert(sizeof(T) == sizeof(Bits), "float32 or float64");
  Bits y, n;
  std::memcpy(&y, &yes, sizeof(T));
  std::memcpy(&n, &no, sizeof(T));
  const Bits all = Bits(0) - Bits(when);
  const Bits r = (y & all) | (n & ~all);
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
}

// A new contiguous tensor shaped like `input`, whose pair j is `body(a, b, first, second, j)`:
// `a`, `b` the pair's two input planes and `first`, `second` the output's (`plane` values each),
// in parallel over the pairs on libtorch's OpenMP threads.
template <typename Body>
at::Tensor map_pairs(const at::Tensor& input, const Body& body) {
  const at::Tensor x = input.contiguous();
  const auto [pairs, plane] = pair_layout(x);
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lipctl_max_min", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, pairs, grain(plane), [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const scalar_t* a = src + 2 * j * plane;
        scalar_t* first = dst + 2 * j * plane;
        body(a, a + plane, first, first + plane, j, plane);
      }
    });
  });
  return out;
}

// out = x with pair j's two planes sorted (max first); *swapped[j, s] = (first < second).
at::Tensor sort_pairs(const at::Tensor& x, at::Tensor* swapped) {
  const auto [pairs, plane] = pair_layout(x);
  *swapped = at::empty({pairs, plane}, x.options().dtype(at::kBool));
  bool* mask = swapped->data_ptr<bool>();
  return map_pairs(x, [mask](const auto* a, const auto* b, auto* hi, auto* lo, int64_t j, int64_t plane) {
    bool* m = mask + j * plane;
    for (int64_t s = 0; s < plane; ++s) {
      const bool swap = a[s] < b[s];
      m[s] = swap;
      hi[s] = swap ? b[s] : a[s];  // a max: GCC emits no branch here
      lo[s] = swap ? a[s] : b[s];
    }
  });
}

// out = x with the planes of pair j exchanged where swapped[j, s]: the permutation of a forward.
at::Tensor apply_swap(const at::Tensor& x, const at::Tensor& swapped) {
  const auto [pairs, plane] = pair_layout(x);
  TORCH_CHECK(swapped.numel() == pairs * plane, "MaxMin: a mask of ", swapped.numel(), " for ", pairs * plane, " pairs");
  const bool* mask = swapped.const_data_ptr<bool>();
  return map_pairs(x, [mask](const auto* a, const auto* b, auto* first, auto* second, int64_t j, int64_t plane) {
    const bool* m = mask + j * plane;
    for (int64_t s = 0; s < plane; ++s) {
      first[s] = select(m[s], b[s], a[s]);
      second[s] = select(m[s], a[s], b[s]);
    }
  });
}

// The fixed permutation of a forward, as a differentiable function of x (its own adjoint).
struct SwapPairs : public torch::autograd::Function<SwapPairs> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& swapped) {
    ctx->saved_data["swapped"] = swapped;
    return apply_swap(x, swapped);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const at::Tensor swapped = ctx->saved_data["swapped"].toTensor();
    return {SwapPairs::apply(grad[0], swapped), at::Tensor()};
  }
};

struct MaxMin : public torch::autograd::Function<MaxMin> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x) {
    at::Tensor swapped;
    at::Tensor out = sort_pairs(x, &swapped);
    ctx->saved_data["swapped"] = swapped;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const at::Tensor swapped = ctx->saved_data["swapped"].toTensor();
    return {SwapPairs::apply(grad[0], swapped)};
  }
};

}  // namespace

extern "C" {

// *out = MaxMin(*x) as a new tensor with autograd, saving the one-byte swap mask; returns 0. When
// autograd would record nothing (grad mode off, or x needs no gradient) returns 1 and leaves *out
// alone: inference keeps the composed `maximum`/`minimum` (the same values on every device, a
// NaN in both channels), which is as fast there. x: a CPU float32 or float64 tensor [B, C, ...]
// with C even (any strides; it is made contiguous).
int lipctl_max_min(const at::Tensor* x, at::Tensor** out, char* err, long err_len) {
  return lipctl::guard(err, err_len, [&] {
    TORCH_CHECK(x->device().is_cpu(), "MaxMin: the fused kernel is CPU-only, got ", x->device());
    if (!(at::GradMode::is_enabled() && x->requires_grad())) return 1;
    *out = new at::Tensor(MaxMin::apply(*x));
    return 0;
  });
}

}  // extern "C"
