//! Training augmentation on the device, batched (reference-protocol §5.2; design §8).
//!
//! The dataset stays uint8 on the device. Three augmentations, chosen per dataset in the pipeline
//! (`datasets[].augment`, [`Augmentation::default_for`]):
//!
//! * `crop_flip` (CIFAR, R1's `Normalize → RandomCrop(32, padding=4, fill=0) →
//!   RandomHorizontalFlip`): the batch is centred (`x/255 − mean`, no scaling), then randomly
//!   cropped with padding 4 and flipped horizontally with probability ½. Padding happens after
//!   centering, so padded pixels are 0, i.e. the per-channel mean colour. Crop and flip are one
//!   `gather` per axis with per-image offsets: no per-image loop, no host round trip.
//! * `randaugment` (Tiny ImageNet, the authors' `RandAugment(num_ops=2, magnitude=9)` on the uint8
//!   image, then centring; no crop, no flip): [`super::randaugment`].
//! * `none`: centring only.
//!
//! Random numbers come from torch's generator on the batch's device, so the training loop's
//! per-epoch `manual_seed` makes the augmentation reproducible.

use super::randaugment;
use crate::data::DatasetKind;
use crate::eval::Centering;
use anyhow::Context;
use tch::{Kind, Tensor};

/// Padding of R1's `RandomCrop` for CIFAR.
pub const CROP_PADDING: i64 = 4;

/// What the training pass does to each batch. The `Debug` form enters checkpoint fingerprints
/// and `Serialize` the train keys of non-default choices: keep both stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Augmentation {
    /// Centering only.
    None,
    /// Centering, random crop with the given padding, horizontal flip with probability ½.
    CropFlip { padding: i64 },
    /// torchvision's RandAugment with `ops` operations at bin `magnitude` of 31 on the uint8
    /// image, then centering.
    RandAugment { ops: u32, magnitude: u32 },
}

impl Augmentation {
    /// The CIFAR augmentation of R1 (and of every artifact made before the choice existed).
    pub const CIFAR: Augmentation = Augmentation::CropFlip { padding: CROP_PADDING };

    /// The authors' Tiny ImageNet augmentation: `RandAugment(num_ops=2, magnitude=9)`.
    pub const TINY_IMAGENET: Augmentation = Augmentation::RandAugment { ops: 2, magnitude: 9 };

    /// The pipeline's names, in the order error messages list them.
    pub const NAMES: [&'static str; 3] = ["crop_flip", "randaugment", "none"];

    /// The augmentation of a dataset whose pipeline entry names none: the authors' choice for
    /// Tiny ImageNet, CIFAR's crop and flip for every other dataset.
    pub fn default_for(kind: DatasetKind) -> Augmentation {
        match kind {
            DatasetKind::Tinyimagenet => Augmentation::TINY_IMAGENET,
            _ => Augmentation::CIFAR,
        }
    }

    /// The pipeline's name of this augmentation.
    pub fn name(self) -> &'static str {
        match self {
            Augmentation::CropFlip { .. } => "crop_flip",
            Augmentation::RandAugment { .. } => "randaugment",
            Augmentation::None => "none",
        }
    }

    /// Centred (and augmented) float32 batch from uint8 images `[B, 3, H, W]`. RandAugment uploads
    /// its tables on every call here; the training step keeps them ([`Augmentation::apply_cached`]).
    pub fn apply(self, images_u8: &Tensor, centering: &Centering) -> anyhow::Result<Tensor> {
        self.apply_cached(images_u8, centering, &mut None)
    }

    /// [`Augmentation::apply`], keeping RandAugment's device tables in `tables` between batches.
    pub fn apply_cached(self, images_u8: &Tensor, centering: &Centering, tables: &mut Option<randaugment::Tables>) -> anyhow::Result<Tensor> {
        match self {
            Augmentation::None => centering.apply(images_u8),
            Augmentation::CropFlip { padding } => {
                let x = centering.apply(images_u8)?;
                let b = x.size()[0];
                let opts = (Kind::Int64, x.device());
                let dy = Tensor::f_randint_low(0, 2 * padding + 1, [b], opts)?;
                let dx = Tensor::f_randint_low(0, 2 * padding + 1, [b], opts)?;
                let flip = Tensor::f_rand([b], (Kind::Float, x.device()))?.f_lt(0.5)?;
                crop_flip(&x, padding, &dy, &dx, &flip)
            }
            Augmentation::RandAugment { ops, magnitude } => {
                let size = images_u8.size();
                let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
                if !tables.as_ref().is_some_and(|t| t.fits(h, w, images_u8.device())) {
                    *tables = Some(randaugment::Tables::new(magnitude, h, w, images_u8.device())?);
                }
                let t = tables.as_ref().context("internal error: RandAugment tables")?;
                centering.apply(&t.apply(images_u8, ops)?)
            }
        }
    }
}

impl std::str::FromStr for Augmentation {
    type Err = anyhow::Error;
    /// `crop_flip`, `randaugment` (2 operations at magnitude 9, the authors') or `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "crop_flip" => Ok(Augmentation::CIFAR),
            "randaugment" => Ok(Augmentation::TINY_IMAGENET),
            "none" => Ok(Augmentation::None),
            _ => anyhow::bail!("unknown augmentation {s:?}; expected one of {}", Augmentation::NAMES.join(", ")),
        }
    }
}

/// Zero-pads `x` `[B, C, H, W]` by `padding` on every side, then takes for image `i` the
/// `H×W` window whose top-left corner is `(dy[i], dx[i])` in the padded image, mirrored left to
/// right where `flip[i]`. `dy`, `dx` are int64 in `0..=2·padding`, `flip` bool, all `[B]`.
pub fn crop_flip(x: &Tensor, padding: i64, dy: &Tensor, dx: &Tensor, flip: &Tensor) -> anyhow::Result<Tensor> {
    let size = x.size();
    let [b, c, h, w] = <[i64; 4]>::try_from(size.as_slice()).ok().context("crop_flip expects [B, C, H, W]")?;
    let padded = x.f_constant_pad_nd([padding, padding, padding, padding])?;
    let opts = (Kind::Int64, x.device());
    // Rows: dy + r. Columns: dx + c, or dx + (W − 1 − c) when flipped (flip after crop).
    let rows = dy.f_view([b, 1])? + Tensor::f_arange(h, opts)?.f_view([1, h])?;
    let ascending = Tensor::f_arange(w, opts)?.f_view([1, w])?;
    let cols_src = ascending.f_where_self(&flip.f_logical_not()?.f_view([b, 1])?, &(-&ascending + (w - 1)))?;
    let cols = dx.f_view([b, 1])? + cols_src;
    let row_index = rows.f_view([b, 1, h, 1])?.f_expand([b, c, h, w + 2 * padding], false)?;
    let by_rows = padded.f_gather(2, &row_index, false)?;
    let col_index = cols.f_view([b, 1, 1, w])?.f_expand([b, c, h, w], false)?;
    Ok(by_rows.f_gather(3, &col_index, false)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::blocks::center;
    use tch::Device;

    fn vals(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn crop_and_flip_by_hand() {
        // One 1×3×3 image 1..9; padding 1.
        let x = Tensor::arange_start(1, 10, (Kind::Float, Device::Cpu)).view([1, 1, 3, 3]);
        let i64s = |v: i64| Tensor::from_slice(&[v]);
        let no = Tensor::from_slice(&[false]);
        let yes = Tensor::from_slice(&[true]);
        // Offset (1, 1) is the identity.
        assert_eq!(vals(&crop_flip(&x, 1, &i64s(1), &i64s(1), &no).unwrap()), vals(&x));
        // Offset (0, 0): shifted down-right, zero border on top and left.
        assert_eq!(vals(&crop_flip(&x, 1, &i64s(0), &i64s(0), &no).unwrap()), vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]);
        // Offset (2, 1) flipped: rows 2..3 of the image then the zero row, each row mirrored.
        assert_eq!(vals(&crop_flip(&x, 1, &i64s(2), &i64s(1), &yes).unwrap()), vec![6., 5., 4., 9., 8., 7., 0., 0., 0.]);
        // Offset (1, 2) flipped: columns 2..3 then the zero column, mirrored: [0, c3, c2].
        assert_eq!(vals(&crop_flip(&x, 1, &i64s(1), &i64s(2), &yes).unwrap()), vec![0., 3., 2., 0., 6., 5., 0., 9., 8.]);
    }

    #[test]
    fn random_batch_is_a_padded_crop_of_the_centred_image() {
        tch::manual_seed(7);
        let (b, h, w) = (64i64, 5i64, 6i64);
        let images = Tensor::randint(256, [b, 3, h, w], (Kind::Uint8, Device::Cpu));
        let mean = [0.5, 0.25, 0.125];
        let out = Augmentation::CropFlip { padding: 2 }.apply(&images, &Centering::new(mean, Device::Cpu).unwrap()).unwrap();
        assert_eq!(out.size(), vec![b, 3, h, w]);
        assert_eq!(out.kind(), Kind::Float);
        let centred = center(&images, &mean);
        // Centering without augmentation is exactly the shared formula.
        let plain = Augmentation::None.apply(&images, &Centering::new(mean, Device::Cpu).unwrap()).unwrap();
        assert!(plain.equal(&centred));
        let (mut flips, mut shifts) = (0, std::collections::BTreeSet::new());
        for i in 0..b {
            let want = vals(&out.get(i));
            let src = centred.get(i).unsqueeze(0);
            // Brute force over every offset and flip, with the crop written out independently.
            let padded = src.constant_pad_nd([2, 2, 2, 2]);
            let mut found = None;
            for (oy, ox, f) in (0..5).flat_map(|a| (0..5).flat_map(move |c| [(a, c, false), (a, c, true)])) {
                let mut win = padded.narrow(2, oy, h).narrow(3, ox, w);
                if f {
                    win = win.flip([3]);
                }
                if vals(&win) == want {
                    found = Some((oy, ox, f));
                    break;
                }
            }
            let (oy, ox, f) = found.unwrap_or_else(|| panic!("image {i} is not a crop/flip of its source"));
            flips += f as usize;
            shifts.insert((oy, ox));
        }
        // 64 fair coin flips: P(all or none flipped) ≈ 1e-19.
        assert!(flips > 0 && flips < b as usize);
        assert!(shifts.len() > 5, "offsets are not spread: {shifts:?}");
    }

    #[test]
    fn randaugment_batch_is_centred_and_names_parse() {
        tch::manual_seed(5);
        let images = Tensor::randint(256, [16, 3, 8, 8], (Kind::Uint8, Device::Cpu));
        let mean = [0.25, 0.5, 0.75];
        let out = Augmentation::TINY_IMAGENET.apply(&images, &Centering::new(mean, Device::Cpu).unwrap()).unwrap();
        assert_eq!((out.size(), out.kind()), (vec![16, 3, 8, 8], Kind::Float));
        // Uncentred, every value is a byte again (the operations act on uint8 images).
        let bytes = (&out + Tensor::from_slice(&mean).to_kind(Kind::Float).view([1, 3, 1, 1])) * 255.0;
        assert!(f64::try_from((&bytes - bytes.round()).abs().max()).unwrap() < 1e-3);
        assert!(!out.allclose(&center(&images, &mean), 1e-6, 1e-6, false), "two operations left every image unchanged");
        assert_eq!("randaugment".parse::<Augmentation>().unwrap(), Augmentation::RandAugment { ops: 2, magnitude: 9 });
        assert_eq!(" Crop_Flip".parse::<Augmentation>().unwrap(), Augmentation::CIFAR);
        let e = "autoaugment".parse::<Augmentation>().unwrap_err().to_string();
        assert!(e.contains("\"autoaugment\"") && e.contains("crop_flip, randaugment, none"), "{e}");
        // Checkpoint fingerprints of existing runs print CIFAR's augmentation like this.
        assert_eq!(format!("{:?}", Augmentation::CIFAR), "CropFlip { padding: 4 }");
    }
}
