//! The `lipctl` binary: parse, dispatch, map errors to exit codes — nothing else.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod cli;

use clap::Parser;
use cli::{Cli, Command};
use std::io::Write;
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
        Command::Prepare(a) => {
            let progress = lipctl::progress::Progress::for_stderr();
            let store = lipctl::pipeline::store::Store::open(&cli.artifacts)?.with_progress(progress);
            let req = lipctl::data::PrepareRequest {
                dataset: a.dataset,
                source: a.source,
                name: a.name,
                data_dir: a.data,
                download: !a.no_download,
                synthetic: lipctl::data::SyntheticSpec::default(),
            };
            let summary = lipctl::data::prepare(&req, &store, &progress)?;
            writeln!(out, "{summary}")?;
        }
        Command::Aggregate(a) => {
            let art = lipctl::aggregate::run(&cli.artifacts, &a.paper)?;
            writeln!(out, "{}", art.dir.display())?;
        }
        Command::Report(a) => {
            let art = lipctl::aggregate::run(&cli.artifacts, &a.paper)?;
            let dest = a.out.unwrap_or_else(|| cli.artifacts.join("report"));
            let prov = lipctl::report::Provenance::current(a.pipeline.as_deref());
            let done = lipctl::report::render(&art.dir, &dest, &prov)?;
            writeln!(out, "{}\n{}", done.html.display(), done.markdown.display())?;
        }
        Command::Status(_) => {
            let store = lipctl::pipeline::store::Store::open(&cli.artifacts)?;
            lipctl::pipeline::store::print_status(&store, &mut out)?;
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
