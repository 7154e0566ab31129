//! Scale simulation (not a unit test; `scripts/sim-k8s.sh` runs it): N in-process agents
//! (default 5,000, env `GPUSCOUT_SIM_AGENTS`), each with its own kube client over the
//! in-memory transport, against one API stand-in, in paused tokio time. It measures requests
//! and writes at start-up, the peak request rate (1-second buckets of virtual time), writes
//! over an hour with no change (target: zero), and the recovery after a 10-minute outage in
//! which the API server restarted (watches cut, watch history lost, state kept).

use crate::standin::{Action, Fault, Logged, Match, Restart, StandIn};
use gpuscout::k8s::{LabelSync, SyncConfig, SyncMetrics};
use gpuscout::model::{Host, Report};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

struct Phase {
    name: &'static str,
    secs: u64,
    requests: usize,
    lists: usize,
    watches: usize,
    writes: usize,
    errors: usize,
    peak_rps: usize,
}

fn phase(name: &'static str, log: &[Logged], from: Instant, secs: u64) -> Phase {
    let to = from + Duration::from_secs(secs);
    let in_range: Vec<&Logged> = log.iter().filter(|l| l.at >= from && l.at < to).collect();
    let mut buckets: BTreeMap<u64, usize> = BTreeMap::new();
    for l in &in_range {
        *buckets.entry((l.at - from).as_secs()).or_default() += 1;
    }
    Phase {
        name,
        secs,
        requests: in_range.len(),
        lists: in_range
            .iter()
            .filter(|l| l.method == "GET" && !l.watch)
            .count(),
        watches: in_range.iter().filter(|l| l.watch).count(),
        writes: in_range
            .iter()
            .filter(|l| l.is_write() && (200..300).contains(&l.status))
            .count(),
        errors: in_range.iter().filter(|l| l.status >= 400).count(),
        peak_rps: buckets.values().copied().max().unwrap_or(0),
    }
}

#[test]
#[ignore = "scale simulation, minutes of CPU: run scripts/sim-k8s.sh"]
fn k8s_scale_simulation() {
    let n: usize = std::env::var("GPUSCOUT_SIM_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let wall = std::time::Instant::now();
        let api = StandIn::new();
        for i in 0..n {
            api.add_node(&format!("node-{i:05}"), &[("kubernetes.io/os", "linux")]);
        }
        let labels: BTreeMap<String, String> = [
            ("gpuscout.io/present", "true"),
            ("gpuscout.io/nvidia.count", "8"),
            ("gpuscout.io/nvidia.ready", "true"),
            ("gpuscout.io/nvidia.product", "NVIDIA-H100-80GB-HBM3"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let report = Arc::new(Report::new(
            Host::default(),
            Vec::new(),
            labels.clone(),
        ));
        let (_tx, rx) = watch::channel(report);
        let metrics = SyncMetrics::new();
        let mut stops = Vec::new();
        let mut tasks = Vec::new();
        let t0 = Instant::now();
        for i in 0..n {
            let mut cfg = SyncConfig::new(format!("node-{i:05}"), "gpuscout.io");
            cfg.seed = Some(i as u64 + 1);
            let sync = LabelSync::with_metrics(cfg, Some(api.client()), metrics.clone());
            let (stop, stop_rx) = oneshot::channel::<()>();
            stops.push(stop);
            tasks.push(tokio::spawn(sync.run(rx.clone(), async move {
                let _ = stop_rx.await;
            })));
        }
        let mut phases = Vec::new();
        // 1. Start-up of every agent at once (e.g. a cluster-wide restart).
        tokio::time::sleep(Duration::from_secs(120)).await;
        let labelled = (0..n)
            .filter(|i| {
                let l = api.labels(&format!("node-{i:05}"));
                labels.iter().all(|(k, v)| l.get(k) == Some(v))
            })
            .count();
        phases.push(phase("start-up (all agents start at t=0)", &api.log(), t0, 120));
        // 2. An hour with no change.
        let t1 = Instant::now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        phases.push(phase("one hour, nothing changes", &api.log(), t1, 3600));
        api.clear_log();
        // 3. The API server restarts and fails every request for 10 minutes: every watch is
        // cut and its watch cache is rebuilt (etcd keeps the state), as a real restart does.
        let t2 = Instant::now();
        api.fail(Fault { when: Match::any(), what: Action::Status(503, None), times: None });
        api.restart(Restart::KeepState);
        tokio::time::sleep(Duration::from_secs(600)).await;
        phases.push(phase("10-minute outage (restart: all 503, watches cut, watch cache rebuilt)", &api.log(), t2, 600));
        api.clear_faults();
        let t3 = Instant::now();
        tokio::time::sleep(Duration::from_secs(900)).await;
        phases.push(phase("15 minutes after recovery", &api.log(), t3, 900));
        let watching = api.open_watches();
        for s in stops {
            let _ = s.send(());
        }
        for t in tasks {
            let _ = t.await;
        }

        println!("\n## gpuscout k8s scale simulation: {n} agents, stand-in API, virtual time\n");
        println!("Nodes labelled after start-up: {labelled}/{n}; watches open after recovery: {watching}/{n}.");
        println!("Label sync results over the run: applied={}, unchanged={}, server_error={}, other errors={}.",
            metrics.sync_count("applied"), metrics.sync_count("unchanged"),
            metrics.sync_count("server_error"), metrics.sync_count("error"));
        println!("Wall-clock time of the simulation: {:.1} s.\n", wall.elapsed().as_secs_f64());
        println!("| phase | virtual s | requests | LIST | WATCH | writes (2xx) | errors | peak req/s |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for p in &phases {
            println!("| {} | {} | {} | {} | {} | {} | {} | {} |",
                p.name, p.secs, p.requests, p.lists, p.watches, p.writes, p.errors, p.peak_rps);
        }
        assert_eq!(labelled, n, "every Node labelled");
        assert_eq!(phases[1].writes, 0, "no writes in an hour without change");
        assert_eq!(phases[3].writes, 0, "recovery with unchanged labels writes nothing");
    });
}
