//! Parameter-free building blocks of the ConvNet family (reference-protocol §3). All are
//! 1-Lipschitz: MaxMin permutes sorted pairs, the others copy, drop or pad coordinates.

use tch::{Kind, Tensor};

/// MaxMin activation on channel pairs `(2j, 2j+1)`: channel `2j` gets the max, `2j+1` the min.
/// An odd channel count leaves the last channel unchanged (the authors pad it with −∞).
/// Works on `[B, C]` and `[B, C, ...]`.
///
/// The values are the authors' (`max`/`min` over the pair dimension); the kernels are not. Their
/// `max_dim`/`min_dim` also compute indices with a data-dependent branch per element: a quarter
/// of a ConvNet's CPU inference, more on signal-dominated activations (orthogonal layers) than on
/// bias-dominated ones (a standard network at initialisation). Here, without autograd (frozen
/// inference, evaluation, certification) it is elementwise `maximum`/`minimum`, about 10× faster;
/// with autograd it is one `gather` by the pair's order, whose backward is one scatter (about 1.5×
/// faster forward and backward than the authors' on a `[64, 16, 32, 32]` map; `maximum`'s own
/// backward is slower than either). The Jacobian is the permutation that sorts each pair; at a
/// tie the max takes the first input's gradient and the min the second's.
pub fn max_min(x: &Tensor) -> Tensor {
    let size = x.size();
    let channels = size[1];
    if channels % 2 == 1 {
        let paired = max_min(&x.narrow(1, 0, channels - 1));
        return Tensor::cat(&[paired, x.narrow(1, channels - 1, 1)], 1);
    }
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

    /// With autograd (the gather path) the values are those of the path without it, and the
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
