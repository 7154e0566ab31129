//! `gpuscout serve` with Kubernetes label sync, wired from the library the way `serve::run`
//! wires it (Daemon + k8s::LabelSync on the report channel, sync metrics on `/metrics`), for
//! scripts/soak.sh while the `serve` command's own label-sync flags are being landed. Same
//! runtime shape as the binary (2 workers, 16 blocking threads).
//!
//! Usage: `serve_labels ROOT LISTEN KUBECONFIG NODE_NAME`

use gpuscout::cli::GlobalArgs;
use gpuscout::hostroot::HostRoot;
use gpuscout::metrics::ExporterConfig;
use gpuscout::serve::{Daemon, DaemonConfig};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: serve_labels ROOT LISTEN KUBECONFIG NODE_NAME");
        std::process::exit(2);
    }
    gpuscout::telemetry::init("plain");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(&args));
}

async fn run(args: &[String]) {
    let root = HostRoot::new(&args[1]).expect("host root");
    let global = <GlobalArgsHolder as clap::Parser>::parse_from(["x"]).global;
    let opts = global.discover_options().expect("options");
    let listener = tokio::net::TcpListener::bind(&args[2]).await.expect("bind");
    let client = gpuscout::k8s::connect(Some(std::path::Path::new(&args[3])))
        .await
        .expect("kube client");
    let config = DaemonConfig {
        discovery_interval: Duration::from_secs(30),
        exporter: ExporterConfig {
            deadline: Duration::from_secs(4),
            cache: Duration::from_millis(500),
        },
        grace: Duration::from_secs(5),
    };
    let mut daemon = Daemon::new(root, opts, config);
    let cfg = gpuscout::k8s::SyncConfig::new(args[4].clone(), gpuscout::labels::DEFAULT_PREFIX);
    let sync = gpuscout::k8s::LabelSync::new(cfg, Some(client), daemon.registry());
    let mut reports = daemon.reports();
    let mut stop = daemon.shutdown_signal();
    daemon.spawn(async move {
        // The channel starts with a placeholder: start the sync on the first real report.
        tokio::select! {
            r = reports.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut stop2 = stop.clone();
        sync.run(reports, async move {
            let _ = stop2.wait_for(|s| *s).await;
        })
        .await;
    });
    let term = gpuscout::serve::termination().expect("signals");
    daemon.serve(listener, term).await;
}

#[derive(clap::Parser)]
struct GlobalArgsHolder {
    #[command(flatten)]
    global: GlobalArgs,
}
