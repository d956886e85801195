//! Shared FFT-convolution conventions (reference-protocol §1.5–1.7).
