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
            let config = cli::serve_config(&cli.global, args)?;
            Ok(rt.block_on(gpuscout::serve::run(config))?)
        }
        Command::Capture(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            Ok(rt.block_on(cli::run_capture(&cli.global, args))?)
        }
        Command::HostPaths { audit: true } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            Ok(rt.block_on(cli::run_audit(&cli.global))?)
        }
        Command::PruneLabels(args) => {
            let prefix = cli.global.label_config()?.prefix;
            if !args.needs_api() && args.nfd_file.is_none() {
                anyhow::bail!(
                    "prune-labels: nothing to do; give --all-nodes, --node, --nodefeature-namespace or --nfd-file"
                );
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = if args.needs_api() {
                    Some(gpuscout::k8s::connect(args.kubeconfig.as_deref()).await?)
                } else {
                    None
                };
                let report =
                    gpuscout::k8s::prune::prune(client.as_ref(), &args.prune_config(&prefix)).await;
                let removed: usize = report.removed.values().map(Vec::len).sum();
                tracing::info!(
                    nodes = report.nodes,
                    nodes_changed = report.removed.len(),
                    labels_removed = removed,
                    nodefeatures_deleted = report.nodefeatures_deleted.len(),
                    nfd_file_removed = report.nfd_file_removed,
                    agents_still_running = report.pods_still_running,
                    failures = report.failures.len(),
                    "prune finished"
                );
                Ok(u8::from(!report.failures.is_empty()))
            })
        }
        _ => Ok(cli::run_oneshot(cli)?),
    }
}
