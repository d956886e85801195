//! lipctl: the study "1-Lipschitz Layers Compared" (Prach, Brau, Buttazzo, Lampert; CVPR 2024)
//! as software. See `../shared/docs/design.md` for the architecture; the binary (`main.rs`) only
//! parses arguments and dispatches to the stage functions of this library.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod certify;
pub mod aggregate;
pub mod bench;
pub mod budgets;
pub mod config;
pub mod data;
pub mod device;
pub mod doctor;
pub mod eval;
pub mod failure;
pub mod fsx;
pub mod lipschitz;
pub mod methods;
pub mod measure;
pub mod nn;
pub mod paper;
pub mod pipeline;
pub mod store;
pub mod precision;
pub mod progress;
pub mod recommend;
pub mod records;
pub mod search;
pub mod selftest;
pub mod stats;
pub mod units;
pub mod train;
pub mod report;
