//! `gpuscout` binary: parse flags, set up logging, hand over to the library.

use clap::Parser;
use gpuscout::cli::{self, Cli};
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
    Ok(cli::run_oneshot(cli)?)
}
