//! Shared orthogonalisation math: power iteration, Björck–Bowie (reference-protocol §1.1–1.3).
