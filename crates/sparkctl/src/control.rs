//! Daemon-wide commands: ping, version, stats, shutdown.

use serde_json::json;
use spark_client::spark_proto::{ErrorCode, service};
use spark_client::{Client, Error, NamespaceStats, StatsResponse};

use crate::Failure;
use crate::output::{human_duration, namespace_from_cache, namespace_json, namespace_table};

pub fn ping(client: &Client, json_out: bool, count: u32) -> Result<(), Failure> {
    let mut times = Vec::with_capacity(count as usize);
    for _ in 0..count {
        times.push(client.ping()?);
    }
    times.sort();
    let median = times[times.len() / 2];
    let us = median.as_secs_f64() * 1e6;
    let hello = client.hello();
    if json_out {
        outln!(
            "{}",
            json!({"rtt_us": us, "count": count, "daemon_pid": hello.daemon_pid})
        );
    } else if count == 1 {
        outln!(
            "pong from sparkd {} (pid {}) in {us:.0} µs",
            hello.daemon_version,
            hello.daemon_pid
        );
    } else {
        outln!(
            "{count} pings to sparkd (pid {}): median {us:.0} µs",
            hello.daemon_pid
        );
    }
    Ok(())
}

pub fn version(client: &Client, json_out: bool) -> Result<(), Failure> {
    let v = client.version()?;
    let pid = client.hello().daemon_pid;
    if json_out {
        outln!(
            "{}",
            json!({"daemon_version": v.daemon_version, "protocol_version": v.protocol_version,
                "daemon_pid": pid})
        );
    } else {
        outln!(
            "sparkd {} (protocol {}, pid {pid})",
            v.daemon_version,
            v.protocol_version
        );
    }
    Ok(())
}

pub fn shutdown(client: &Client, json_out: bool) -> Result<(), Failure> {
    client.shutdown()?;
    if json_out {
        outln!("{}", json!({"shutdown": true}));
    } else {
        outln!("sparkd is shutting down");
    }
    Ok(())
}

/// Every namespace the daemon reports. A daemon that predates the Namespaces message answers
/// UnknownMessage: its two cache services are then asked for their stats one by one, as before.
fn namespaces(client: &Client, d: &StatsResponse) -> Result<Vec<NamespaceStats>, Error> {
    match client.namespaces() {
        Err(e) if e.daemon_code() == Some(ErrorCode::UnknownMessage) => {}
        r => return r,
    }
    let mut out = Vec::new();
    if d.services.contains(&service::SHADER) {
        let s = client.shader().stats()?;
        out.push(namespace_from_cache("shader", service::SHADER, &s));
    }
    if d.services.contains(&service::ASSET) {
        let s = client.asset().stats()?;
        out.push(namespace_from_cache("asset", service::ASSET, &s));
    }
    Ok(out)
}

pub fn stats(client: &Client, json_out: bool) -> Result<(), Failure> {
    let d = client.stats()?;
    let spaces = namespaces(client, &d)?;
    let hello = client.hello();
    if json_out {
        let v = json!({
            "daemon": {"uptime_secs": d.uptime_secs, "protocol_version": d.protocol_version,
                "services": d.services, "current_connections": d.current_connections,
                "total_connections": d.total_connections, "daemon_version": hello.daemon_version,
                "pid": hello.daemon_pid},
            "namespaces": spaces.iter().map(namespace_json).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let names: Vec<String> = d
        .services
        .iter()
        .map(|s| format!("{} (0x{s:04x})", service::name(*s)))
        .collect();
    outln!(
        "sparkd {} (pid {}, protocol {})",
        hello.daemon_version,
        hello.daemon_pid,
        d.protocol_version
    );
    outln!("  uptime           {}", human_duration(d.uptime_secs));
    outln!(
        "  connections      {} open, {} since start",
        d.current_connections,
        d.total_connections
    );
    outln!("  services         {}", names.join(", "));
    for ns in &spaces {
        out!("{}", namespace_table(ns));
    }
    Ok(())
}
