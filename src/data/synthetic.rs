//! A small deterministic dataset with learnable structure, for tests and demos that must not
//! depend on downloads: 10 classes of 32×32 RGB images. Class `c` fixes a base colour
//! (`PALETTE[c % 5]`) and a stripe orientation (horizontal for `c < 5`, vertical otherwise), so
//! neither colour nor orientation alone identifies the class; each image adds a random stripe phase,
//! a random brightness offset and per-pixel noise. Fully determined by [`SyntheticSpec`].

use super::{Decoded, Images};
use crate::stats::SplitMix64;
use serde::Serialize;

/// Everything that determines the synthetic images (part of the `prepare` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SyntheticSpec {
    pub seed: u64,
    pub train_per_class: usize,
    pub test_per_class: usize,
}

impl Default for SyntheticSpec {
    /// 3,000 training and 1,000 test images: enough for a small network to learn in seconds.
    fn default() -> Self {
        SyntheticSpec { seed: 0, train_per_class: 300, test_per_class: 100 }
    }
}

pub const CLASSES: usize = 10;
pub const SIDE: usize = 32;
const PALETTE: [[i32; 3]; 5] = [[200, 60, 60], [60, 170, 60], [60, 80, 200], [190, 180, 50], [150, 60, 170]];
/// Period of the stripes in pixels.
const PERIOD: usize = 8;
/// Stripe contrast, brightness offset range and noise range (uint8 units).
const STRIPE: i32 = 45;
const BRIGHTNESS: i32 = 30;
const NOISE: i32 = 25;

/// Uniform in `-r..=r`.
fn symmetric(rng: &mut SplitMix64, r: i32) -> i32 {
    rng.below((2 * r + 1) as usize) as i32 - r
}

fn image(class: usize, rng: &mut SplitMix64, out: &mut Vec<u8>) {
    let base = PALETTE[class % 5];
    let vertical = class >= 5;
    let phase = rng.below(PERIOD);
    let brightness = symmetric(rng, BRIGHTNESS);
    let plane = SIDE * SIDE;
    let start = out.len();
    out.resize(start + 3 * plane, 0);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let t = if vertical { x } else { y };
            let stripe = if (t + phase) % PERIOD < PERIOD / 2 { STRIPE } else { -STRIPE };
            for (c, b) in base.iter().enumerate() {
                let v = b + stripe + brightness + symmetric(rng, NOISE);
                out[start + c * plane + y * SIDE + x] = v.clamp(0, 255) as u8;
            }
        }
    }
}

fn split(spec: &SyntheticSpec, per_class: usize, stream: u64) -> Images {
    let mut rng = SplitMix64::new(spec.seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
    let mut out = Images::default();
    for class in 0..CLASSES {
        for _ in 0..per_class {
            image(class, &mut rng, &mut out.pixels);
            out.labels.push(class as i64);
        }
    }
    out
}

pub fn generate(spec: &SyntheticSpec) -> Decoded {
    Decoded {
        classes: (0..CLASSES).map(|c| format!("class{c}")).collect(),
        side: SIDE,
        train: split(spec, spec.train_per_class, 1),
        test: split(spec, spec.test_per_class, 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_differ_in_colour_and_orientation() {
        let d = generate(&SyntheticSpec { seed: 3, train_per_class: 4, test_per_class: 1 });
        assert_eq!(d.train.labels.len(), 40);
        assert_eq!(d.train.pixels.len(), 40 * 3 * SIDE * SIDE);
        let plane = SIDE * SIDE;
        // Class 0 (red, horizontal stripes): red channel mean well above blue.
        let img0 = &d.train.pixels[0..3 * plane];
        let mean = |c: usize| img0[c * plane..(c + 1) * plane].iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
        assert!(mean(0) > mean(2) + 80.0);
        // Horizontal stripes: rows are nearly constant, so row-to-row variation dominates.
        let red = &img0[..plane];
        let row_mean = |y: usize| red[y * SIDE..(y + 1) * SIDE].iter().map(|&v| v as f64).sum::<f64>() / SIDE as f64;
        let spread = (0..SIDE).map(row_mean).fold(f64::MIN, f64::max) - (0..SIDE).map(row_mean).fold(f64::MAX, f64::min);
        assert!(spread > 60.0, "{spread}");
        // Deterministic in the seed.
        let again = generate(&SyntheticSpec { seed: 3, train_per_class: 4, test_per_class: 1 });
        assert_eq!(again.train.pixels, d.train.pixels);
    }
}
