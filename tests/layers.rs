//! Properties of every layer of the registry, through the public trait only (`Method::build`,
//! `forward_t`, `freeze`), checked against independent math (style guide, "Tests"):
//!
//! * the estimator of `lipctl::lipschitz` against the exact impulse-response SVD on unconstrained
//!   convolutions and a hand-computed 1×1 case, and the FFT oracle (reference-protocol §1.7)
//!   against the impulse response;
//! * the Lipschitz bound of each method, from the Jacobian power iteration and from the
//!   difference-quotient ascent, at random parameters and after optimizer steps that reward large
//!   outputs, in training and in evaluation mode (SOC: its measured, weaker guarantee);
//! * orthogonality where `MethodInfo::orthogonal` says so: distances preserved, impulse-response
//!   singular values all 1;
//! * `freeze()` equals `forward_t(x, false)`, and a new `freeze()` after an optimizer step follows
//!   the new parameters;
//! * gradients reach every trainable parameter and are finite.
//!
//! Run with `--nocapture` to see the measured values per method.

mod common;

use common::*;
use lipctl::lipschitz::{difference_quotient_ascent, jacobian_spectral_norm, Ascent, PowerIteration};
use lipctl::nn::registry::Role;
use lipctl::nn::{ConvSpec, LipLayer, Method};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

// Per-method tolerances (SOC's truncated series, LOT's regulariser, CPL's training warm-up) are
// `MethodInfo::tolerances`, documented next to each method's `INFO`.

/// Small shapes: every layer's matrix is at most a few hundred square (CI has 2 cores).
#[derive(Clone, Copy, Debug)]
struct Case {
    role: Role,
    spec: ConvSpec,
}

fn cases() -> Vec<Case> {
    vec![
        Case { role: Role::Block, spec: ConvSpec::square(4, 3, 6) },
        Case { role: Role::Block, spec: ConvSpec::square(4, 1, 6) },
        Case { role: Role::First, spec: ConvSpec::square(4, 1, 6) },
        Case { role: Role::Head, spec: ConvSpec::square(8, 1, 1) },
    ]
}

struct Built {
    vs: nn::VarStore,
    layer: Box<dyn LipLayer>,
}

fn build(m: Method, case: &Case, device: Device) -> Built {
    let vs = nn::VarStore::new(device);
    let layer = m
        .build(&(vs.root() / "layer"), &case.spec, case.role)
        .unwrap_or_else(|e| panic!("{m} {case:?}: build failed: {e:#}"));
    Built { vs, layer }
}

fn input(case: &Case, batch: i64, device: Device) -> Tensor {
    let s = case.spec;
    Tensor::randn([batch, s.channels_in, s.spatial, s.spatial], (Kind::Float, device))
}

/// Moves every trainable parameter away from its (often orthogonal or identity) initialisation.
fn perturb(vs: &nn::VarStore) {
    let _g = tch::no_grad_guard();
    for mut v in vs.trainable_variables() {
        let rms = v.square().mean(Kind::Float).sqrt().double_value(&[]);
        let noise = v.randn_like() * (0.3 * rms + 0.05);
        let _ = v.f_add_(&noise).expect("perturbing a parameter in place");
    }
}

/// Adam steps on `−mean(f(x)²)`: the optimizer pushes the output norm up, i.e. against the bound.
fn adversarial_steps(b: &Built, case: &Case, steps: usize, lr: f64) {
    let device = b.vs.device();
    let mut opt = nn::Adam::default().build(&b.vs, lr).expect("Adam over the layer's VarStore");
    for _ in 0..steps {
        let x = input(case, 4, device);
        let loss = -b.layer.forward_t(&x, true).square().mean(Kind::Float);
        opt.backward_step(&loss);
    }
}

fn power_opts() -> PowerIteration {
    PowerIteration { max_iters: 300, rel_tol: 1e-7 }
}

fn ascent_opts() -> Ascent {
    Ascent { steps: 150, lr: 0.05, initial_gap: 0.1 }
}

/// (Jacobian estimate, difference-quotient estimate) of one mode.
fn estimates(b: &Built, case: &Case, train: bool) -> (f64, f64) {
    let device = b.vs.device();
    let f = |x: &Tensor| b.layer.forward_t(x, train);
    let x = input(case, 4, device);
    let jac = jacobian_spectral_norm(&f, &x, &power_opts()).expect("power iteration").sigma;
    let dq = difference_quotient_ascent(&f, &input(case, 4, device), &ascent_opts()).expect("ascent");
    (jac, dq)
}

// --------------------------------------------------------------------------------------------
// The estimator and the oracles

#[test]
fn fft_oracle_equals_impulse_response_of_a_circular_conv() {
    for_each_device(|device| {
        tch::manual_seed(1);
        for (c, k, n) in [(3, 3, 5), (2, 1, 4), (4, 3, 4)] {
            let w = Tensor::randn([c, c, k, k], (Kind::Float, device));
            let exact_fft = circular_conv_singular_values(&w, n);
            let matrix = impulse_response(&|x| circular_conv(x, &w, None), c, n, device);
            let exact_ir = svdvals(&matrix);
            assert_eq!(exact_fft.len(), exact_ir.len());
            for (a, b) in exact_fft.iter().zip(&exact_ir) {
                assert!((a - b).abs() <= ESTIMATOR_TOL * exact_ir[0], "c={c} k={k} n={n}: {a} vs {b}");
            }
        }
    });
}

#[test]
fn estimators_find_the_exact_norm_of_unconstrained_convs() {
    for_each_device(|device| {
        tch::manual_seed(2);
        // Norms far from 1 in both directions: scale the kernel.
        for (c, k, n, scale) in [(3, 3, 5, 4.0), (4, 3, 4, 0.05), (2, 1, 3, 1.7)] {
            let w = Tensor::randn([c, c, k, k], (Kind::Float, device)) * scale;
            let bias = Tensor::randn([c], (Kind::Float, device));
            let f = |x: &Tensor| circular_conv(x, &w, Some(&bias));
            let exact = svdvals(&impulse_response(&f, c, n, device))[0];
            let x = Tensor::randn([4, c, n, n], (Kind::Float, device));
            let est = jacobian_spectral_norm(&f, &x, &PowerIteration { max_iters: 2000, rel_tol: 1e-9 }).unwrap();
            eprintln!("conv c={c} k={k} n={n}: exact {exact:.6}, power iteration {:.6} ({} its)", est.sigma, est.iterations);
            assert!((est.sigma - exact).abs() <= 1e-4 * exact, "power iteration {} vs exact {exact}", est.sigma);
            // Lower bound up to rounding, always.
            assert!(est.sigma <= exact * (1.0 + ESTIMATOR_TOL));
            let dq = difference_quotient_ascent(&f, &x, &Ascent { steps: 300, lr: 0.05, initial_gap: 0.5 }).unwrap();
            eprintln!("  difference quotient {dq:.6}");
            assert!(dq <= exact * (1.0 + ESTIMATOR_TOL), "quotient {dq} exceeds the exact norm {exact}");
            assert!(dq >= 0.95 * exact, "ascent found only {dq} of {exact}");
        }
    });
}

#[test]
fn estimator_on_a_hand_computed_1x1_conv() {
    for_each_device(|device| {
        // W = [[3, 4], [0, 0]]: W Wᵀ = [[25, 0], [0, 0]], so σ_max = 5 at every pixel.
        tch::manual_seed(3);
        let w = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 0.0]).view([2, 2, 1, 1]).to_device(device);
        let f = |x: &Tensor| circular_conv(x, &w, None);
        let x = Tensor::randn([2, 2, 3, 3], (Kind::Float, device));
        let est = jacobian_spectral_norm(&f, &x, &PowerIteration::default()).unwrap();
        assert!(est.converged && (est.sigma - 5.0).abs() < 5.0 * ESTIMATOR_TOL, "{est:?}");
        assert!((svdvals(&impulse_response(&f, 2, 3, device))[0] - 5.0).abs() < 1e-6);
    });
}

/// A test-local layer: circular conv whose kernel is scaled to operator norm exactly `target`
/// (by the FFT oracle, in f64). With `target = 1.001` it is 0.1% expansive: the layer checks
/// below must catch that, which shows their tolerance is not hiding real violations.
#[derive(Debug)]
struct ScaledConv {
    w: Tensor,
}

impl tch::nn::ModuleT for ScaledConv {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        circular_conv(x, &self.w, None)
    }
}

impl LipLayer for ScaledConv {
    fn freeze(&self) -> Box<dyn tch::nn::Module> {
        let w = self.w.detach().copy();
        Box::new(lipctl::nn::FrozenFn(move |x: &Tensor| circular_conv(x, &w, None)))
    }
}

#[test]
fn layer_checks_detect_a_layer_expanding_by_a_tenth_of_a_percent() {
    for_each_device(|device| {
        tch::manual_seed(3);
        let case = Case { role: Role::Block, spec: ConvSpec::square(4, 3, 6) };
        let vs = nn::VarStore::new(device);
        let raw = Tensor::randn([4, 4, 3, 3], (Kind::Float, device));
        let norm = circular_conv_singular_values(&raw, 6)[0];
        let w = vs.root().var_copy("w", &(raw * (1.001 / norm)));
        let b = Built { vs, layer: Box::new(ScaledConv { w }) };
        let (jac, dq) = estimates(&b, &case, false);
        eprintln!("1.001-expansive conv: jacobian {jac:.7}, quotient {dq:.7}");
        assert!(jac > 1.0 + LIPSCHITZ_TOL && jac <= 1.001 * (1.0 + ESTIMATOR_TOL), "jacobian {jac}");
        assert!(dq > 1.0 + LIPSCHITZ_TOL && dq <= 1.001 * (1.0 + ESTIMATOR_TOL), "quotient {dq}");
    });
}

// --------------------------------------------------------------------------------------------
// Layers

#[test]
fn lipschitz_bound_at_random_parameters_and_after_adversarial_steps() {
    let mut failures = Vec::new();
    for_each_device(|device| {
        for m in Method::ALL {
            for case in cases() {
                tch::manual_seed(10);
                let b = build(m, &case, device);
                perturb(&b.vs);
                for phase in ["random", "trained"] {
                    if phase == "trained" {
                        adversarial_steps(&b, &case, 5, 0.05);
                    }
                    for train in [true, false] {
                        let mode = if train { "train" } else { "eval" };
                        let warmup = m.info().tolerances.train_warmup_forwards;
                        if warmup > 0 && train {
                            let (jac, dq) = estimates(&b, &case, train);
                            eprintln!(
                                "{m:<8} {:?} k={} {phase:<7} {mode:<5}: jacobian {jac:.7}  quotient {dq:.7}  (before warm-up; not asserted)",
                                case.role, case.spec.kernel
                            );
                            let _g = tch::no_grad_guard();
                            for _ in 0..warmup {
                                let _ = b.layer.forward_t(&input(&case, 1, device), true);
                            }
                        }
                        let (jac, dq) = estimates(&b, &case, train);
                        eprintln!(
                            "{m:<8} {:?} k={} {phase:<7} {mode:<5}: jacobian {jac:.7}  quotient {dq:.7}",
                            case.role, case.spec.kernel
                        );
                        // The estimator must see at most the exact value (it is a lower bound);
                        // the bound holds if both estimates are below the tolerance.
                        let tol = m.info().tolerances;
                        let bound = 1.0 + if train { tol.lipschitz_train } else { tol.lipschitz_eval };
                        if jac > bound || dq > bound {
                            failures.push(format!(
                                "{m} {:?} k={} {phase} {mode}: jacobian {jac} quotient {dq} > {bound}",
                                case.role, case.spec.kernel
                            ));
                        }
                    }
                }
            }
        }
    });
    assert!(failures.is_empty(), "bound violated:\n{}", failures.join("\n"));
}

#[test]
fn estimator_finds_the_norm_of_the_standard_baseline() {
    for_each_device(|device| {
        tch::manual_seed(11);
        let case = Case { role: Role::Block, spec: ConvSpec::square(3, 3, 4) };
        let b = build(Method::Standard, &case, device);
        adversarial_steps(&b, &case, 5, 0.05);
        let f = |x: &Tensor| b.layer.forward_t(x, false);
        let exact = svdvals(&impulse_response(&f, 3, 4, device))[0];
        let est = jacobian_spectral_norm(&f, &input(&case, 4, device), &PowerIteration { max_iters: 2000, rel_tol: 1e-9 })
            .unwrap()
            .sigma;
        eprintln!("Standard after 5 adversarial steps: exact {exact:.5}, estimate {est:.5}");
        assert!(exact > 1.5, "the baseline is unconstrained; adversarial steps should push it above 1 ({exact})");
        assert!((est - exact).abs() <= 1e-4 * exact, "estimate {est} vs exact {exact}");
    });
}

#[test]
fn orthogonal_methods_preserve_distances_and_have_unit_singular_values() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for_each_device(|device| {
        for m in Method::ALL.into_iter().filter(|m| m.info().orthogonal) {
            for case in cases() {
                tch::manual_seed(12);
                let b = build(m, &case, device);
                perturb(&b.vs);
                adversarial_steps(&b, &case, 3, 0.05);
                // Training mode is orthogonal only where it computes what evaluation computes
                // (not BCOP's 3-iteration Björck head), or where the method claims a tolerance
                // for it (SOC's 5-term series).
                let tols = m.info().tolerances;
                let modes: &[bool] =
                    if same_train_and_eval(m, case.role) || tols.ortho_train.is_some() { &[false, true] } else { &[false] };
                for &train in modes {
                    let (tol, lower_checked) = match (train && !same_train_and_eval(m, case.role), case.spec.kernel) {
                        (true, _) => (tols.ortho_train.expect("modes include train only then"), true),
                        (false, 1) => (tols.ortho_1x1, true),
                        (false, _) => (tols.ortho_kxk, tols.ortho_kxk_two_sided),
                    };
                    let f = |x: &Tensor| b.layer.forward_t(x, train);
                    let x = input(&case, 4, device);
                    let y = input(&case, 4, device);
                    let ratio: Vec<f64> = sample_norms(&(f(&x) - f(&y)))
                        .iter()
                        .zip(sample_norms(&(&x - &y)))
                        .map(|(a, b)| a / b)
                        .collect();
                    // Exact matrix on the layer's own n×n input: all singular values 1.
                    let s = case.spec;
                    let sv = svdvals(&impulse_response(&f, s.channels_in, s.spatial, device));
                    let (hi, lo) = (sv[0], sv[sv.len() - 1]);
                    eprintln!("{m:<8} {:?} k={} train={train}: ‖Δf‖/‖Δx‖ {ratio:.6?}, σ ∈ [{lo:.6}, {hi:.6}]", case.role, s.kernel);
                    checked += 1;
                    let expands = ratio.iter().any(|r| *r > 1.0 + tol) || hi > 1.0 + tol;
                    let shrinks = ratio.iter().any(|r| *r < 1.0 - tol) || lo < 1.0 - tol;
                    if expands || (lower_checked && shrinks) {
                        failures.push(format!("{m} {:?} k={} train={train}: ratios {ratio:?}, σ ∈ [{lo}, {hi}]", case.role, s.kernel));
                    }
                }
            }
        }
    });
    eprintln!("{checked} orthogonality checks");
    assert!(failures.is_empty(), "not orthogonal:\n{}", failures.join("\n"));
}

#[test]
fn frozen_forward_equals_eval_forward_and_follows_optimizer_steps() {
    let mut failures = Vec::new();
    for_each_device(|device| {
        for m in Method::ALL {
            for case in cases() {
                tch::manual_seed(13);
                let b = build(m, &case, device);
                perturb(&b.vs);
                adversarial_steps(&b, &case, 2, 0.05);
                let x = input(&case, 3, device);
                let check = |label: &str, failures: &mut Vec<String>| -> Tensor {
                    let _g = tch::no_grad_guard();
                    let frozen = b.layer.freeze();
                    let cached = frozen.forward(&x);
                    let eval = b.layer.forward_t(&x, false);
                    let d_eval = rel_diff(&cached, &eval);
                    eprintln!("{m:<8} {:?} k={} {label}: |frozen − eval| {d_eval:.2e}", case.role, case.spec.kernel);
                    if d_eval > FROZEN_TOL {
                        failures.push(format!("{m} {:?} k={} {label}: frozen differs from eval by {d_eval}", case.role, case.spec.kernel));
                    }
                    cached
                };
                let before = check("before step", &mut failures);
                adversarial_steps(&b, &case, 1, 0.05);
                let after = check("after step", &mut failures);
                // The step must have changed the function, or the stale-cache check proves nothing.
                if rel_diff(&after, &before) < 100.0 * FROZEN_TOL {
                    failures.push(format!("{m} {:?}: an optimizer step did not change the frozen output", case.role));
                }
            }
        }
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Whether training and evaluation forwards are the same computation (reference-protocol §2.13:
/// no iteration counts, or equal ones, and no state updated in training), from the method's
/// `MethodInfo` (e.g. not BCOP's Björck head 3/15, CPL 1/100 power iterations, SOC 5/12 terms).
fn same_train_and_eval(m: Method, role: Role) -> bool {
    m.info().tolerances.train_is_eval.holds(role)
}

#[test]
fn train_and_eval_agree_where_they_are_the_same_computation() {
    let mut failures = Vec::new();
    for_each_device(|device| {
        for m in Method::ALL {
            for case in cases().into_iter().filter(|c| same_train_and_eval(m, c.role)) {
                tch::manual_seed(14);
                let b = build(m, &case, device);
                perturb(&b.vs);
                let x = input(&case, 3, device);
                let _g = tch::no_grad_guard();
                let d = rel_diff(&b.layer.forward_t(&x, true), &b.layer.freeze().forward(&x));
                eprintln!("{m:<8} {:?} k={}: |train − frozen| {d:.2e}", case.role, case.spec.kernel);
                if d > FROZEN_TOL {
                    failures.push(format!("{m} {:?} k={}: train differs from frozen by {d}", case.role, case.spec.kernel));
                }
            }
        }
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn gradients_reach_every_trainable_parameter_and_are_finite() {
    let mut failures = Vec::new();
    for_each_device(|device| {
        for m in Method::ALL {
            for case in cases() {
                tch::manual_seed(15);
                let b = build(m, &case, device);
                perturb(&b.vs);
                let y = b.layer.forward_t(&input(&case, 2, device), true);
                let loss = (&y * y.randn_like()).sum(Kind::Float);
                loss.backward();
                for (name, v) in b.vs.variables() {
                    if !v.requires_grad() {
                        continue;
                    }
                    let g = v.grad();
                    if !g.defined() {
                        failures.push(format!("{m} {:?}: no gradient reaches {name}", case.role));
                        continue;
                    }
                    let finite = g.isfinite().all().int64_value(&[]) == 1;
                    let nonzero = g.abs().max().double_value(&[]) > 0.0;
                    if !finite || !nonzero {
                        failures.push(format!("{m} {:?}: gradient of {name} finite={finite} nonzero={nonzero}", case.role));
                    }
                }
            }
        }
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
