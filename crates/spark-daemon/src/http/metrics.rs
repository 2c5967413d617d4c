//! `/metrics` in the Prometheus text format (0.0.4). Nearly everything is derived at scrape time from counters
//! that exist anyway — each namespace's store statistics (and a service's extra counters, such as Compile's),
//! the connection layer's [`crate::conn::stats::ConnStats`], the server state — and encoded with
//! `prometheus-client`. Only the HTTP front's own per-endpoint counts live here ([`HttpStats`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use spark_store::StoreStats;

use super::server::App;
use crate::conn::stats::{ConnSnapshot, LATENCY_BOUNDS_US};

/// An HTTP request's labels: endpoint, method, status.
type HttpKey = (&'static str, &'static str, u16);
/// A namespace's name, store statistics and its service's own counters.
type NsCounters = (&'static str, StoreStats, Vec<(&'static str, u64)>);

/// Requests the HTTP front answered, by (endpoint, method, status), and its body bytes.
#[derive(Default)]
pub struct HttpStats {
    requests: Mutex<HashMap<HttpKey, u64>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl HttpStats {
    pub fn count(&self, endpoint: &'static str, method: &str, status: u16, inb: u64, outb: u64) {
        // A fixed label set: a client sending made-up methods cannot grow the table.
        let method = match method {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "POST" => "POST",
            _ => "other",
        };
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((endpoint, method, status))
            .or_insert(0) += 1;
        self.bytes_in.fetch_add(inb, Ordering::Relaxed);
        self.bytes_out.fetch_add(outb, Ordering::Relaxed);
    }

    /// Every count, sorted (stable output), and (bytes in, bytes out).
    pub fn snapshot(&self) -> (Vec<(HttpKey, u64)>, (u64, u64)) {
        let r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = r.iter().map(|(k, n)| (*k, *n)).collect();
        v.sort();
        let b = (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        );
        (v, b)
    }

    /// Requests answered so far.
    pub fn total(&self) -> u64 {
        let r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        r.values().sum()
    }
}

/// Everything one scrape reports, taken at once.
#[derive(Debug)]
struct Scrape {
    namespaces: Vec<NsCounters>,
    /// (service, its own counters) for services that report any.
    services: Vec<(&'static str, Vec<(&'static str, u64)>)>,
    conn: ConnSnapshot,
    connections: u64,
    connections_total: u64,
    clients: u64,
    uptime: f64,
    http: Vec<(HttpKey, u64)>,
    http_bytes: (u64, u64),
}

impl Scrape {
    fn take(app: &App) -> Scrape {
        let namespaces = app
            .namespaces
            .iter()
            .map(|ns| {
                let stats = ns.stats();
                // The store's own counters are reported below by name; the rest are the service's.
                let own: Vec<&str> = stats.counters().iter().map(|(n, _)| *n).collect();
                let extra = ns
                    .counters()
                    .into_iter()
                    .filter(|(n, _)| !own.contains(n))
                    .collect();
                (ns.name(), stats, extra)
            })
            .collect();
        let services = app
            .registry
            .services()
            .map(|svc| (spark_proto::service::name(svc.id()), svc.counters()))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        let (http, http_bytes) = app.stats.snapshot();
        let s = &app.state;
        Scrape {
            namespaces,
            services,
            conn: s.conn_stats.snapshot(),
            connections: s.open_connections() as u64,
            connections_total: s
                .total_connections
                .load(std::sync::atomic::Ordering::Relaxed),
            clients: s.clients().len() as u64,
            uptime: s.started.elapsed().as_secs_f64(),
            http,
            http_bytes,
        }
    }
}

/// A message's name for a label: its protocol name, else its type in hex.
fn message_name(service: u16, msg_type: u16) -> String {
    use spark_proto::service::{ASSET, SHADER};
    // The two blob caches share one message set ("cache"); some messages are on every service ("any").
    let svc = match service {
        SHADER | ASSET => "cache",
        id => spark_proto::service::name(id),
    };
    spark_proto::messages::ALL
        .iter()
        .find(|m| (m.service == svc || m.service == "any") && m.msg_type == msg_type)
        .map(|m| m.name.to_string())
        .unwrap_or_else(|| match msg_type {
            spark_proto::msg::STREAM_CHUNK => "StreamChunk".into(),
            spark_proto::msg::STREAM_END => "StreamEnd".into(),
            t => format!("0x{t:04x}"),
        })
}

fn service_name(id: u16) -> &'static str {
    if id == u16::MAX {
        "other"
    } else {
        spark_proto::service::name(id)
    }
}

type Enc<'a> = DescriptorEncoder<'a>;

/// A sample without labels.
const NO_LABELS: [(&str, &str); 0] = [];

/// One metric family: a descriptor, then one sample per label set.
fn family<L: prometheus_client::encoding::EncodeLabelSet>(
    enc: &mut Enc<'_>,
    name: &str,
    help: &str,
    ty: MetricType,
    samples: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in samples {
        let f = m.encode_family(&labels)?;
        // Whole numbers print as integers (most values are counts).
        let whole = v.fract() == 0.0 && v.abs() < 9.0e15;
        match ty {
            MetricType::Counter if whole => ConstCounter::new(v as u64).encode(f)?,
            MetricType::Counter => ConstCounter::new(v).encode(f)?,
            _ if whole => ConstGauge::new(v as i64).encode(f)?,
            _ => ConstGauge::new(v).encode(f)?,
        }
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut enc: Enc<'_>) -> Result<(), std::fmt::Error> {
        self.encode_namespaces(&mut enc)?;
        self.encode_services(&mut enc)?;
        self.encode_connections(&mut enc)?;
        self.encode_http(&mut enc)
    }
}

impl Scrape {
    fn encode_namespaces(&self, enc: &mut Enc<'_>) -> Result<(), std::fmt::Error> {
        type Pick = fn(&StoreStats) -> u64;
        let counters: [(&str, &str, Pick); 5] = [
            (
                "sparkd_namespace_hits",
                "Lookups that found the blob.",
                |s| s.hits,
            ),
            ("sparkd_namespace_misses", "Lookups that did not.", |s| {
                s.misses
            }),
            ("sparkd_namespace_puts", "Blobs stored.", |s| s.puts),
            (
                "sparkd_namespace_evictions",
                "Entries dropped to stay within a budget.",
                |s| s.evictions,
            ),
            (
                "sparkd_namespace_corrupt_dropped",
                "Entries dropped because their bytes failed the checksum.",
                |s| s.corrupt_dropped,
            ),
        ];
        for (name, help, pick) in counters {
            let samples = self
                .namespaces
                .iter()
                .map(|(n, s, _)| ([("namespace", *n)], pick(s) as f64));
            family(enc, name, help, MetricType::Counter, samples)?;
        }
        self.encode_namespace_levels(enc)
    }

    fn encode_namespace_levels(&self, enc: &mut Enc<'_>) -> Result<(), std::fmt::Error> {
        let entries = self
            .namespaces
            .iter()
            .map(|(n, s, _)| ([("namespace", *n)], s.entries as f64));
        family(
            enc,
            "sparkd_namespace_entries",
            "Entries stored.",
            MetricType::Gauge,
            entries,
        )?;
        let bytes = self.namespaces.iter().flat_map(|(n, s, _)| {
            [
                (
                    [("namespace", *n), ("tier", "memory")],
                    s.bytes_in_memory as f64,
                ),
                (
                    [("namespace", *n), ("tier", "disk")],
                    s.bytes_on_disk as f64,
                ),
            ]
        });
        family(
            enc,
            "sparkd_namespace_bytes",
            "Bytes held, by tier.",
            MetricType::Gauge,
            bytes,
        )?;
        let budget = self.namespaces.iter().flat_map(|(n, s, _)| {
            [
                (
                    [("namespace", *n), ("tier", "memory")],
                    s.memory_budget as f64,
                ),
                ([("namespace", *n), ("tier", "disk")], s.disk_budget as f64),
            ]
        });
        family(
            enc,
            "sparkd_namespace_budget_bytes",
            "Budget by tier (0 = unbounded or no such tier).",
            MetricType::Gauge,
            budget,
        )?;
        // A service's own counters (Compile: compiles, hits, joins, timeouts, queue depth …): one gauge family,
        // since some of them go down.
        let extra = self.namespaces.iter().flat_map(|(n, _, extra)| {
            extra
                .iter()
                .map(move |(c, v)| ([("namespace", *n), ("counter", *c)], *v as f64))
        });
        family(
            enc,
            "sparkd_service_stat",
            "A service's own counters, by the namespace it serves.",
            MetricType::Gauge,
            extra,
        )
    }

    fn encode_services(&self, enc: &mut Enc<'_>) -> Result<(), std::fmt::Error> {
        let samples = self.services.iter().flat_map(|(svc, counters)| {
            counters
                .iter()
                .map(move |(c, v)| ([("service", *svc), ("counter", *c)], *v as f64))
        });
        family(
            enc,
            "sparkd_service_state",
            "A socket service's own levels (the Watch service's roots and subscriptions …).",
            MetricType::Gauge,
            samples,
        )
    }

    fn encode_connections(&self, enc: &mut Enc<'_>) -> Result<(), std::fmt::Error> {
        family(
            enc,
            "sparkd_connections",
            "Socket connections open now.",
            MetricType::Gauge,
            [(NO_LABELS, self.connections as f64)],
        )?;
        family(
            enc,
            "sparkd_connections_opened",
            "Socket connections accepted.",
            MetricType::Counter,
            [(NO_LABELS, self.connections_total as f64)],
        )?;
        family(
            enc,
            "sparkd_clients",
            "Connected clients that said Hello.",
            MetricType::Gauge,
            [(NO_LABELS, self.clients as f64)],
        )?;
        family(
            enc,
            "sparkd_uptime_seconds",
            "Seconds since the daemon started.",
            MetricType::Gauge,
            [(NO_LABELS, self.uptime)],
        )?;
        let reqs = self.conn.requests.iter().map(|(s, t, n)| {
            (
                [
                    ("service", service_name(*s).to_string()),
                    ("message", message_name(*s, *t)),
                ],
                *n as f64,
            )
        });
        let other = std::iter::once((
            [
                ("service", "other".to_string()),
                ("message", "other".to_string()),
            ],
            self.conn.other_requests as f64,
        ))
        .filter(|(_, n)| *n > 0.0);
        family(
            enc,
            "sparkd_requests",
            "Requests on the socket, by service and message.",
            MetricType::Counter,
            reqs.chain(other),
        )?;
        family(
            enc,
            "sparkd_socket_bytes_in",
            "Bytes read from socket clients.",
            MetricType::Counter,
            [(NO_LABELS, self.conn.bytes_in as f64)],
        )?;
        family(
            enc,
            "sparkd_socket_bytes_out",
            "Bytes written to socket clients.",
            MetricType::Counter,
            [(NO_LABELS, self.conn.bytes_out as f64)],
        )?;
        self.encode_latency(enc)
    }

    fn encode_latency(&self, enc: &mut Enc<'_>) -> Result<(), std::fmt::Error> {
        let mut m = enc.encode_descriptor(
            "sparkd_request_duration_seconds",
            "Time from a request's frame being read to its reply being written, by service.",
            None,
            MetricType::Histogram,
        )?;
        for (svc, h) in &self.conn.latency {
            let bounds = LATENCY_BOUNDS_US
                .iter()
                .map(|b| *b as f64 / 1e6)
                .chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds.zip(h.counts.iter().copied()).collect();
            let labels = [("service", service_name(*svc))];
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                h.sum_seconds,
                h.count(),
                &buckets,
                None,
            )?;
        }
        Ok(())
    }

    fn encode_http(&self, enc: &mut Enc<'_>) -> Result<(), std::fmt::Error> {
        let reqs = self.http.iter().map(|((ep, method, status), n)| {
            (
                [
                    ("endpoint", ep.to_string()),
                    ("method", method.to_string()),
                    ("status", status.to_string()),
                ],
                *n as f64,
            )
        });
        family(
            enc,
            "sparkd_http_requests",
            "HTTP requests, by endpoint, method and status.",
            MetricType::Counter,
            reqs,
        )?;
        family(
            enc,
            "sparkd_http_bytes_in",
            "HTTP request body bytes (by Content-Length).",
            MetricType::Counter,
            [(NO_LABELS, self.http_bytes.0 as f64)],
        )?;
        family(
            enc,
            "sparkd_http_bytes_out",
            "HTTP response body bytes (by Content-Length).",
            MetricType::Counter,
            [(NO_LABELS, self.http_bytes.1 as f64)],
        )
    }
}

/// The whole exposition, as text.
pub fn render(app: &App) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Scrape::take(app)));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &reg)?;
    Ok(out)
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    match render(&app) {
        Ok(text) => {
            let mut r = text.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
    }
}
