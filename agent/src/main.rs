//! `gpuscout` binary: parse flags, set up logging, hand over to the library.

use clap::Parser;
use gpuscout::cli::{self, Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    gpuscout::telemetry::init(&cli.global.log_format);
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("gpuscout: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Serve(args) => {
            // Two workers are plenty for a node agent; sysfs reads go to the blocking pool.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(16)
                .enable_all()
                .build()?;
            Ok(rt.block_on(gpuscout::serve::run(&cli.global, args))?)
        }
        Command::Capture(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            Ok(rt.block_on(cli::run_capture(&cli.global, args))?)
        }
        _ => Ok(cli::run_oneshot(cli)?),
    }
}
