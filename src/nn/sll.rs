//! PLACEHOLDER — being implemented (see reference-protocol §2). Replaced before this lands.

use super::registry::Role;
use super::{ConvSpec, LipLayer, MethodInfo};
use tch::nn;

pub const INFO: MethodInfo = MethodInfo {
    orthogonal: false,
    fft_based: false,
    cached_at_inference: "nothing",
    guarantee: "not implemented yet",
};

pub fn build(_p: &nn::Path, _spec: &ConvSpec, _role: Role) -> anyhow::Result<Box<dyn LipLayer>> {
    anyhow::bail!("sll is not implemented yet")
}
