//! The numerics policy (src/precision.rs): libtorch's TF32 switches round-trip through the C++
//! shim, the guards restore them, and certification (its audit and its evaluation) runs with TF32
//! off whatever the caller set, then gives the caller's switches back; so do the frozen
//! network's weight transforms that certification and evaluation use.
//!
//! The switches are process-global, so this file holds a single test: no other test of this
//! binary can flip them in between. It runs on the CPU, where the switches are inert flags
//! (libtorch keeps them on every build), so CI checks the policy without a GPU.

use lipctl::certify::{self, AuditLayer, AuditOptions};
use lipctl::nn::{ConvNet, Method, ModelSize, NetSpec};
use lipctl::precision::{self, Fp32Guard, ModeGuard, Tf32, Tf32Mode};
use std::sync::{Arc, Mutex};
use tch::{nn, Device, Kind, Tensor};

const ALL_ON: Tf32 = Tf32 { cudnn: true, cublas: true };

#[test]
fn tf32_switches_round_trip_and_certify_forces_them_off_then_restores() {
    let original = precision::current().expect("the shim reads the switches");

    // Every combination is read back as set.
    for cudnn in [false, true] {
        for cublas in [false, true] {
            let t = Tf32 { cudnn, cublas };
            precision::set(t).unwrap();
            assert_eq!(precision::current().unwrap(), t);
        }
    }

    // Fp32 sections nest: off inside, the caller's switches back after the outermost.
    precision::set(ALL_ON).unwrap();
    {
        let _outer = Fp32Guard::new().unwrap();
        assert_eq!(precision::current().unwrap(), Tf32::OFF);
        {
            let _inner = Fp32Guard::new().unwrap();
            assert_eq!(precision::current().unwrap(), Tf32::OFF);
        }
        assert_eq!(precision::current().unwrap(), Tf32::OFF, "an inner section restored too early");
    }
    assert_eq!(precision::current().unwrap(), ALL_ON);

    // A training mode holds its switches and gives the previous ones back.
    {
        let _mode = ModeGuard::new(Tf32Mode::Off).unwrap();
        assert_eq!(precision::current().unwrap(), Tf32::OFF);
    }
    {
        precision::set(Tf32::OFF).unwrap();
        let _mode = ModeGuard::new(Tf32Mode::On).unwrap();
        assert_eq!(precision::current().unwrap(), Tf32 { cudnn: true, cublas: false });
    }
    assert_eq!(precision::current().unwrap(), Tf32::OFF);

    // A training mode entered inside an fp32 section (it writes its switches regardless), then
    // another fp32 section inside that mode: off again, the mode's switches back when it closes,
    // and the outer section's saved switches back at the end.
    precision::set(ALL_ON).unwrap();
    {
        let _outer = Fp32Guard::new().unwrap();
        let _mode = ModeGuard::new(Tf32Mode::On).unwrap();
        assert_eq!(precision::current().unwrap(), Tf32Mode::On.switches());
        {
            let _inner = Fp32Guard::new().unwrap();
            assert_eq!(precision::current().unwrap(), Tf32::OFF, "an fp32 section inside a training mode kept TF32");
        }
        assert_eq!(precision::current().unwrap(), Tf32Mode::On.switches(), "the mode's switches were not given back");
    }
    assert_eq!(precision::current().unwrap(), ALL_ON);

    // The audit: every layer forward sees TF32 off, and the caller's switches come back.
    precision::set(ALL_ON).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Tf32>::new()));
    let record = {
        let seen = Arc::clone(&seen);
        move |x: &Tensor| {
            seen.lock().unwrap().push(precision::current().unwrap());
            x * 0.5
        }
    };
    let layer = AuditLayer { name: "half".into(), input_shape: vec![1, 2, 2, 2], forward: Box::new(record.clone()), structure: lipctl::nn::Structure::Opaque };
    let audit = certify::audit(&[layer], Device::Cpu, &AuditOptions { max_iterations: 5, ..Default::default() }).unwrap();
    assert!((audit.layers[0].sigma - 0.5).abs() < 1e-6, "{:?}", audit.layers);
    assert_eq!(precision::current().unwrap(), ALL_ON, "the audit did not restore the switches");
    {
        let mut seen = seen.lock().unwrap();
        assert!(!seen.is_empty() && seen.iter().all(|t| *t == Tf32::OFF), "an audit forward ran with TF32 allowed: {seen:?}");
        seen.clear();
    }

    // Certification of a model: its forward sees TF32 off, the certificate records it, and the
    // caller's switches come back.
    let model = nn::func(move |x: &Tensor| record(&x.flatten(1, -1)));
    let images = Tensor::from_slice(&[255u8, 0, 0, 0, 255, 0]).view([2, 3, 1, 1]);
    let labels = Tensor::from_slice(&[0i64, 1]);
    let cert = certify::certify(&model, &images, &labels, [0.0; 3], 2, Device::Cpu, audit, true, None).unwrap();
    assert_eq!(cert.accuracy, 1.0);
    assert_eq!((cert.precision.tf32_cudnn, cert.precision.tf32_cublas, cert.precision.effective.as_str()), (false, false, "fp32"));
    assert_eq!(precision::current().unwrap(), ALL_ON, "certify did not restore the switches");
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty() && seen.iter().all(|t| *t == Tf32::OFF), "a certify forward ran with TF32 allowed: {seen:?}");
    drop(seen);

    // The certify stage's own path (build, load, audit, certify, write) on a real ConvNet.
    let dir = tempfile::tempdir().unwrap();
    let spec = NetSpec::new(Method::Aol, ModelSize::XS, 8, 2);
    let vs = nn::VarStore::new(Device::Cpu);
    ConvNet::new(&vs.root(), spec).unwrap();
    let model_file = dir.path().join("model.safetensors");
    vs.save(&model_file).unwrap();
    let images = Tensor::randint(256, [4, 3, 8, 8], (Kind::Uint8, Device::Cpu));
    let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
    let opts = AuditOptions { max_iterations: 5, ..Default::default() };
    let cert = certify::certify_model_file(spec, &model_file, &images, &labels, [0.5; 3], 4, Device::Cpu, dir.path(), &opts, None).unwrap();
    assert_eq!((cert.precision.tf32_cudnn, cert.precision.tf32_cublas), (false, false));
    assert_eq!(precision::current().unwrap(), ALL_ON);

    // The weight transforms a certificate and the per-epoch evaluation rest on (the frozen
    // network's rescalings and orthogonalisations: convolutions, which cuDNN would run in TF32)
    // are computed with TF32 off under a training mode that allows it, as the model is loaded
    // for certification and as a network is frozen after a training epoch; the mode comes back.
    {
        let _mode = ModeGuard::new(Tf32Mode::On).unwrap();
        let loaded = certify::load_model(spec, &model_file, Device::Cpu, &opts).unwrap();
        assert_eq!(loaded.frozen.transforms_tf32(), Tf32::OFF, "load_model froze the network with TF32 allowed");
        let cpl = ConvNet::new(&nn::VarStore::new(Device::Cpu).root(), NetSpec::new(Method::Cpl, ModelSize::XS, 8, 2)).unwrap();
        assert_eq!(cpl.freeze().unwrap().transforms_tf32(), Tf32::OFF, "freeze computed the transforms with TF32 allowed");
        assert_eq!(precision::current().unwrap(), Tf32Mode::On.switches(), "freezing did not give the mode's switches back");
    }
    assert_eq!(precision::current().unwrap(), ALL_ON);

    precision::set(original).unwrap();
}
