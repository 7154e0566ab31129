//! Command-line parsing: arbitrary argument vectors must give a parse or a usage error, and
//! every accepted configuration must validate without panicking.
#![no_main]
use clap::Parser;
use gpuscout::cli::Cli;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let args = std::iter::once("gpuscout").chain(s.split('\0'));
    if let Ok(cli) = Cli::try_parse_from(args) {
        let _ = cli.global.label_config();
    }
});
