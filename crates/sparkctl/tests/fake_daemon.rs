//! sparkctl against a scripted fake daemon: the Namespaces message (which the real daemon on this branch
//! does not answer yet), the fallback for daemons that predate it, and a local write failure mid-stream.

#[path = "../../spark-client/tests/support/fake.rs"]
mod fake;

use std::process::{Command, Output, Stdio};

use fake::{FakeDaemon, Peer};
use spark_client::spark_proto::cache::{self, CacheStats, GetResponse, GetStatus, StreamEnd};
use spark_client::spark_proto::control::{self, NamespaceStats, NamespacesResponse, StatsResponse};
use spark_client::spark_proto::{ErrorCode, ErrorResponse, PROTOCOL_VERSION, msg, service};

fn sparkctl(socket: &std::path::Path, args: &[&str], stdout: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparkctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn daemon_stats(p: &mut Peer) {
    let s = StatsResponse {
        uptime_secs: 90,
        protocol_version: PROTOCOL_VERSION,
        services: vec![service::CONTROL, service::SHADER, service::ASSET],
        current_connections: 1,
        total_connections: 4,
    };
    p.send(service::CONTROL, &s);
}

fn counters(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn three_namespaces() -> NamespacesResponse {
    let cache_counters = counters(&[
        ("hits", 3),
        ("misses", 1),
        ("entries", 2),
        ("entries_in_memory", 2),
        ("bytes_in_memory", 4096),
        ("memory_budget", 256 << 20),
        ("bytes_on_disk", 15),
        ("disk_budget", 0),
    ]);
    NamespacesResponse {
        namespaces: vec![
            NamespaceStats {
                name: "shader".into(),
                service: service::SHADER,
                counters: cache_counters.clone(),
            },
            NamespaceStats {
                name: "asset".into(),
                service: service::ASSET,
                counters: cache_counters,
            },
            NamespaceStats {
                name: "http-cas".into(),
                service: 0,
                counters: counters(&[("requests", 12), ("bytes_served", 3 << 20)]),
            },
        ],
    }
}

/// Serves `runs` sparkctl invocations that ask for stats; Namespaces gets `three_namespaces`.
fn namespaces_daemon(runs: usize) -> FakeDaemon {
    FakeDaemon::start(runs, |p, f| match (f.service, f.msg_type) {
        (service::CONTROL, control::STATS) => daemon_stats(p),
        (service::CONTROL, control::NAMESPACES) => p.send(service::CONTROL, &three_namespaces()),
        _ => p.send(
            f.service,
            &ErrorResponse::new(ErrorCode::UnknownMessage, "not scripted"),
        ),
    })
}

#[test]
fn stats_lists_every_namespace_the_daemon_reports() {
    let d = namespaces_daemon(2);
    let o = sparkctl(&d.socket, &["stats"], Stdio::piped());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t = String::from_utf8_lossy(&o.stdout);
    for want in [
        "shader (service 0x0002)",
        "asset (service 0x0003)",
        "\nhttp-cas\n",
        "memory           4.0 KiB of 256.0 MiB",
        "disk             15 B of unbounded",
        "hits / misses    3 / 1 (75.0% hit rate)",
        "requests         12",
        "bytes served     3.0 MiB",
    ] {
        assert!(t.contains(want), "{want:?} in\n{t}");
    }
    let o = sparkctl(&d.socket, &["--json", "stats"], Stdio::piped());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shader", "asset", "http-cas"]);
    assert_eq!(v["namespaces"][2]["service"], 0);
    assert_eq!(v["namespaces"][2]["counters"]["bytes_served"], 3 << 20);
    assert_eq!(v["namespaces"][0]["counters"]["memory_budget"], 256 << 20);
    assert_eq!(v["daemon"]["uptime_secs"], 90);
    d.join();
}

#[test]
fn stats_falls_back_to_per_service_stats_on_an_older_daemon() {
    let d = FakeDaemon::start(1, |p, f| match (f.service, f.msg_type) {
        (service::CONTROL, control::STATS) => daemon_stats(p),
        (s @ (service::SHADER | service::ASSET), cache::STATS) => p.send(
            s,
            &CacheStats {
                puts: u64::from(s) * 10,
                ..CacheStats::default()
            },
        ),
        // What a daemon without the Namespaces handler answers.
        _ => p.send(
            f.service,
            &ErrorResponse::new(ErrorCode::UnknownMessage, "unknown message"),
        ),
    });
    let o = sparkctl(&d.socket, &["--json", "stats"], Stdio::piped());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ns = v["namespaces"].as_array().unwrap();
    assert_eq!(ns.len(), 2, "{v}");
    assert_eq!(
        (ns[0]["name"].as_str(), ns[0]["counters"]["puts"].as_u64()),
        (Some("shader"), Some(20))
    );
    assert_eq!(
        (ns[1]["name"].as_str(), ns[1]["counters"]["puts"].as_u64()),
        (Some("asset"), Some(30))
    );
    d.join();
}

#[test]
fn a_failing_stdout_mid_stream_is_a_local_error_exit_4() {
    let d = FakeDaemon::start(1, |p, f| {
        if (f.service, f.msg_type) != (service::SHADER, cache::GET) {
            return;
        }
        // Chunks larger than stdout's buffer, so the write to /dev/full fails inside the client.
        let chunk = vec![7u8; 256 << 10];
        let total_len = 2 * chunk.len() as u64;
        p.send(
            service::SHADER,
            &GetResponse {
                status: GetStatus::Streamed { total_len },
            },
        );
        p.send_frame(service::SHADER, msg::STREAM_CHUNK, &chunk);
        p.send_frame(service::SHADER, msg::STREAM_CHUNK, &chunk);
        let checksum = spark_client::spark_proto::blob_checksum(&[chunk.clone(), chunk].concat());
        p.send(service::SHADER, &StreamEnd { checksum });
    });
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let o = sparkctl(&d.socket, &["shader", "get", "abcd", "1", "2"], full.into());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("local I/O failed"), "{err}");
    d.join();
}
