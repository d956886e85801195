//! `cargo bench --bench layers`: the `lipctl bench` measurement (training step and cached
//! inference per method) at tiny iteration counts on the CPU, as a smoke test of the timing path.
//! For real numbers use `lipctl bench --size XS --batch 64` (see `src/bench.rs`).

use lipctl::bench::{run, BenchConfig};
use lipctl::nn::ModelSize;
use lipctl::progress::Progress;

fn main() -> anyhow::Result<()> {
    // As the binary does, before libtorch creates its threads.
    lipctl::device::configure_host_process();
    let mut cfg = BenchConfig::new(ModelSize::XS, 16, tch::Device::Cpu);
    cfg.iters = 3;
    cfg.warmup = 1;
    run(&cfg, &Progress::lines(), &mut std::io::stdout().lock())?;
    Ok(())
}
