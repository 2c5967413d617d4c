//! The HTTP front against a real sparkd: metrics parse and move with known traffic, /status and /events
//! reflect it, the token is required, non-loopback addresses are refused, Bazel's /ac and /cas (with a CAS
//! mismatch and a 100 MiB streamed blob under bounded daemon memory), ccache's layouts.

mod common_http;

use std::io::{BufReader, Read, Write};

use base64::Engine;
use common_http::{HttpDaemon, connect, parse_prometheus, read_head, request, write_head};
use sha2::{Digest, Sha256};
use spark_client::{Client, ClientOptions, ShaderKey};
use spark_testkit::{sparkd_bin, status_kib};

fn sk(h: u64) -> ShaderKey {
    ShaderKey {
        source_hash: h,
        target: 1,
        stage: 2,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn prometheus_text_parser_rejects_what_prometheus_would() {
    // The parser is the check on /metrics, so it must be able to fail.
    assert!(parse_prometheus("# TYPE a_total counter\na_total 1\n").is_ok());
    assert!(parse_prometheus("a_total 1\n").is_err(), "no TYPE");
    assert!(
        parse_prometheus("# TYPE a counter\na 1\n").is_err(),
        "counter without _total"
    );
    assert!(
        parse_prometheus("# TYPE a gauge\na{x=\"1} 2\n").is_err(),
        "unterminated"
    );
    assert!(
        parse_prometheus("# TYPE a gauge\na{x=1} 2\n").is_err(),
        "unquoted"
    );
    assert!(
        parse_prometheus("# TYPE a gauge\na one\n").is_err(),
        "bad value"
    );
    let h =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
    assert!(parse_prometheus(h).is_err(), "not cumulative");
}

#[test]
fn metrics_parse_and_counters_move_after_known_traffic() {
    let h = HttpDaemon::start(&[]);
    let before = parse_prometheus(&h.get_text("/metrics")).expect("a valid exposition");
    let ns = [("namespace", "shader")];
    assert_eq!(before.value("sparkd_namespace_hits_total", &ns), 0.0);

    // Known traffic: one put, two hits, one miss on the shader cache over the socket …
    let c = h.d.client();
    let shader = c.shader();
    assert!(shader.put(&sk(1), &[7u8; 1000]).unwrap());
    assert!(shader.get(&sk(1)).unwrap().is_some());
    assert!(shader.get(&sk(1)).unwrap().is_some());
    assert!(shader.get(&sk(2)).unwrap().is_none());
    // … and one ccache put and get over HTTP.
    assert_eq!(h.call("PUT", "/ccache/ab/cd01", b"object").status, 200);
    assert_eq!(h.call("GET", "/ccache/ab/cd01", b"").body, b"object");

    let after = parse_prometheus(&h.get_text("/metrics")).expect("a valid exposition");
    let d = |name: &str, labels: &[(&str, &str)]| {
        after.value_or_zero(name, labels) - before.value_or_zero(name, labels)
    };
    assert_eq!(d("sparkd_namespace_hits_total", &ns), 2.0);
    assert_eq!(d("sparkd_namespace_misses_total", &ns), 1.0);
    assert_eq!(d("sparkd_namespace_puts_total", &ns), 1.0);
    assert_eq!(after.value("sparkd_namespace_entries", &ns), 1.0);
    assert!(
        after.value(
            "sparkd_namespace_bytes",
            &[("namespace", "shader"), ("tier", "memory")]
        ) >= 1000.0
    );
    let cc = [("namespace", "ccache")];
    assert_eq!(d("sparkd_namespace_puts_total", &cc), 1.0);
    assert_eq!(d("sparkd_namespace_hits_total", &cc), 1.0);
    // Requests by service and message: exactly the four shader requests.
    let shader_reqs: f64 = after
        .matching("sparkd_requests_total", &[("service", "shader")])
        .map(|s| s.value)
        .sum();
    assert_eq!(shader_reqs, 4.0);
    assert_eq!(
        after.value(
            "sparkd_requests_total",
            &[("service", "shader"), ("message", "Get")]
        ),
        3.0
    );
    assert_eq!(
        after.value(
            "sparkd_requests_total",
            &[("service", "shader"), ("message", "Put")]
        ),
        1.0
    );
    // Every one of them has a latency observation.
    assert_eq!(
        after.value(
            "sparkd_request_duration_seconds_count",
            &[("service", "shader")]
        ),
        4.0
    );
    assert!(d("sparkd_socket_bytes_in_total", &[]) >= 1000.0);
    assert!(
        d("sparkd_socket_bytes_out_total", &[]) >= 2000.0,
        "two 1000-byte hits went out"
    );
    assert!(
        after.value("sparkd_connections", &[]) >= 1.0,
        "our client is connected"
    );
    assert_eq!(
        d(
            "sparkd_http_requests_total",
            &[("endpoint", "ccache"), ("method", "PUT"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        after.value_or_zero(
            "sparkd_http_requests_total",
            &[("endpoint", "metrics"), ("status", "200")]
        ),
        1.0,
        "the first scrape is counted by the second"
    );
    assert!(d("sparkd_http_bytes_in_total", &[]) >= 6.0);
}

#[test]
fn services_report_their_own_levels_in_metrics() {
    let h = HttpDaemon::start(&[]);
    let c = h.d.client();
    // The Watch service's roots and subscriptions: one of each while our client watches a directory.
    let watched = tempfile::tempdir().unwrap();
    c.watch()
        .subscribe(watched.path(), &spark_client::WatchSpec::default())
        .unwrap();
    let w = parse_prometheus(&h.get_text("/metrics")).expect("a valid exposition");
    let watch = |counter| {
        w.value(
            "sparkd_service_state",
            &[("service", "watch"), ("counter", counter)],
        )
    };
    assert_eq!((watch("roots"), watch("subscriptions")), (1.0, 1.0));
    // The Collab service's: one session with one member, one message published.
    c.collab()
        .join("metrics-demo", &spark_client::JoinOptions::default())
        .unwrap();
    c.collab()
        .publish("metrics-demo", "selection", b"rock", false)
        .unwrap();
    let w = parse_prometheus(&h.get_text("/metrics")).expect("a valid exposition");
    let collab = |counter| {
        w.value(
            "sparkd_service_state",
            &[("service", "collab"), ("counter", counter)],
        )
    };
    assert_eq!(
        (collab("sessions"), collab("members"), collab("published")),
        (1.0, 1.0, 1.0)
    );
    // The Compile service's own counters appear under its namespace.
    assert!(
        w.matching("sparkd_service_stat", &[("namespace", "compile")])
            .count()
            > 0
    );
}

#[test]
fn status_and_events_reflect_traffic_and_clients() {
    let h = HttpDaemon::start(&[]);
    let opts = ClientOptions {
        client_name: "status-test-editor".into(),
        ..Default::default()
    };
    let c = Client::connect_with(&h.d.socket, &opts).unwrap();
    c.shader().put(&sk(9), b"abc").unwrap();
    c.shader().get(&sk(9)).unwrap().unwrap();
    let s: serde_json::Value = serde_json::from_str(&h.get_text("/status")).unwrap();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["uptime_seconds"].as_f64().unwrap() >= 0.0);
    let clients = s["clients"].as_array().unwrap();
    let me = clients
        .iter()
        .find(|c| c["name"] == "status-test-editor")
        .unwrap_or_else(|| panic!("our client in {clients:?}"));
    assert_eq!(me["pid"], std::process::id());
    let names: Vec<&str> = s["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    for want in [
        "shader",
        "asset",
        "compile",
        "ccache",
        "bazel-ac",
        "bazel-cas",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let shader = &s["namespaces"][0];
    assert_eq!(
        (shader["name"].as_str(), shader["entries"].as_u64()),
        (Some("shader"), Some(1))
    );
    assert_eq!(
        (shader["puts"].as_u64(), shader["hits"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(shader["memory_budget"].as_u64().unwrap() > 0);
    assert!(
        s["socket_requests"].as_u64().unwrap() >= 3,
        "hello, put, get"
    );

    // /events: a server-sent event carrying a sample with the same namespaces, authorised by ?token=.
    let mut sock = connect(h.addr);
    write_head(
        &mut sock,
        "GET",
        &format!("/events?token={}", h.token),
        &[],
        0,
    );
    let mut r = BufReader::new(sock);
    let (status, headers) = read_head(&mut r);
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "text/event-stream")
    );
    // The body is chunked; the chunk framing (hex sizes on lines of their own) is not JSON and is skipped.
    // The first event may predate our traffic (a sample a second): read until one shows it.
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        assert!(n > 0, "the event stream ended early");
        let Some(json) = line.trim_end().strip_prefix("data: ") else {
            continue;
        };
        let v: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(v["namespaces"][0]["name"], "shader");
        if v["namespaces"][0]["hits"] == 1 {
            assert_eq!(v["namespaces"][0]["puts"], 1);
            break;
        }
    }
}

#[test]
fn requests_without_the_token_get_401() {
    let h = HttpDaemon::start(&[]);
    let cas = format!("/cas/{}", hex(&Sha256::digest(b"")));
    let paths = [
        "/metrics",
        "/status",
        "/",
        "/events",
        "/ccache/ab/cd",
        cas.as_str(),
        "/ac/00",
    ];
    let wrong = format!("Bearer {}", "0".repeat(h.token.len()));
    let basic_wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:nope", h.token))
    );
    for p in paths {
        for hdr in [
            vec![],
            vec![("Authorization", wrong.as_str())],
            vec![("Authorization", basic_wrong.as_str())],
        ] {
            let r = request(h.addr, "GET", p, &hdr, b"");
            assert_eq!(r.status, 401, "GET {p} with {hdr:?}");
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Basic"))
            );
            assert!(
                r.text().contains(".token"),
                "says where the token is: {}",
                r.text()
            );
            assert!(!r.text().contains(&h.token), "never what it is");
        }
    }
    let r = request(h.addr, "PUT", "/ccache/ab/cd", &[], b"x");
    assert_eq!(r.status, 401);
    assert_eq!(
        h.call("GET", "/ccache/ab/cd", b"").status,
        404,
        "not stored by the refused PUT"
    );
    // HTTP Basic with the token as password (any user), as ccache and Bazel send it.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(":{}", h.token))
    );
    assert_eq!(
        request(h.addr, "GET", "/status", &[("Authorization", &basic)], b"").status,
        200
    );
    // ?token= only on the dashboard's routes.
    let q = format!("?token={}", h.token);
    assert_eq!(
        request(h.addr, "GET", &format!("/status{q}"), &[], b"").status,
        200
    );
    assert_eq!(
        request(h.addr, "GET", &format!("/{q}"), &[], b"").status,
        200
    );
    assert_eq!(
        request(h.addr, "GET", &format!("/assets/app.js{q}"), &[], b"").status,
        200
    );
    assert_eq!(
        request(h.addr, "GET", &format!("/metrics{q}"), &[], b"").status,
        401
    );
    assert_eq!(
        request(h.addr, "GET", &format!("{cas}{q}"), &[], b"").status,
        401
    );
}

#[test]
fn a_non_loopback_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(sparkd_bin())
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--cache-root")
        .arg(dir.path().join("c"))
        .args(["--http", "0.0.0.0:18999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("non-loopback") && err.contains("--http-allow-remote"),
        "{err}"
    );
    assert!(!dir.path().join("s.sock").exists(), "it did not start");
}

#[test]
fn bazel_ac_and_cas_protocol() {
    let h = HttpDaemon::start(&[]);
    let blob = b"int main() { return 0; }\n".to_vec();
    let digest = hex(&Sha256::digest(&blob));
    let cas = format!("/cas/{digest}");
    assert_eq!(h.call("HEAD", &cas, b"").status, 404);
    assert_eq!(h.call("GET", &cas, b"").status, 404);
    assert_eq!(h.call("PUT", &cas, &blob).status, 200);
    let r = h.call("HEAD", &cas, b"");
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some(blob.len().to_string().as_str()))
    );
    assert_eq!(h.call("GET", &cas, b"").body, blob);
    // Uppercase hex names the same blob.
    assert_eq!(
        h.call("GET", &cas.to_uppercase().replace("/CAS/", "/cas/"), b"")
            .body,
        blob
    );

    // A CAS body that does not hash to its name is refused and not stored.
    let other = hex(&Sha256::digest(b"something else"));
    let r = h.call("PUT", &format!("/cas/{other}"), &blob);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("SHA-256") && r.text().contains(&digest),
        "{}",
        r.text()
    );
    assert_eq!(h.call("HEAD", &format!("/cas/{other}"), b"").status, 404);

    // The action cache stores what it is given under the action's digest.
    let action = hex(&Sha256::digest(b"action"));
    let ac = format!("/ac/{action}");
    assert_eq!(h.call("GET", &ac, b"").status, 404);
    assert_eq!(h.call("PUT", &ac, b"\x0a\x03res").status, 200);
    assert_eq!(h.call("GET", &ac, b"").body, b"\x0a\x03res");
    assert_eq!(h.call("HEAD", &ac, b"").status, 200);
    // Bad names.
    assert_eq!(h.call("GET", "/cas/1234", b"").status, 400);
    assert_eq!(
        h.call("PUT", &format!("/ac/{}", "z".repeat(64)), b"x")
            .status,
        400
    );
    // Separate namespaces: the CAS blob is not an action result.
    assert_eq!(h.call("GET", &format!("/ac/{digest}"), b"").status, 404);
    let s: serde_json::Value = serde_json::from_str(&h.get_text("/status")).unwrap();
    let ns = |n: &str| {
        s["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(ns("bazel-cas")["entries"], 1);
    assert_eq!(ns("bazel-ac")["entries"], 1);
}

/// Deterministic bytes that do not compress or repeat (xorshift), in 1 MiB pieces.
fn pseudo_random(mut f: impl FnMut(&[u8]), total: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = total;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len());
        f(&buf[..n]);
        left -= n;
    }
}

#[test]
fn a_100_mib_cas_blob_streams_both_ways_with_bounded_daemon_memory() {
    const SIZE: usize = 100 << 20;
    let h = HttpDaemon::start(&["--memory-budget-mb", "16"]);
    let pid = h.d.pid();
    // Warm the HTTP path once, so the baseline includes its buffers and threads.
    assert_eq!(h.call("GET", "/status", b"").status, 200);
    let base = status_kib(pid, "VmHWM");

    let mut hasher = Sha256::new();
    pseudo_random(|c| hasher.update(c), SIZE);
    let digest = hex(&hasher.finalize());
    let path = format!("/cas/{digest}");
    let bearer = h.bearer();

    // PUT, streamed from the generator.
    let mut s = connect(h.addr);
    write_head(
        &mut s,
        "PUT",
        &path,
        &[("Authorization", &bearer)],
        SIZE as u64,
    );
    pseudo_random(|c| s.write_all(c).unwrap(), SIZE);
    let mut r = BufReader::new(s);
    let (status, _) = read_head(&mut r);
    let mut msg = String::new();
    r.read_to_string(&mut msg).unwrap();
    assert_eq!(status, 200, "{msg}");

    // A mismatching 100 MiB body is refused after streaming, and not stored.
    let wrong = format!("/cas/{}", hex(&Sha256::digest(b"not this")));
    let mut s = connect(h.addr);
    write_head(
        &mut s,
        "PUT",
        &wrong,
        &[("Authorization", &bearer)],
        SIZE as u64,
    );
    pseudo_random(|c| s.write_all(c).unwrap(), SIZE);
    let mut r = BufReader::new(s);
    assert_eq!(read_head(&mut r).0, 400);
    assert_eq!(h.call("HEAD", &wrong, b"").status, 404);

    // GET, hashed as it arrives.
    let mut s = connect(h.addr);
    write_head(&mut s, "GET", &path, &[("Authorization", &bearer)], 0);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-length" && *v == SIZE.to_string())
    );
    let mut got = Sha256::new();
    let mut n = 0usize;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got.update(&buf[..k]);
        n += k;
    }
    assert_eq!(n, SIZE);
    assert_eq!(hex(&got.finalize()), digest, "the same bytes came back");

    // Three 100 MiB bodies went through; the daemon's peak grew by far less than one.
    let grew_mib = status_kib(pid, "VmHWM").saturating_sub(base) / 1024;
    println!("VmHWM grew by {grew_mib} MiB over {base} KiB for 3 × 100 MiB transfers");
    assert!(
        grew_mib < 40,
        "daemon peak memory grew by {grew_mib} MiB: the body was buffered"
    );
    let s: serde_json::Value = serde_json::from_str(&h.get_text("/status")).unwrap();
    let cas = s["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "bazel-cas")
        .unwrap()
        .clone();
    assert!(cas["bytes_on_disk"].as_u64().unwrap() >= SIZE as u64);
}

#[test]
fn ccache_layouts_head_and_delete() {
    let h = HttpDaemon::start(&[]);
    assert_eq!(h.call("HEAD", "/ccache/0a/1b2c", b"").status, 404);
    assert_eq!(h.call("PUT", "/ccache/0a/1b2c", b"result").status, 200);
    // subdirs and flat layouts name one entry.
    assert_eq!(h.call("GET", "/ccache/0a1b2c", b"").body, b"result");
    assert_eq!(h.call("HEAD", "/ccache/0a/1b2c", b"").status, 200);
    assert_eq!(h.call("DELETE", "/ccache/0a1b2c", b"").status, 200);
    assert_eq!(h.call("GET", "/ccache/0a/1b2c", b"").status, 404);
    assert_eq!(h.call("DELETE", "/ccache/0a1b2c", b"").status, 404);
    assert_eq!(h.call("PUT", "/ccache/..%2Fx", b"x").status, 400);
    // A body larger than Content-Length announces is refused, not truncated silently.
    let mut s = connect(h.addr);
    let bearer = h.bearer();
    write_head(
        &mut s,
        "PUT",
        "/ccache/ff/00",
        &[("Authorization", &bearer)],
        4,
    );
    s.write_all(b"abcd").unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(read_head(&mut r).0, 200);
    assert_eq!(h.call("GET", "/ccache/ff00", b"").body, b"abcd");
}
