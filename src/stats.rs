//! Small statistics shared by every stage: the median used for margins and timings, and the
//! SplitMix64 generator behind every seed lipctl derives itself (data splits, synthetic images,
//! search trials, retry and epoch seeds).
//!
//! A leaf of the layering (`docs/architecture.md`): no `crate::` imports.

/// Median with linear interpolation between the two middle values (pandas' `quantile(0.5)`, as
/// R1's `margin_at_50`); NaN for an empty slice. NaNs sort last (`f64::total_cmp`).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014; Vigna's public-domain `splitmix64.c`): a 64-bit state
/// advanced by the golden-ratio increment and passed through a bijective finaliser. Tiny, exactly
/// specified and identical on every platform, so seeds never depend on std's unspecified hashers.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The golden-ratio increment.
    pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The first output of a generator seeded with `z`: a fixed, well-mixed map `u64 → u64`.
    pub fn mix(z: u64) -> u64 {
        SplitMix64::new(z).next_u64()
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits (every value is an exact multiple of 2^−53).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values of Vigna's `splitmix64.c`, and the same numbers from this Python
    /// transcription of it:
    /// ```text
    /// M = 2**64 - 1
    /// def splitmix64(x):
    ///     while True:
    ///         x = (x + 0x9E3779B97F4A7C15) & M
    ///         z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M
    ///         z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    ///         yield z ^ (z >> 31)
    /// ```
    #[test]
    fn splitmix64_matches_reference_vectors() {
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821]
        );
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(SplitMix64::mix(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn median_interpolates_and_handles_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
