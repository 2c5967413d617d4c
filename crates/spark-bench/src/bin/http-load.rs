//! `http-load`: N clients, each on its own keep-alive HTTP/1.1 connection, GET one URL path as fast as they can
//! for a while; prints one JSON line (ops/s, p50, p99 in µs). Used by `scripts/bench-http` to compare sparkd's
//! HTTP front with nginx serving the same bytes. No HTTP client crate: a request is one write, a response is
//! a header block and Content-Length bytes, which is all both servers send here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// host:port
    #[arg(long)]
    addr: String,
    /// The path to GET, e.g. /ccache/ab/cd
    #[arg(long)]
    path: String,
    /// Extra request header, e.g. "Authorization: Bearer …" (repeatable)
    #[arg(long)]
    header: Vec<String>,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of measurement (after one second of warm-up)
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// One response: checks the status and consumes exactly its body.
fn read_response(r: &mut BufReader<TcpStream>, line: &mut String) -> anyhow::Result<usize> {
    line.clear();
    r.read_line(line)?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("unexpected status line {line:?}");
    }
    let mut len = None;
    loop {
        line.clear();
        r.read_line(line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = Some(v.trim().parse::<usize>()?);
        }
    }
    let len = len.context("a response without Content-Length")?;
    let mut left = len;
    let mut sink = [0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(sink.len());
        let n = r.read(&mut sink[..want])?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        left -= n;
    }
    Ok(len)
}

fn client(args: &Args, start: Instant, warm: Duration, end: Duration) -> anyhow::Result<Vec<u32>> {
    let s = TcpStream::connect(&args.addr).with_context(|| format!("connect {}", args.addr))?;
    s.set_nodelay(true)?;
    let mut req = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", args.path, args.addr);
    for h in &args.header {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut w = s.try_clone()?;
    let mut r = BufReader::with_capacity(256 * 1024, s);
    let mut line = String::new();
    let mut lat = Vec::with_capacity(1 << 16);
    loop {
        let t = Instant::now();
        let since = t - start;
        if since >= end {
            return Ok(lat);
        }
        w.write_all(req.as_bytes())?;
        read_response(&mut r, &mut line)?;
        if since >= warm {
            lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let warm = Duration::from_secs(1);
    let end = warm + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut all: Vec<u32> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..args.clients)
            .map(|_| sc.spawn(|| client(&args, start, warm, end)))
            .collect();
        let mut v = Vec::new();
        for h in hs {
            v.extend(h.join().expect("client thread")?);
        }
        anyhow::Ok(v)
    })?;
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{}",
        serde_json::json!({
            "clients": args.clients,
            "requests": all.len(),
            "ops_per_sec": all.len() as f64 / args.seconds,
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
        })
    );
    Ok(())
}
