//! Load client for scripts/bench-metrics.sh: N concurrent clients, each sending GET requests
//! (one TCP connection per request, like a fresh scrape) to one URL, for a fixed number of
//! requests. Prints one line: `clients=N requests=R failed=F p50_ms=.. p99_ms=.. max_ms=..`.
//! A request fails when it cannot connect, times out (10 s), or gets a status other than 200
//! or an empty body. std only, so it measures the servers, not a client runtime.
//!
//! Usage: `scrape_load HOST:PORT PATH CLIENTS REQUESTS_PER_CLIENT`

use gpuscout_test_support::scrape;

use scrape::get as one;
use std::net::SocketAddr;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: scrape_load HOST:PORT PATH CLIENTS REQUESTS_PER_CLIENT");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("HOST:PORT");
    let path = args[2].clone();
    let clients: usize = args[3].parse().expect("CLIENTS");
    let per: usize = args[4].parse().expect("REQUESTS_PER_CLIENT");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut lat = Vec::with_capacity(per);
                let mut failed = 0usize;
                for _ in 0..per {
                    match one(addr, &path) {
                        Ok(d) => lat.push(d),
                        Err(e) => {
                            failed += 1;
                            eprintln!("request failed: {e}");
                        }
                    }
                }
                (lat, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for h in handles {
        let (l, f) = h.join().expect("client thread");
        all.extend(l);
        failed += f;
    }
    all.sort();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((p * all.len() as f64).ceil() as usize).clamp(1, all.len()) - 1;
        all[i].as_secs_f64() * 1000.0
    };
    println!(
        "clients={clients} requests={} failed={failed} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        clients * per,
        pct(0.50),
        pct(0.99),
        all.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    );
}
