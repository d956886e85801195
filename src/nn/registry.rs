//! The registry: the only `match` over methods in the crate. Every stage, test and report
//! iterates over [`Method::ALL`]; adding a layer means one file in `src/nn/` and one arm here.

use super::{ConvSpec, LipLayer};
use serde::{Deserialize, Serialize};
use tch::nn;

/// The convolution families compared in the paper, plus the unconstrained baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Method {
    #[serde(rename = "Standard")]
    Standard,
    #[serde(rename = "AOL")]
    Aol,
    #[serde(rename = "BCOP")]
    Bcop,
    #[serde(rename = "CPL")]
    Cpl,
    #[serde(rename = "Cayley")]
    Cayley,
    #[serde(rename = "LOT")]
    Lot,
    #[serde(rename = "SLL")]
    Sll,
    #[serde(rename = "SOC")]
    Soc,
}

/// Where a convolution sits in the network. Some methods use a different layer or initialisation
/// for the first convolution and the head (reference-protocol §4.3): AOL uses orthogonal init
/// there, BCOP a Björck linear head, Cayley a Cayley linear head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    First,
    Block,
    Head,
}

/// Static properties of a method, printed by `lipctl methods` and used by the report.
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
}

impl Method {
    /// All methods in the authors' job-index order (reference-protocol §4.5).
    pub const ALL: [Method; 8] = [
        Method::Standard,
        Method::Aol,
        Method::Bcop,
        Method::Cpl,
        Method::Cayley,
        Method::Lot,
        Method::Sll,
        Method::Soc,
    ];

    /// The paper's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Method::Standard => "Standard",
            Method::Aol => "AOL",
            Method::Bcop => "BCOP",
            Method::Cpl => "CPL",
            Method::Cayley => "Cayley",
            Method::Lot => "LOT",
            Method::Sll => "SLL",
            Method::Soc => "SOC",
        }
    }

    /// Whether the network built from this method is 1-Lipschitz (everything but the baseline).
    pub fn is_lipschitz(self) -> bool {
        self != Method::Standard
    }

    pub fn info(self) -> MethodInfo {
        match self {
            Method::Standard => super::standard::INFO,
            Method::Aol => super::aol::INFO,
            Method::Bcop => super::bcop::INFO,
            Method::Cpl => super::cpl::INFO,
            Method::Cayley => super::cayley::INFO,
            Method::Lot => super::lot::INFO,
            Method::Sll => super::sll::INFO,
            Method::Soc => super::soc::INFO,
        }
    }

    /// Builds one layer of this method under `p`. Rejects impossible specs (e.g. CPL with
    /// `in != out`, even kernels) with a message naming the method and the value.
    pub fn build(self, p: &nn::Path, spec: &ConvSpec, role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
        if spec.kernel < 1 || spec.kernel % 2 == 0 {
            anyhow::bail!("{}: kernel size {} is not supported; use an odd size (1 or 3)", self, spec.kernel);
        }
        match self {
            Method::Standard => super::standard::build(p, spec, role),
            Method::Aol => super::aol::build(p, spec, role),
            Method::Bcop => super::bcop::build(p, spec, role),
            Method::Cpl => super::cpl::build(p, spec, role),
            Method::Cayley => super::cayley::build(p, spec, role),
            Method::Lot => super::lot::build(p, spec, role),
            Method::Sll => super::sll::build(p, spec, role),
            Method::Soc => super::soc::build(p, spec, role),
        }
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
}
