//! lipctl: the study "1-Lipschitz Layers Compared" (Prach, Brau, Buttazzo, Lampert; CVPR 2024)
//! as software. The design is in `docs/design.md`, the module layering (which module may use which,
//! checked by `tests/layering.rs`) in `docs/architecture.md`, the artifact files in
//! `docs/artifacts.md`; the binary (`main.rs`, `cli.rs`) only parses arguments and dispatches to the
//! stage functions of this library.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod certify;
pub mod aggregate;
pub mod attack;
pub mod bench;
pub mod budgets;
pub mod config;
pub mod data;
pub mod device;
pub mod doctor;
pub mod eval;
pub mod failure;
pub mod fsx;
pub mod imported;
pub mod lipschitz;
pub mod methods;
pub mod measure;
pub mod nn;
pub mod paper;
pub mod pipeline;
pub mod store;
pub mod precision;
pub mod progress;
pub mod pytorch;
pub mod recommend;
pub mod records;
pub mod search;
pub mod selftest;
pub mod stats;
pub mod units;
pub mod train;
pub mod torch_wheel;
pub mod report;
