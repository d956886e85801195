//! Parameter-free building blocks of the ConvNet family (reference-protocol §3). All are
//! 1-Lipschitz: MaxMin permutes sorted pairs, the others copy, drop or pad coordinates.

use tch::{Kind, Tensor};

/// MaxMin activation on channel pairs `(2j, 2j+1)`: channel `2j` gets the max, `2j+1` the min.
/// An odd channel count leaves the last channel unchanged (the authors pad it with −∞).
/// Works on `[B, C]` and `[B, C, ...]`.
///
/// The values are the authors' (`max`/`min` over the pair dimension); the kernels are not. Their
/// `max_dim`/`min_dim` also compute indices with a data-dependent branch per element. Without
/// autograd (frozen inference, evaluation, certification) lipctl's is elementwise
/// `maximum`/`minimum`, about 10× faster. With autograd on the CPU (float32 and float64) it is
/// one fused pass (`src/shim/max_min.cpp`) that stores a one-byte "swapped" mask per pair; the
/// backward applies the same swap to the gradient, since the Jacobian, the permutation that sorts
/// each pair, is its own transpose (about 3× faster forward + backward than the composed path,
/// `cargo bench --bench speed` part 4). Elsewhere (CUDA, other kinds, a build without the shim)
/// it is one `gather` by the pair's order, whose backward is one scatter. At a tie the max takes
/// the first input's gradient and the min the second's, on both paths.
pub fn max_min(x: &Tensor) -> Tensor {
    let size = x.size();
    let channels = size[1];
    if channels % 2 == 1 {
        let paired = max_min(&x.narrow(1, 0, channels - 1));
        return Tensor::cat(&[paired, x.narrow(1, channels - 1, 1)], 1);
    }
    match super::shim::max_min(x) {
        Some(y) => y,
        None => max_min_composed(x),
    }
}

/// [`max_min`] from ATen ops, for an even channel count: the path without autograd, and with it
/// off the CPU (and the measured baseline of the fused one, `benches/speed.rs`).
pub fn max_min_composed(x: &Tensor) -> Tensor {
    let size = x.size();
    let channels = size[1];
    let mut grouped = size.clone();
    grouped[1] = channels / 2;
    grouped.insert(2, 2);
    let pairs = x.reshape(grouped.as_slice());
    let (a, b) = (pairs.select(2, 0), pairs.select(2, 1));
    if !x.requires_grad() {
        return Tensor::stack(&[a.maximum(&b), a.minimum(&b)], 2).reshape(size.as_slice());
    }
    // Index of the max within each pair (1 where the second input is larger), then of the min.
    let max_at = a.lt_tensor(&b).unsqueeze(2).to_kind(Kind::Int64);
    let order = Tensor::cat(&[&max_at, &(1 - &max_at)], 2);
    pairs.gather(2, &order, false).reshape(size.as_slice())
}

/// Appends zero channels up to `target` channels; returns `x` unchanged when it has as many.
pub fn zero_channel_pad(x: &Tensor, target: i64) -> Tensor {
    let size = x.size();
    let missing = target - size[1];
    if missing <= 0 {
        return x.shallow_clone();
    }
    let mut pad_size = size.clone();
    pad_size[1] = missing;
    let zeros = Tensor::zeros(pad_size.as_slice(), (x.kind(), x.device()));
    Tensor::cat(&[x.shallow_clone(), zeros], 1)
}

/// Keeps the first `n` channels.
pub fn first_channels(x: &Tensor, n: i64) -> Tensor {
    x.narrow(1, 0, n)
}

/// Space-to-depth by 2: `y[b, 4c + 2i + j, r, s] = x[b, c, 2r + i, 2s + j]` (PyTorch's
/// `PixelUnshuffle(2)`), an orthogonal permutation of coordinates.
pub fn pixel_unshuffle(x: &Tensor) -> Tensor {
    x.pixel_unshuffle(2)
}

/// Mean-centred float input from uint8 images: `x/255 − mean` (no scaling, reference-protocol
/// §5.2), so certified radii are in [0, 1] pixel units.
pub fn center(images_u8: &Tensor, channel_mean: &[f64]) -> Tensor {
    let mean = Tensor::from_slice(channel_mean)
        .to_kind(Kind::Float)
        .to_device(images_u8.device())
        .view([1, -1, 1, 1]);
    images_u8.to_kind(Kind::Float) / 255.0 - mean
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ortho::testing::fixed_randn;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn max_min_hand_checked() {
        let x = Tensor::from_slice(&[-1.0f32, 0.0, 1.0, -2.0, -2.0, 0.0, 2.0, 2.0]).view([2, 4]);
        assert_eq!(values(&max_min(&x)), vec![0.0, -1.0, 1.0, -2.0, 0.0, -2.0, 2.0, 2.0]);
        // 4-D, odd channel count: the last channel passes through.
        let x = Tensor::from_slice(&[3.0f32, 5.0, 7.0]).view([1, 3, 1, 1]);
        assert_eq!(values(&max_min(&x)), vec![5.0, 3.0, 7.0]);
    }

    /// With autograd (the fused path here) the values are those of the path without it, and the
    /// gradient routes each output's weight to the input it copies; at a tie the max's goes to
    /// the first input and the min's to the second.
    #[test]
    fn max_min_gradient_hand_checked() {
        let data = [-1.0f32, 0.0, 3.0, 3.0, 2.0, -5.0, 0.5];
        let x = Tensor::from_slice(&data).view([1, 7, 1, 1]).set_requires_grad(true);
        let w = Tensor::from_slice(&[10.0f32, 1.0, 100.0, 1000.0, 7.0, 3.0, 9.0]).view([1, 7, 1, 1]);
        let y = max_min(&x);
        assert_eq!(values(&y), vec![0.0, -1.0, 3.0, 3.0, 2.0, -5.0, 0.5]);
        assert_eq!(values(&y), values(&max_min(&Tensor::from_slice(&data).view([1, 7, 1, 1]))));
        (y * &w).sum(Kind::Float).backward();
        // (−1, 0): max 0 takes 10, min −1 takes 1. (3, 3): 100 and 1000 in place. (2, −5) in
        // order. The odd last channel passes through with its weight 9.
        assert_eq!(values(&x.grad()), vec![1.0, 10.0, 100.0, 1000.0, 7.0, 3.0, 9.0]);
    }

    /// Random `[shape]` values of `kind` with many exact ties (about a quarter of the pairs'
    /// second values copy the first). Drawn without torch's global generator, which concurrent
    /// tests reseed.
    fn tied_input(shape: &[i64], kind: Kind, seed: u64) -> Tensor {
        let x = fixed_randn(shape, seed).to_kind(kind);
        let mut grouped = shape.to_vec();
        grouped[1] /= 2;
        grouped.insert(2, 2);
        let pairs = x.reshape(grouped.as_slice());
        let tie = fixed_randn(&pairs.select(2, 0).size(), seed + 1000).lt(-0.67);
        let second = pairs.select(2, 0).where_self(&tie, &pairs.select(2, 1));
        Tensor::stack(&[pairs.select(2, 0), second], 2).reshape(shape)
    }

    /// `activation`'s values, gradient and gradient of the gradient against the definition on
    /// even channel counts: values `max`/`min` of each pair (libtorch's `maximum`/`minimum`); the
    /// gradient of `Σ w·y` routes `w` by the rule "swap iff first < second" (so a tie stays in
    /// place); and since the Jacobian `P` is a permutation, the gradient of `Σ v·(Pᵀw)` in `w` is
    /// `P v` (double backward).
    fn check_against_definition(activation: &dyn Fn(&Tensor) -> Tensor, kind: Kind) {
        // [6, 22, 16, 16]: 66 pairs of 256 values, two chunks of the kernel's parallel loop.
        for (seed, shape) in [(10u64, vec![3i64, 6, 5, 5]), (20, vec![4, 8]), (30, vec![2, 64, 2, 2]), (40, vec![1, 2, 1, 1]), (50, vec![6, 22, 16, 16])] {
            let x = tied_input(&shape, kind, seed).set_requires_grad(true);
            let mut grouped = shape.clone();
            grouped[1] /= 2;
            grouped.insert(2, 2);
            let pairs = |t: &Tensor| t.reshape(grouped.as_slice());
            let (a, b) = (pairs(&x.detach()).select(2, 0), pairs(&x.detach()).select(2, 1));
            let y = activation(&x);
            let expected = Tensor::stack(&[a.maximum(&b), a.minimum(&b)], 2).reshape(shape.as_slice());
            assert!(y.equal(&expected), "values differ from max/min at {shape:?} ({kind:?})");
            // The permutation by the rule, applied to any t (also the adjoint: P is symmetric).
            let swap = a.lt_tensor(&b);
            let permute = |t: &Tensor| {
                let (t0, t1) = (pairs(t).select(2, 0), pairs(t).select(2, 1));
                Tensor::stack(&[t1.where_self(&swap, &t0), t0.where_self(&swap, &t1)], 2).reshape(shape.as_slice())
            };
            let w = fixed_randn(&shape, seed + 1).to_kind(kind).set_requires_grad(true);
            let v = fixed_randn(&shape, seed + 2).to_kind(kind);
            let gx = Tensor::run_backward(&[(&y * &w).sum(kind)], &[&x], true, true).pop().unwrap();
            assert!(gx.equal(&permute(&w.detach())), "gradient differs from the swap rule at {shape:?} ({kind:?})");
            let gw = Tensor::run_backward(&[(&gx * &v).sum(kind)], &[&w], false, false).pop().unwrap();
            assert!(gw.equal(&permute(&v)), "gradient of the gradient differs at {shape:?} ({kind:?})");
        }
    }

    /// The fused CPU kernel (`src/shim/max_min.cpp`), which [`max_min`] runs here with autograd,
    /// in both kinds it covers, on two OpenMP threads of this test's thread (libgomp keeps the
    /// thread count per thread, so other tests are unaffected) with one map that splits into
    /// chunks. Checked to fail when its backward passes the gradient through unswapped ("gradient
    /// differs from the swap rule"), when `SwapPairs`' backward does ("gradient of the gradient
    /// differs") and when its forward omits the swap ("values differ").
    #[test]
    fn fused_max_min_matches_the_definition() {
        assert!(cfg!(lipctl_shim), "built without the C++ shim: the fused path would not be under test");
        let x = Tensor::zeros([1, 2], (Kind::Float, tch::Device::Cpu));
        assert!(crate::nn::shim::max_min(&x).is_none(), "no autograd: the composed path");
        assert!(crate::nn::shim::max_min(&x.set_requires_grad(true)).is_some());
        #[cfg(lipctl_openmp)]
        {
            extern "C" {
                fn omp_set_num_threads(n: std::os::raw::c_int);
                fn omp_get_max_threads() -> std::os::raw::c_int;
            }
            // SAFETY: plain libgomp calls that set and read this thread's OpenMP thread count.
            unsafe { omp_set_num_threads(2) };
            assert_eq!(unsafe { omp_get_max_threads() }, 2);
        }
        check_against_definition(&max_min, Kind::Float);
        check_against_definition(&max_min, Kind::Double);
    }

    /// The composed path (CUDA's, and any kind the kernel does not cover) on the CPU.
    #[test]
    fn composed_max_min_matches_the_definition() {
        check_against_definition(&max_min_composed, Kind::Float);
        check_against_definition(&max_min_composed, Kind::Double);
    }

    /// Any strides (a channels-last map, a channel slice) give max/min of the pairs, with
    /// autograd (the fused path) and without it.
    #[test]
    fn max_min_of_strided_inputs() {
        let x = tied_input(&[2, 8, 3, 3], Kind::Float, 5);
        let pairs = x.reshape([2, 4, 2, 3, 3]);
        let (a, b) = (pairs.select(2, 0), pairs.select(2, 1));
        let expected = Tensor::stack(&[a.maximum(&b), a.minimum(&b)], 2).reshape([2, 8, 3, 3]);
        let channels_last = x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        assert!(!channels_last.is_contiguous());
        let wide = Tensor::cat(&[&x, &x], 1);
        for grad in [true, false] {
            assert!(max_min(&channels_last.detach().set_requires_grad(grad)).equal(&expected), "channels-last, grad {grad}");
            assert!(max_min(&wide.detach().set_requires_grad(grad).narrow(1, 8, 8)).equal(&expected), "slice, grad {grad}");
        }
    }

    #[test]
    fn pixel_unshuffle_of_constant_channels() {
        let x = Tensor::cat(
            &[Tensor::ones([1, 1, 4, 4], (Kind::Float, tch::Device::Cpu)) * 1.0,
              Tensor::ones([1, 1, 4, 4], (Kind::Float, tch::Device::Cpu)) * 2.0,
              Tensor::ones([1, 1, 4, 4], (Kind::Float, tch::Device::Cpu)) * 3.0],
            1,
        );
        let y = pixel_unshuffle(&x);
        assert_eq!(y.size(), vec![1, 12, 2, 2]);
        let per_channel: Vec<f32> = values(&y.mean_dim(&[2i64, 3][..], false, Kind::Float));
        assert_eq!(per_channel, vec![1., 1., 1., 1., 2., 2., 2., 2., 3., 3., 3., 3.]);
        // Position check: y[0, 2i+j, r, s] = x[0, 0, 2r+i, 2s+j].
        let x = Tensor::arange(16, (Kind::Float, tch::Device::Cpu)).view([1, 1, 4, 4]);
        let y = pixel_unshuffle(&x);
        assert_eq!(values(&y.get(0).get(1)), vec![1.0, 3.0, 9.0, 11.0]);
    }

    #[test]
    fn zero_pad_and_first_channels() {
        let x = Tensor::ones([4, 2, 4, 4], (Kind::Float, tch::Device::Cpu));
        let y = zero_channel_pad(&x, 12);
        assert_eq!(y.size(), vec![4, 12, 4, 4]);
        assert_eq!(y.sum(Kind::Float).double_value(&[]), 4.0 * 2.0 * 16.0);
        let flat = Tensor::ones([4, 12], (Kind::Float, tch::Device::Cpu));
        assert_eq!(zero_channel_pad(&flat, 4).size(), vec![4, 12]);
        assert_eq!(first_channels(&y, 3).size(), vec![4, 3, 4, 4]);
    }
}

/// A dense layer on `[B, in, 1, 1]` feature maps (the 1×1 heads of Cayley and BCOP): flattens to
/// `[B, in]`, applies `x·Wᵀ + b` with `weight` `[out, in]` and `bias` `[out]`, and returns
/// `[B, out, 1, 1]`.
pub fn linear_on_maps(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Tensor {
    let batch = x.size()[0];
    x.flatten(1, -1).linear(weight, Some(bias)).view([batch, -1, 1, 1])
}
