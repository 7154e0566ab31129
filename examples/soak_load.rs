//! Load and sampling client of scripts/soak.sh: sends GET requests at a fixed rate (open loop:
//! one thread per request, so a slow answer does not delay the next), and at the end of every
//! window appends one CSV row: elapsed seconds, the target's VmRSS and VmHWM (KiB, from
//! /proc/PID/status), its open file descriptors (entries of /proc/PID/fd), requests sent and
//! failed in the window, and latency p50/p99/max (ms). A request fails when it cannot connect,
//! times out (10 s), or gets a status other than 200 or an empty body. std only.
//!
//! Usage: `soak_load HOST:PORT PATH RATE_PER_S DURATION_S WINDOW_S PID CSV`

#![allow(clippy::disallowed_methods)]

use gpuscout_test_support::scrape;

use scrape::get as one;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 8 {
        eprintln!("usage: soak_load HOST:PORT PATH RATE_PER_S DURATION_S WINDOW_S PID CSV");
        std::process::exit(2);
    }
    let addr: SocketAddr = a[1].parse().expect("HOST:PORT");
    let path = a[2].clone();
    let rate: f64 = a[3].parse().expect("RATE");
    let duration = Duration::from_secs(a[4].parse().expect("DURATION_S"));
    let window = Duration::from_secs(a[5].parse().expect("WINDOW_S"));
    let pid: u32 = a[6].parse().expect("PID");
    let mut csv = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a[7])
        .expect("open CSV");
    writeln!(
        csv,
        "t_s,rss_kib,hwm_kib,fds,requests,failed,p50_ms,p99_ms,max_ms"
    )
    .expect("write CSV");
    let row =
        |csv: &mut std::fs::File, t: f64, lat: &mut Vec<Duration>, sent: usize, failed: usize| {
            lat.sort();
            let cell = |v: Option<String>| v.unwrap_or_default();
            let line = format!(
                "{t:.0},{},{},{},{sent},{failed},{:.3},{:.3},{:.3}",
                cell(status_kib(pid, "VmRSS:").map(|v| v.to_string())),
                cell(status_kib(pid, "VmHWM:").map(|v| v.to_string())),
                cell(fds(pid).map(|v| v.to_string())),
                pct(lat, 0.5),
                pct(lat, 0.99),
                lat.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            );
            println!("{line}");
            let _ = writeln!(csv, "{line}");
            lat.clear();
        };
    // Baseline row before any load.
    row(&mut csv, 0.0, &mut Vec::new(), 0, 0);
    let (tx, rx) = mpsc::channel::<Result<Duration, String>>();
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut next = start;
    let mut window_end = start + window;
    let (mut lat, mut sent, mut failed) = (Vec::new(), 0usize, 0usize);
    while start.elapsed() < duration {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += gap;
        let (tx, path) = (tx.clone(), path.clone());
        std::thread::spawn(move || {
            let _ = tx.send(one(addr, &path));
        });
        sent += 1;
        while let Ok(r) = rx.try_recv() {
            match r {
                Ok(d) => lat.push(d),
                Err(e) => {
                    failed += 1;
                    eprintln!("request failed: {e}");
                }
            }
        }
        if Instant::now() >= window_end {
            row(
                &mut csv,
                start.elapsed().as_secs_f64(),
                &mut lat,
                sent,
                failed,
            );
            sent = 0;
            failed = 0;
            window_end += window;
        }
    }
    drop(tx);
    for r in rx {
        match r {
            Ok(d) => lat.push(d),
            Err(_) => failed += 1,
        }
    }
    if sent > 0 {
        row(
            &mut csv,
            start.elapsed().as_secs_f64(),
            &mut lat,
            sent,
            failed,
        );
    }
}
