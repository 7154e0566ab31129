//! The Kubernetes API stand-in of the tests (tests/support/src/standin) as a process, for
//! scripts/soak.sh and scripts/bench.sh: serves on 127.0.0.1:<free port>, registers one Node,
//! writes a kubeconfig pointing at itself, and every `--stats-every` seconds appends one line
//! `unix_s requests writes successful_writes open_watches` to `--stats` (then forgets its
//! request log, so a long run does not grow it without bound).
//!
//! Usage: `standin --node NAME --kubeconfig PATH [--stats PATH] [--stats-every S]`

#![allow(clippy::disallowed_methods, dead_code)]

use gpuscout_test_support::standin;

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(node), Some(kubeconfig)) = (arg(&args, "--node"), arg(&args, "--kubeconfig")) else {
        eprintln!("usage: standin --node NAME --kubeconfig PATH [--stats PATH] [--stats-every S]");
        std::process::exit(2);
    };
    let stats = arg(&args, "--stats");
    let every: u64 = arg(&args, "--stats-every")
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let api = standin::StandIn::new();
    api.add_node(&node, &[("kubernetes.io/hostname", node.as_str())]);
    let addr = api.serve_tcp().await;
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://{addr}\nusers:\n- name: agent\n  user:\n    token: soak-token\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: agent\ncurrent-context: standin\n"
        ),
    )
    .expect("write kubeconfig");
    println!("standin listening on {addr}");
    let (mut requests, mut writes, mut ok_writes) = (0usize, 0usize, 0usize);
    loop {
        tokio::time::sleep(Duration::from_secs(every)).await;
        let log = api.log();
        api.clear_log();
        requests += log.len();
        writes += log.iter().filter(|l| l.is_write()).count();
        ok_writes += log
            .iter()
            .filter(|l| l.is_write() && (200..300).contains(&l.status))
            .count();
        if let Some(p) = &stats {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let line = format!(
                "{now} {requests} {writes} {ok_writes} {}\n",
                api.open_watches()
            );
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
}
