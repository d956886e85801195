//! RandAugment (Cubuk et al., 2020) as torchvision's `transforms.RandAugment(num_ops, magnitude)`
//! applies it to uint8 image tensors, batched on the device: the authors' Tiny ImageNet training
//! augmentation (`RandAugment(num_ops=2, magnitude=9)`, their `datasets/datasets_.py`; no crop, no
//! flip), applied before centring (design §8).
//!
//! Semantics follow torchvision's `autoaugment.py` and `_functional_tensor.py`:
//!
//! * 14 operations in torchvision's order ([`Op::ALL`]); for each of the `num_ops` slots every image
//!   draws one uniformly, and a signed operation negates its magnitude with probability ½;
//! * magnitudes are bin `magnitude` of `num_magnitude_bins` = 31 (`linspace(0, max, 31)[9]`, i.e.
//!   `0.3·max`): shear 0.09, translation `int(150/331·side·0.3)` pixels (8 at 64, 4 at 32),
//!   rotation 9°, enhancement factors `1 ± 0.27`, posterize to 7 bits, solarize at 178.5;
//! * geometric operations resample with nearest neighbour and fill 0 (torchvision's `grid_sample`
//!   with `align_corners=False` on the inverse affine matrix of `F.affine`/`F.rotate`; shears about
//!   the top-left corner, translation and rotation about the centre);
//! * enhancement operations blend `f·img + (1 − f)·degenerate`, clamp to `[0, 255]` and truncate, as
//!   `_blend` does; posterize, solarize, autocontrast and equalize act per channel as torchvision's.
//!
//! The batched form computes every operation's result for the whole batch and keeps, per image, the
//! one it drew (`where`): no per-image loop, no host round trip (the random numbers come from torch's
//! generator on the batch's device, seeded per epoch by the training loop). Departure (listed in
//! the report, `report::DEPARTURES`): the authors apply torchvision's PIL implementation to PIL
//! images, which can differ from the tensor one in rounding and resampling details.

use anyhow::Context;
use tch::{Device, Kind, Tensor};

/// torchvision's default number of magnitude bins.
pub const NUM_MAGNITUDE_BINS: u32 = 31;

/// One operation of RandAugment's search space, in torchvision's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
}

impl Op {
    /// torchvision's `_augmentation_space` order: an image's op index is a position here.
    pub const ALL: [Op; 14] = [
        Op::Identity,
        Op::ShearX,
        Op::ShearY,
        Op::TranslateX,
        Op::TranslateY,
        Op::Rotate,
        Op::Brightness,
        Op::Color,
        Op::Contrast,
        Op::Sharpness,
        Op::Posterize,
        Op::Solarize,
        Op::AutoContrast,
        Op::Equalize,
    ];

    /// Index in [`Op::ALL`].
    pub fn index(self) -> i64 {
        Op::ALL.iter().position(|&o| o == self).unwrap_or(0) as i64
    }

    /// Whether the magnitude is negated with probability ½.
    pub fn signed(self) -> bool {
        matches!(
            self,
            Op::ShearX | Op::ShearY | Op::TranslateX | Op::TranslateY | Op::Rotate | Op::Brightness | Op::Color | Op::Contrast | Op::Sharpness
        )
    }

    /// torchvision's (unsigned) magnitude at bin `m` of `bins` for a `w×h` image: shear (tangent),
    /// translation (pixels, before `int`), rotation (degrees), enhancement (factor − 1), posterize
    /// (bits kept), solarize (threshold on 0..255); 0 for the rest.
    pub fn magnitude(self, m: u32, bins: u32, w: i64, h: i64) -> f64 {
        // `torch.linspace(lo, hi, bins)[m]`.
        let at = |lo: f64, hi: f64| lo + (hi - lo) * m as f64 / (bins - 1) as f64;
        match self {
            Op::ShearX | Op::ShearY => at(0.0, 0.3),
            Op::TranslateX => at(0.0, 150.0 / 331.0 * w as f64),
            Op::TranslateY => at(0.0, 150.0 / 331.0 * h as f64),
            Op::Rotate => at(0.0, 30.0),
            Op::Brightness | Op::Color | Op::Contrast | Op::Sharpness => at(0.0, 0.9),
            // `8 − (arange(bins) / ((bins − 1) / 4)).round()`; torch rounds half to even.
            Op::Posterize => 8.0 - (m as f64 / ((bins - 1) as f64 / 4.0)).round_ties_even(),
            Op::Solarize => at(255.0, 0.0),
            Op::Identity | Op::AutoContrast | Op::Equalize => 0.0,
        }
    }
}

/// torchvision's `_get_inverse_affine_matrix` (scale 1): the map from output to input pixel
/// coordinates, both relative to the image centre, for rotation `angle` (degrees), `translate`
/// (pixels) and `shear` (degrees) about `center` (relative to the image centre). Row-major 2×3.
pub fn inverse_affine(center: [f64; 2], angle: f64, translate: [f64; 2], shear: [f64; 2]) -> [f64; 6] {
    let (rot, sx, sy) = (angle.to_radians(), shear[0].to_radians(), shear[1].to_radians());
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d, -b, 0.0, -c, a, 0.0];
    let (cx, cy) = (center[0], center[1]);
    let (tx, ty) = (translate[0], translate[1]);
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx;
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy;
    m
}

/// The inverse affine matrix of a geometric `op` with signed magnitude `v` on a `w×h` image, as
/// torchvision's `_apply_op` builds it (identity for the other operations).
fn op_matrix(op: Op, v: f64, w: i64, h: i64) -> [f64; 6] {
    // Shears use `center=[0, 0]`: the top-left corner, i.e. (−w/2, −h/2) from the centre.
    let corner = [-(w as f64) / 2.0, -(h as f64) / 2.0];
    let shear_deg = v.atan().to_degrees();
    match op {
        Op::ShearX => inverse_affine(corner, 0.0, [0.0, 0.0], [shear_deg, 0.0]),
        Op::ShearY => inverse_affine(corner, 0.0, [0.0, 0.0], [0.0, shear_deg]),
        Op::TranslateX => inverse_affine([0.0, 0.0], 0.0, [v.trunc(), 0.0], [0.0, 0.0]),
        Op::TranslateY => inverse_affine([0.0, 0.0], 0.0, [0.0, v.trunc()], [0.0, 0.0]),
        // `F.rotate` passes −angle to the same matrix.
        Op::Rotate => inverse_affine([0.0, 0.0], -v, [0.0, 0.0], [0.0, 0.0]),
        _ => [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    }
}

/// RandAugment's parameters on one device for one image size: per (operation, sign) the sampling
/// matrix and the blend factor, uploaded once (a batch then costs no host-to-device copy).
#[derive(Debug)]
pub struct Tables {
    /// `[28, 3, 2]` float32: row `2·op + sign` (sign 1: negated) is the inverse affine matrix,
    /// transposed and divided by (w/2, h/2), so that `[x, y, 1] · θ` is a `grid_sample` location.
    theta_t: Tensor,
    /// `[28]` float32: `1 ± magnitude` for the enhancement operations, 1 otherwise.
    factor: Tensor,
    /// `[H·W, 3]` float32: pixel centres relative to the image centre, and 1.
    base: Tensor,
    /// Posterize's bit mask (`0xFE` at 7 bits) and solarize's threshold.
    posterize_mask: i64,
    solarize_threshold: f64,
    h: i64,
    w: i64,
}

impl Tables {
    /// Tables for bin `magnitude` of [`NUM_MAGNITUDE_BINS`] and `h×w` images on `device`.
    pub fn new(magnitude: u32, h: i64, w: i64, device: Device) -> anyhow::Result<Tables> {
        anyhow::ensure!(magnitude < NUM_MAGNITUDE_BINS, "RandAugment magnitude {magnitude} is not below {NUM_MAGNITUDE_BINS}");
        let mag = |op: Op| op.magnitude(magnitude, NUM_MAGNITUDE_BINS, w, h);
        let (mut theta, mut factor) = (Vec::with_capacity(28 * 6), Vec::with_capacity(28));
        for op in Op::ALL {
            for sign in [1.0, -1.0] {
                let v = if op.signed() { sign * mag(op) } else { mag(op) };
                let m = op_matrix(op, v, w, h);
                // Transposed and normalised as `_gen_affine_grid` does.
                let (sx, sy) = (w as f64 / 2.0, h as f64 / 2.0);
                theta.extend([m[0] / sx, m[3] / sy, m[1] / sx, m[4] / sy, m[2] / sx, m[5] / sy].map(|x| x as f32));
                let blend = matches!(op, Op::Brightness | Op::Color | Op::Contrast | Op::Sharpness);
                factor.push(if blend { (1.0 + v) as f32 } else { 1.0 });
            }
        }
        let opts = (Kind::Float, device);
        let xs = Tensor::f_linspace(-(w as f64) / 2.0 + 0.5, w as f64 / 2.0 - 0.5, w, opts)?;
        let ys = Tensor::f_linspace(-(h as f64) / 2.0 + 0.5, h as f64 / 2.0 - 0.5, h, opts)?;
        let base = Tensor::f_stack(
            &[xs.f_view([1, w])?.f_expand([h, w], false)?, ys.f_view([h, 1])?.f_expand([h, w], false)?, Tensor::f_ones([h, w], opts)?],
            2,
        )?
        .f_view([h * w, 3])?;
        let bits = mag(Op::Posterize) as i64;
        Ok(Tables {
            theta_t: Tensor::from_slice(&theta).f_to_device(device)?.f_view([28, 3, 2])?,
            factor: Tensor::from_slice(&factor).f_to_device(device)?,
            base,
            posterize_mask: 256 - (1i64 << (8 - bits)),
            solarize_threshold: mag(Op::Solarize),
            h,
            w,
        })
    }

    /// Whether these tables fit `h×w` images on `device`.
    pub fn fits(&self, h: i64, w: i64, device: Device) -> bool {
        self.h == h && self.w == w && self.base.device() == device
    }

    /// `num_ops` RandAugment operations on uint8 images `[B, 3, H, W]`, each image drawing its own.
    pub fn apply(&self, images_u8: &Tensor, num_ops: u32) -> anyhow::Result<Tensor> {
        let mut x = images_u8.shallow_clone();
        for _ in 0..num_ops {
            let (op, sign) = sample_ops(x.size()[0], x.device())?;
            x = self.apply_ops(&x, &op, &sign)?;
        }
        Ok(x)
    }

    /// Operation `op[i]` (index in [`Op::ALL`]) with sign `sign[i]` (1: negated magnitude) on image
    /// `i` of the uint8 batch `[B, 3, H, W]`; `op`, `sign` int64 `[B]`. Returns uint8 `[B, 3, H, W]`.
    pub fn apply_ops(&self, images_u8: &Tensor, op: &Tensor, sign: &Tensor) -> anyhow::Result<Tensor> {
        let size = images_u8.size();
        let [b, _, h, w] = <[i64; 4]>::try_from(size.as_slice()).ok().context("RandAugment expects [B, 3, H, W]")?;
        anyhow::ensure!(h == self.h && w == self.w, "RandAugment tables for {}×{} images, given {h}×{w}", self.h, self.w);
        let x = images_u8.f_to_kind(Kind::Float)?;
        let row = (op * 2 + sign).f_to_kind(Kind::Int64)?;
        let is = |o: Op| -> anyhow::Result<Tensor> { Ok(op.f_eq(o.index())?.f_view([b, 1, 1, 1])?) };
        let between = |lo: Op, hi: Op| -> anyhow::Result<Tensor> {
            Ok(op.f_ge(lo.index())?.f_logical_and(&op.f_le(hi.index())?)?.f_view([b, 1, 1, 1])?)
        };
        let mut out = x.shallow_clone();
        out = self.geometric(&x, &row)?.f_where_self(&between(Op::ShearX, Op::Rotate)?, &out)?;
        // `adjust_sharpness` leaves images of side ≤ 2 as they are.
        let last_blend = if h > 2 && w > 2 { Op::Sharpness } else { Op::Contrast };
        out = self.enhanced(&x, op, &row)?.f_where_self(&between(Op::Brightness, last_blend)?, &out)?;
        let posterized = images_u8.f_bitwise_and(self.posterize_mask)?.f_to_kind(Kind::Float)?;
        out = posterized.f_where_self(&is(Op::Posterize)?, &out)?;
        let solarized = (-&x + 255.0).f_where_self(&x.f_ge(self.solarize_threshold)?, &x)?;
        out = solarized.f_where_self(&is(Op::Solarize)?, &out)?;
        out = autocontrast(&x)?.f_where_self(&is(Op::AutoContrast)?, &out)?;
        out = equalize(images_u8)?.f_where_self(&is(Op::Equalize)?, &out)?;
        Ok(out.f_to_kind(Kind::Uint8)?)
    }

    /// Every image resampled (nearest, fill 0) by the matrix of its row: float `[B, 3, H, W]`.
    fn geometric(&self, x: &Tensor, row: &Tensor) -> anyhow::Result<Tensor> {
        let b = x.size()[0];
        let theta_t = self.theta_t.f_index_select(0, row)?; // [B, 3, 2]
        let grid = self.base.f_matmul(&theta_t)?.f_view([b, self.h, self.w, 2])?;
        // interpolation 1 = nearest, padding 0 = zeros.
        Ok(x.f_grid_sampler(&grid, 1, 0, false)?.f_round()?)
    }

    /// Every image blended with the degenerate image of its operation (black, grey, mean grey,
    /// blurred) by its factor, clamped and truncated as `_blend`: float `[B, 3, H, W]`.
    fn enhanced(&self, x: &Tensor, op: &Tensor, row: &Tensor) -> anyhow::Result<Tensor> {
        let b = x.size()[0];
        let is = |o: Op| -> anyhow::Result<Tensor> { Ok(op.f_eq(o.index())?.f_view([b, 1, 1, 1])?) };
        let gray = grayscale(x)?;
        let mean = gray.f_mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float)?;
        let mut degenerate = blurred(x)?;
        degenerate = mean.f_expand_as(x)?.f_where_self(&is(Op::Contrast)?, &degenerate)?;
        degenerate = gray.f_expand_as(x)?.f_where_self(&is(Op::Color)?, &degenerate)?;
        degenerate = degenerate.f_where_scalarother(&is(Op::Brightness)?.f_logical_not()?, 0.0)?;
        let f = self.factor.f_index_select(0, row)?.f_view([b, 1, 1, 1])?;
        let blended = x * &f + degenerate * (-&f + 1.0);
        Ok(blended.f_clamp(0.0, 255.0)?.f_trunc()?)
    }
}

/// Per image, an operation index uniform over [`Op::ALL`] and a sign bit (1: negate), int64 `[B]`.
pub fn sample_ops(b: i64, device: Device) -> anyhow::Result<(Tensor, Tensor)> {
    let opts = (Kind::Int64, device);
    Ok((Tensor::f_randint_low(0, Op::ALL.len() as i64, [b], opts)?, Tensor::f_randint_low(0, 2, [b], opts)?))
}

/// `rgb_to_grayscale` of float images holding uint8 values: `0.2989 r + 0.587 g + 0.114 b`
/// truncated, `[B, 1, H, W]`.
fn grayscale(x: &Tensor) -> anyhow::Result<Tensor> {
    let c = |i: i64| x.f_narrow(1, i, 1);
    Ok((c(0)? * 0.2989 + c(1)? * 0.587 + c(2)? * 0.114).f_trunc()?)
}

/// `_blurred_degenerate_image`: the interior replaced by the rounded 3×3 smoothing
/// `[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`, the border kept. Written as shifted sums (exact in
/// float32) rather than a convolution, so that TF32 cannot touch it.
fn blurred(x: &Tensor) -> anyhow::Result<Tensor> {
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    if h <= 2 || w <= 2 {
        return Ok(x.copy());
    }
    let mut sum = x.f_narrow(2, 1, h - 2)?.f_narrow(3, 1, w - 2)? * 4.0;
    for dy in 0..3 {
        for dx in 0..3 {
            sum += x.f_narrow(2, dy, h - 2)?.f_narrow(3, dx, w - 2)?;
        }
    }
    let inner = (sum / 13.0).f_round()?;
    let out = x.copy();
    out.f_narrow(2, 1, h - 2)?.f_narrow(3, 1, w - 2)?.f_copy_(&inner)?;
    Ok(out)
}

/// `autocontrast`: each channel stretched linearly from its [min, max] to [0, 255] (unchanged
/// where min = max), truncated. Float in and out, `[B, C, H, W]`.
fn autocontrast(x: &Tensor) -> anyhow::Result<Tensor> {
    let lo = x.f_amin([2i64, 3].as_slice(), true)?;
    let hi = x.f_amax([2i64, 3].as_slice(), true)?;
    let flat = hi.f_eq_tensor(&lo)?;
    let lo = lo.f_where_scalarother(&flat.f_logical_not()?, 0.0)?;
    let scale = ((&hi - &lo).f_clamp_min(1.0)?.f_reciprocal()? * 255.0).f_where_scalarother(&flat.f_logical_not()?, 1.0)?;
    Ok(((x - lo) * scale).f_clamp(0.0, 255.0)?.f_trunc()?)
}

/// `equalize` per channel, torchvision's `_scale_channel`: with the histogram `hist` of the
/// channel's values and `step = ⌊(H·W − hist[max]) / 255⌋`, value `v` becomes
/// `⌊(cumsum(hist)[v − 1] + ⌊step/2⌋) / step⌋` (0 for v = 0) clamped to 255; unchanged when
/// `step = 0`. uint8 `[B, C, H, W]` in, float out.
fn equalize(images_u8: &Tensor) -> anyhow::Result<Tensor> {
    let size = images_u8.size();
    let (bc, hw) = (size[0] * size[1], size[2] * size[3]);
    let v = images_u8.f_to_kind(Kind::Int64)?.f_reshape([bc, hw])?;
    let opts = (Kind::Int64, images_u8.device());
    let hist = Tensor::f_zeros([bc, 256], opts)?.f_scatter_add(1, &v, &Tensor::f_ones([bc, hw], opts)?)?;
    let top = hist.f_gather(1, &v.f_amax([1i64].as_slice(), true)?, false)?;
    let step = (-top + hw).f_div_scalar_mode(255, "floor")?; // [BC, 1]
    let cum = hist.f_cumsum(1, Kind::Int64)?;
    let lut = (cum + step.f_div_scalar_mode(2, "floor")?).f_div_tensor_mode(&step.f_clamp_min(1)?, "floor")?;
    let lut = Tensor::f_cat(&[Tensor::f_zeros([bc, 1], opts)?, lut.f_narrow(1, 0, 255)?], 1)?.f_clamp(0, 255)?;
    let out = lut.f_gather(1, &v, false)?.f_where_self(&step.f_gt(0)?, &v)?;
    Ok(out.f_reshape(size.as_slice())?.f_to_kind(Kind::Float)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(t: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(t.to_kind(Kind::Int64).flatten(0, -1)).unwrap()
    }

    /// uint8 `[1, 3, h, w]` from channel-major values.
    fn image(v: &[i64], h: i64, w: i64) -> Tensor {
        Tensor::from_slice(v).to_kind(Kind::Uint8).view([1, 3, h, w])
    }

    /// `op` with `sign` (0: +, 1: −) on every image of `x`, at magnitude 9.
    fn run(x: &Tensor, op: Op, sign: i64) -> Tensor {
        let s = x.size();
        let t = Tables::new(9, s[2], s[3], Device::Cpu).unwrap();
        let b = s[0];
        t.apply_ops(x, &Tensor::full([b], op.index(), (Kind::Int64, Device::Cpu)), &Tensor::full([b], sign, (Kind::Int64, Device::Cpu)))
            .unwrap()
    }

    #[test]
    fn magnitudes_at_bin_9_of_31_are_torchvisions() {
        // linspace(0, max, 31)[9] = 0.3·max.
        let m = |op: Op, side: i64| op.magnitude(9, 31, side, side);
        assert!((m(Op::ShearX, 64) - 0.09).abs() < 1e-12);
        assert!((m(Op::Rotate, 64) - 9.0).abs() < 1e-12);
        assert!((m(Op::Contrast, 64) - 0.27).abs() < 1e-12);
        // 150/331 · 64 · 0.3 = 8.70…, 150/331 · 32 · 0.3 = 4.35…: `int` keeps 8 and 4 pixels.
        assert_eq!(m(Op::TranslateX, 64).trunc(), 8.0);
        assert_eq!(m(Op::TranslateY, 32).trunc(), 4.0);
        // 8 − round(9 / 7.5) = 7 bits; 255 − 8.5 · 9 = 178.5.
        assert_eq!(m(Op::Posterize, 64), 7.0);
        assert_eq!(m(Op::Solarize, 64), 178.5);
        assert_eq!(Op::ALL.iter().filter(|o| o.signed()).count(), 9);
    }

    #[test]
    fn posterize_solarize_brightness_by_hand() {
        let x = image(&[0, 1, 2, 255, 131, 178, 179, 10, 201, 50, 99, 255], 1, 4);
        // 7 bits: the lowest bit cleared.
        assert_eq!(vals(&run(&x, Op::Posterize, 0)), [0, 0, 2, 254, 130, 178, 178, 10, 200, 50, 98, 254]);
        // Threshold 178.5: 179 and above become 255 − v.
        assert_eq!(vals(&run(&x, Op::Solarize, 0)), [0, 1, 2, 0, 131, 178, 76, 10, 54, 50, 99, 0]);
        // Factor 1.27, clamped to 255 and truncated: 1.27·131 = 166.37, 1.27·50 = 63.5, 1.27·99 = 125.73.
        assert_eq!(vals(&run(&x, Op::Brightness, 0)), [0, 1, 2, 255, 166, 226, 227, 12, 255, 63, 125, 255]);
        // Factor 0.73: 0.73·255 = 186.15, 0.73·178 = 129.94, 0.73·201 = 146.73.
        assert_eq!(vals(&run(&x, Op::Brightness, 1)), [0, 0, 1, 186, 95, 129, 130, 7, 146, 36, 72, 186]);
    }

    #[test]
    fn color_contrast_sharpness_blend_with_their_degenerate_image_by_hand() {
        // Pixels (100, 50, 0) and (200, 200, 200); grey = ⌊0.2989 r + 0.587 g + 0.114 b⌋ = 59 and
        // ⌊199.98⌋ = 199. Factor 1.27: out = ⌊clamp(1.27 v − 0.27 d)⌋.
        let x = image(&[100, 200, 50, 200, 0, 200], 1, 2);
        // Colour, d = the pixel's grey: 127 − 15.93, 63.5 − 15.93, 254 − 53.73.
        assert_eq!(vals(&run(&x, Op::Color, 0)), [111, 200, 47, 200, 0, 200]);
        // Contrast, d = the mean grey (59 + 199)/2 = 129: 127 − 34.83, 254 − 34.83, 63.5 − 34.83.
        assert_eq!(vals(&run(&x, Op::Contrast, 0)), [92, 219, 28, 219, 0, 219]);
        // Sharpness leaves images of side ≤ 2 as they are.
        assert_eq!(vals(&run(&x, Op::Sharpness, 0)), vals(&x));
        // 3×3, 130 in the centre: the smoothed centre is round((130 + 4·130)/13) = 50, the border
        // is kept; 1.27·130 − 0.27·50 = 151.6.
        let dot: Vec<i64> = (0..27).map(|k| if k % 9 == 4 { 130 } else { 0 }).collect();
        let sharp: Vec<i64> = (0..27).map(|k| if k % 9 == 4 { 151 } else { 0 }).collect();
        assert_eq!(vals(&run(&image(&dot, 3, 3), Op::Sharpness, 0)), sharp);
    }

    #[test]
    fn translations_move_whole_pixels_and_fill_zero() {
        // 32 wide: 4 pixels (to the right for +, to the left for −).
        let (h, w) = (2, 32);
        let x = Tensor::randint_low(1, 256, [2, 3, h, w], (Kind::Uint8, Device::Cpu));
        let right = run(&x, Op::TranslateX, 0);
        let left = run(&x, Op::TranslateX, 1);
        for j in 0..w {
            let col = |t: &Tensor, c: i64| vals(&t.narrow(3, c, 1));
            let zero = vec![0; 12];
            assert_eq!(col(&right, j), if j >= 4 { col(&x, j - 4) } else { zero.clone() }, "column {j}");
            assert_eq!(col(&left, j), if j < w - 4 { col(&x, j + 4) } else { zero }, "column {j}");
        }
        // 32 high: 4 rows down.
        let x = Tensor::randint_low(1, 256, [1, 3, 32, 3], (Kind::Uint8, Device::Cpu));
        let down = run(&x, Op::TranslateY, 0);
        assert_eq!(vals(&down.narrow(2, 4, 28)), vals(&x.narrow(2, 0, 28)));
        assert!(vals(&down.narrow(2, 0, 4)).iter().all(|&v| v == 0));
    }

    /// Nearest-neighbour resampling of image 0 of `x` from source `(row, col) = src(i, j)`.
    fn resample(x: &Tensor, src: impl Fn(f64, f64) -> (f64, f64)) -> Vec<i64> {
        let s = x.size();
        let (h, w) = (s[2], s[3]);
        let mut out = vec![0i64; (3 * h * w) as usize];
        for c in 0..3 {
            for i in 0..h {
                for j in 0..w {
                    let (r, q) = src(i as f64, j as f64);
                    let (r, q) = (r.round_ties_even() as i64, q.round_ties_even() as i64);
                    if (0..h).contains(&r) && (0..w).contains(&q) {
                        out[(c * h * w + i * w + j) as usize] = x.int64_value(&[0, c, r, q]);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn shears_and_rotation_match_their_closed_forms() {
        let (h, w) = (9, 10);
        let x = Tensor::randint_low(1, 256, [1, 3, h, w], (Kind::Uint8, Device::Cpu));
        for (sign, m) in [(0, 0.09), (1, -0.09)] {
            // ShearX about the top-left corner: x_src = x + m·y with y measured from the top edge.
            assert_eq!(vals(&run(&x, Op::ShearX, sign)), resample(&x, |i, j| (i, j + m * (i + 0.5))));
            assert_eq!(vals(&run(&x, Op::ShearY, sign)), resample(&x, |i, j| (i + m * (j + 0.5), j)));
            // Counter-clockwise by ±9° about the centre (y down): the source of a pixel is the
            // pixel rotated clockwise.
            let t = (if sign == 0 { 9.0f64 } else { -9.0 }).to_radians();
            let (cx, cy) = (w as f64 / 2.0 - 0.5, h as f64 / 2.0 - 0.5);
            let rot = |i: f64, j: f64| {
                let (x, y) = (j - cx, i - cy);
                (t.sin() * x + t.cos() * y + cy, t.cos() * x - t.sin() * y + cx)
            };
            assert_eq!(vals(&run(&x, Op::Rotate, sign)), resample(&x, rot));
        }
    }

    #[test]
    fn autocontrast_and_equalize_by_hand() {
        // Channel 0 stretched from [50, 150] (scale 2.55; 127.5 truncates); channel 1 flat: kept.
        let x = image(&[50, 100, 150, 150, 7, 7, 7, 7, 0, 255, 3, 4], 2, 2);
        assert_eq!(vals(&run(&x, Op::AutoContrast, 0)), [0, 127, 255, 255, 7, 7, 7, 7, 0, 255, 3, 4]);
        // 1024 pixels: 512 × 0, 256 × 100, 256 × 200. step = ⌊(1024 − 256)/255⌋ = 3;
        // 100 → ⌊(512 + 1)/3⌋ = 171, 200 → ⌊(768 + 1)/3⌋ = 256 → 255.
        let v: Vec<i64> = (0..1024).map(|k| if k < 512 { 0 } else if k < 768 { 100 } else { 200 }).collect();
        let one = Tensor::from_slice(&v).to_kind(Kind::Uint8).view([1, 1, 32, 32]);
        let eq = vals(&equalize(&one).unwrap());
        assert_eq!((eq[0], eq[600], eq[900]), (0, 171, 255));
        // Fewer than 256 pixels off the top value: step 0, unchanged.
        assert_eq!(vals(&equalize(&image(&[0, 9, 9, 9, 1, 2, 3, 4, 5, 5, 5, 5], 2, 2)).unwrap()), [0, 9, 9, 9, 1, 2, 3, 4, 5, 5, 5, 5]);
    }

    /// Pearson's χ² of `counts` against equal expected counts.
    fn chi_square(counts: &[i64]) -> f64 {
        let n: i64 = counts.iter().sum();
        let e = n as f64 / counts.len() as f64;
        counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum()
    }

    fn histogram(t: &Tensor, k: i64) -> Vec<i64> {
        vals(&t.bincount::<Tensor>(None, k))
    }

    /// χ² with 13 degrees of freedom exceeds 34.53 with probability 0.001.
    const CHI2_13_P001: f64 = 34.53;

    #[test]
    fn operations_are_uniform_and_signs_fair() {
        assert_eq!(chi_square(&[10, 20, 30]), 10.0);
        tch::manual_seed(11);
        let n = 28_000;
        let (op, sign) = sample_ops(n, Device::Cpu).unwrap();
        let stat = chi_square(&histogram(&op, 14));
        assert!(stat < CHI2_13_P001, "operation counts are not uniform: χ² = {stat}");
        let ones = vals(&sign.sum(Kind::Int64))[0];
        // 4 standard deviations of a fair coin over n draws.
        assert!((ones as f64 - n as f64 / 2.0).abs() < 4.0 * (n as f64).sqrt() / 2.0, "{ones} of {n} signs negative");
        // The check can fail: a sampler that gives Equalize twice its share is caught.
        let biased = Tensor::randint_low(0, 15, [n], (Kind::Int64, Device::Cpu)).clamp_max(13);
        assert!(chi_square(&histogram(&biased, 14)) > CHI2_13_P001);
    }

    #[test]
    fn each_image_gets_the_operation_it_drew() {
        tch::manual_seed(3);
        let (b, h, w) = (28, 8, 8);
        let x = Tensor::randint(256, [b, 3, h, w], (Kind::Uint8, Device::Cpu));
        let op = Tensor::arange(b, (Kind::Int64, Device::Cpu)).remainder(14);
        let sign = Tensor::arange(b, (Kind::Int64, Device::Cpu)).divide_scalar_mode(14, "floor");
        let t = Tables::new(9, h, w, Device::Cpu).unwrap();
        let mixed = t.apply_ops(&x, &op, &sign).unwrap();
        for i in 0..b {
            let alone = run(&x.narrow(0, i, 1), Op::ALL[(i % 14) as usize], i / 14);
            assert_eq!(vals(&mixed.narrow(0, i, 1)), vals(&alone), "image {i}");
        }
        assert_eq!(vals(&mixed.narrow(0, 0, 1)), vals(&x.narrow(0, 0, 1)), "Identity changed image 0");
    }
}
