//! The `lipctl` binary: parse, dispatch, map errors to exit codes — nothing else.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod cli;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Doctor(a) => {
            if a.cuda_available {
                return Ok(if tch::Cuda::is_available() { ExitCode::SUCCESS } else { ExitCode::from(1) });
            }
            lipctl::doctor::run(&a.data, &cli.artifacts, &mut out)?;
        }
        Command::Methods(a) => {
            lipctl::methods::run(&a.sizes, &lipctl::progress::Progress::for_stderr(), &mut out)?;
        }
        Command::Bench(a) => {
            let mut cfg = lipctl::bench::BenchConfig::new(a.size, a.batch, a.device.resolve()?);
            if !a.methods.is_empty() {
                cfg.methods = a.methods;
            }
            cfg.iters = a.iters;
            cfg.warmup = a.warmup;
            cfg.input_side = a.input_side;
            cfg.classes = a.classes;
            lipctl::bench::run(&cfg, &lipctl::progress::Progress::for_stderr(), &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
