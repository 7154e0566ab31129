//! One scrape as the load examples (`examples/scrape_load.rs`, `examples/soak_load.rs`) send it:
//! a fresh TCP connection, `GET PATH`, read to the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Latency of one request; an error when it cannot connect, times out (10 s), or gets a status
/// other than 200 or an empty body.
pub fn get(addr: SocketAddr, path: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(16 * 1024);
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let took = start.elapsed();
    let ok_status = buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200");
    let body_len = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| buf.len() - p - 4);
    if ok_status && body_len > 0 {
        Ok(took)
    } else {
        Err(format!("bad response ({} bytes)", buf.len()))
    }
}
