//! The registry: the only place that lists the methods. Every stage, test and report iterates
//! over [`Method::ALL`] and reads a method's properties from its [`MethodInfo`].
//!
//! **Adding a method** is its own file `src/nn/<module>.rs` (with `pub const INFO: MethodInfo` and
//! `pub fn build(p, spec, role)`) and one line in [`method_table!`]. From that line the macros
//! below generate the `pub mod` declaration (in `nn/mod.rs`), the [`Method`] variant with its serde
//! name, [`Method::ALL`], [`Method::name`], [`Method::info`] and [`Method::build`]. Colours, the
//! authors' reference timings, test tolerances and whether the paper has data for the method are
//! fields of `MethodInfo`, so no other file has a list of methods to extend.
//!
//! New lines go at the end: the order is the authors' job-index order (reference-protocol §4.5)
//! followed by methods added since, and the serde names are artifact keys (never rename one).

use super::{ConvSpec, LipLayer};
use serde::{Deserialize, Serialize};
use tch::nn;

/// The method table: `Variant = "paper spelling" in module,` — one line per method, in
/// registry order. Expanded by `$then!` (a macro taking the same list).
macro_rules! method_table {
    ($then:ident) => {
        $then! {
            Standard = "Standard" in standard,
            Aol = "AOL" in aol,
            Bcop = "BCOP" in bcop,
            Cpl = "CPL" in cpl,
            Cayley = "Cayley" in cayley,
            Lot = "LOT" in lot,
            Sll = "SLL" in sll,
            Soc = "SOC" in soc,
            Sn = "SN" in sn,
            Bro = "BRO" in bro,
            Aoc = "AOC" in aoc,
        }
    };
}

/// `pub mod <module>;` for every line of the table (expanded in `nn/mod.rs`).
macro_rules! declare_method_modules {
    ($($variant:ident = $name:literal in $module:ident,)*) => {
        $(pub mod $module;)*
    };
}

/// The [`Method`] enum and its table-driven functions (expanded below).
macro_rules! define_methods {
    ($($variant:ident = $name:literal in $module:ident,)*) => {
        /// The convolution families: the unconstrained baseline, the seven compared in the paper,
        /// and the ones added since (see [`MethodInfo::in_paper`]). Serialises as the paper's
        /// spelling (`"Standard"`, `"AOL"`, …), which is part of every artifact key.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Method {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Method {
            /// All methods in registry order (the authors' job-index order, reference-protocol
            /// §4.5, then the methods added since).
            pub const ALL: [Method; [$($name),*].len()] = [$(Method::$variant),*];

            /// The paper's spelling (the authors' spelling for methods added since).
            pub fn name(self) -> &'static str {
                match self {
                    $(Method::$variant => $name,)*
                }
            }

            /// The method's static properties (its module's `INFO`).
            pub fn info(self) -> MethodInfo {
                match self {
                    $(Method::$variant => super::$module::INFO,)*
                }
            }

            fn build_layer(self, p: &nn::Path, spec: &ConvSpec, role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
                match self {
                    $(Method::$variant => super::$module::build(p, spec, role),)*
                }
            }
        }
    };
}

method_table!(define_methods);

/// Where a convolution sits in the network. Some methods use a different layer or initialisation
/// for the first convolution and the head (reference-protocol §4.3): AOL uses orthogonal init
/// there, BCOP a Björck linear head, Cayley a Cayley linear head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    First,
    Block,
    Head,
}

/// Static properties of a method, printed by `lipctl methods` and read by the report, the bench,
/// the recommender and the tests (so none of them keeps its own list of methods).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MethodInfo {
    /// Whether the layer is orthogonal (norm-preserving) as specified, not merely 1-Lipschitz.
    pub orthogonal: bool,
    /// Whether the layer works in the Fourier domain (memory grows with the input area).
    pub fft_based: bool,
    /// What `freeze` precomputes for inference.
    pub cached_at_inference: &'static str,
    /// The guarantee the tests check, in words.
    pub guarantee: &'static str,
    /// Whether the paper (Prach et al., CVPR 2024) has results for the method (the seven compared
    /// layers and the Standard baseline). `false`: no Table 8 budget (paper-mode budgets give
    /// [`NoEpochCount`](crate::budgets::BudgetStatus)), no paper knowledge for the recommender,
    /// marked "not in the paper" by the report.
    pub in_paper: bool,
    /// The method's colour in every plot, `(r, g, b)`.
    pub color: (u8, u8, u8),
    /// The authors' PyTorch code, seconds per training step of ConvNet XS and S at batch 64 on
    /// the 2-core Intel Xeon of this project's earlier machines (`scripts/authors_bench.py`, 2
    /// threads): the median of three sittings of `scripts/speed.sh` on 2026-12-02 (Cayley XS: an
    /// earlier sitting; their Cayley since livelocks in oneMKL's complex LU at 2 threads, so S has
    /// no time). The machine's speed drifts by ±20 % over hours, so a ratio against these is a
    /// guide; `scripts/speed.sh` measures both sides in one sitting. `None`: not measured (no
    /// speed-up printed by `lipctl bench`).
    pub authors_cpu_b64_train_s: AuthorsTimes,
    /// What the tests accept for this method (`tests/layers.rs`, `tests/networks.rs`).
    pub tolerances: Tolerances,
}

/// Seconds per training step of the authors' code (see [`MethodInfo::authors_cpu_b64_train_s`]).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct AuthorsTimes {
    pub xs: Option<f64>,
    pub s: Option<f64>,
}

impl AuthorsTimes {
    /// No reference time (methods the authors' code does not have).
    pub const NONE: AuthorsTimes = AuthorsTimes { xs: None, s: None };
}

/// Whether a layer's training forward computes what its evaluation forward computes (no
/// iteration counts that differ, no state updated in training; reference-protocol §2.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TrainIsEval {
    Always,
    /// Except the linear head (BCOP's Björck head: 3 training, 15 evaluation iterations).
    ExceptHead,
    Never,
}

impl TrainIsEval {
    pub fn holds(self, role: Role) -> bool {
        match self {
            TrainIsEval::Always => true,
            TrainIsEval::ExceptHead => role != Role::Head,
            TrainIsEval::Never => false,
        }
    }
}

/// The tolerances the layer and network tests hold a method to. The defaults
/// ([`Tolerances::STRICT`]) are f32 rounding: 1e-4 on every bound (design §6). A method with a
/// weaker, measured guarantee states its own values, and why, next to its `INFO`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tolerances {
    /// One layer, training forward: `σ_max ≤ 1 + lipschitz_train` (∞: not Lipschitz-bounded).
    pub lipschitz_train: f64,
    /// One layer, evaluation forward.
    pub lipschitz_eval: f64,
    /// A whole ConvNet (27 layers), frozen forward.
    pub lipschitz_network: f64,
    /// Training forwards at fixed parameters before the training-mode bound holds (CPL's single
    /// power iteration per step needs its stored vector to converge first).
    pub train_warmup_forwards: usize,
    pub train_is_eval: TrainIsEval,
    /// Orthogonal methods: `|σ − 1|` of a 1×1 layer, and of a k×k layer; with
    /// `ortho_kxk_two_sided = false` only `σ_max ≤ 1 + ortho_kxk` is required of k×k layers.
    pub ortho_1x1: f64,
    pub ortho_kxk: f64,
    pub ortho_kxk_two_sided: bool,
    /// Orthogonality of the training forward where it differs from evaluation; `None`: not
    /// claimed (only the evaluation forward is orthogonal).
    pub ortho_train: Option<f64>,
    /// The CPU self-test (`lipctl doctor --selftest`): largest audited layer value above 1, at
    /// weights moved 10 % off their initialisation.
    pub selftest_audit: f64,
    /// The self-test's float32-vs-float64 relative gradient difference.
    pub selftest_gradient: f64,
}

impl Tolerances {
    /// f32 rounding on every bound; training equals evaluation.
    pub const STRICT: Tolerances = Tolerances {
        lipschitz_train: 1e-4,
        lipschitz_eval: 1e-4,
        lipschitz_network: 1e-4,
        train_warmup_forwards: 0,
        train_is_eval: TrainIsEval::Always,
        ortho_1x1: 1e-4,
        ortho_kxk: 1e-4,
        ortho_kxk_two_sided: true,
        ortho_train: None,
        selftest_audit: 1e-4,
        selftest_gradient: 1e-3,
    };
}

impl Method {
    /// Whether the network built from this method is 1-Lipschitz (everything but the baseline).
    pub fn is_lipschitz(self) -> bool {
        self != Method::Standard
    }

    /// Methods the paper has results for, in registry order.
    pub fn in_paper() -> impl Iterator<Item = Method> {
        Method::ALL.into_iter().filter(|m| m.info().in_paper)
    }

    /// Builds one layer of this method under `p`. Rejects impossible specs (e.g. CPL with
    /// `in != out`, even kernels) with a message naming the method and the value.
    pub fn build(self, p: &nn::Path, spec: &ConvSpec, role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
        if spec.kernel < 1 || spec.kernel % 2 == 0 {
            anyhow::bail!("{}: kernel size {} is not supported; use an odd size (1 or 3)", self, spec.kernel);
        }
        self.build_layer(p, spec, role)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = anyhow::Error;

    /// Case-insensitive paper spelling; `StandardConv2d` and `conv` are accepted for the baseline.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let alias = match lower.as_str() {
            "standardconv2d" | "conv" | "std" => "standard",
            other => other,
        };
        Method::ALL
            .into_iter()
            .find(|m| m.name().to_ascii_lowercase() == alias)
            .ok_or_else(|| {
                let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
                anyhow::anyhow!("unknown method {s:?}; expected one of {}", names.join(", "))
            })
    }
}

impl clap::ValueEnum for Method {
    fn value_variants<'a>() -> &'a [Self] {
        &Method::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }

    fn from_str(input: &str, _ignore_case: bool) -> Result<Self, String> {
        input.parse().map_err(|e: anyhow::Error| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(m.name().to_lowercase().parse::<Method>().unwrap(), m);
        }
        let err = "Cayly".parse::<Method>().unwrap_err().to_string();
        assert!(err.contains("Cayly") && err.contains("Cayley") && err.contains("SOC"), "{err}");
    }

    #[test]
    fn serde_names_are_the_artifact_keys_of_the_paper_methods() {
        // Artifact keys contain these exact strings (a cached run depends on them).
        let expected = ["Standard", "AOL", "BCOP", "CPL", "Cayley", "LOT", "SLL", "SOC"];
        for (m, name) in Method::ALL.iter().zip(expected) {
            assert_eq!(serde_json::to_string(m).unwrap(), format!("\"{name}\""));
            assert!(m.info().in_paper, "{m}");
        }
        assert!(Method::ALL.len() >= expected.len());
    }

    #[test]
    fn colours_are_distinct_and_paper_methods_have_xs_reference_times() {
        for (i, a) in Method::ALL.iter().enumerate() {
            for b in &Method::ALL[i + 1..] {
                assert_ne!(a.info().color, b.info().color, "{a} and {b} share a colour");
            }
            if a.info().in_paper {
                assert!(a.info().authors_cpu_b64_train_s.xs.is_some(), "{a}: no authors' XS time");
            }
        }
    }
}
