//! `/status` (JSON: version, uptime, namespaces with budgets and usage, connected clients) and the history of
//! samples the dashboard charts: one per second, the last ten minutes, also pushed live to `/events`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::server::App;

/// Seconds between samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept (ten minutes).
const HISTORY_LEN: usize = 600;

/// The recent samples, and a signal for each new one.
pub struct History {
    samples: Mutex<VecDeque<Arc<str>>>,
    pub latest: watch::Sender<Option<Arc<str>>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            samples: Mutex::new(VecDeque::with_capacity(HISTORY_LEN)),
            latest: watch::channel(None).0,
        }
    }
}

impl History {
    fn push(&self, sample: Arc<str>) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() == HISTORY_LEN {
            s.pop_front();
        }
        s.push_back(sample.clone());
        drop(s);
        self.latest.send_replace(Some(sample));
    }

    /// `{"interval_ms": …, "samples": [ … ]}`, oldest first, as JSON text.
    pub fn to_json(&self) -> String {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = format!(
            "{{\"interval_ms\":{},\"samples\":[",
            SAMPLE_INTERVAL.as_millis()
        );
        for (i, x) in s.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(x);
        }
        out.push_str("]}");
        out
    }
}

/// Takes a sample now, then every [`SAMPLE_INTERVAL`] until shutdown.
pub fn spawn_sampler(app: Arc<App>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => app.history.push(sample(&app).to_string().into()),
                _ = app.state.shutting_down() => return,
            }
        }
    });
}

/// Total socket requests so far.
fn socket_requests(app: &App) -> u64 {
    let c = app.state.conn_stats.snapshot();
    c.requests.iter().map(|r| r.2).sum::<u64>() + c.other_requests
}

fn namespace_json(ns: &crate::namespaces::Namespace) -> Value {
    let s = ns.stats();
    let mut v = json!({
        "name": ns.name(),
        "hits": s.hits,
        "misses": s.misses,
        "puts": s.puts,
        "entries": s.entries,
        "bytes_in_memory": s.bytes_in_memory,
        "bytes_on_disk": s.bytes_on_disk,
        "memory_budget": s.memory_budget,
        "disk_budget": s.disk_budget,
        "evictions": s.evictions,
        "corrupt_dropped": s.corrupt_dropped,
    });
    let own: Vec<&str> = s.counters().iter().map(|(n, _)| *n).collect();
    let extra: serde_json::Map<String, Value> = ns
        .counters()
        .into_iter()
        .filter(|(n, _)| !own.contains(n))
        .map(|(n, x)| (n.to_string(), x.into()))
        .collect();
    if !extra.is_empty() {
        v["service_counters"] = Value::Object(extra);
    }
    if let Some(t) = ns.team() {
        v["upstream"] = t.status();
    }
    v
}

/// One point of the dashboard's charts: cumulative counters (the page takes differences) and levels.
pub fn sample(app: &App) -> Value {
    json!({
        "t_ms": app.started.elapsed().as_millis() as u64,
        "uptime_seconds": app.state.started.elapsed().as_secs_f64(),
        "socket_requests": socket_requests(app),
        "http_requests": app.stats.total(),
        "connections": app.state.open_connections(),
        "clients": clients_json(app),
        "namespaces": app.namespaces.iter().map(|n| namespace_json(n)).collect::<Vec<_>>(),
    })
}

fn clients_json(app: &App) -> Vec<Value> {
    app.state
        .clients()
        .into_iter()
        .map(|(conn, c)| json!({"connection": conn, "name": c.name, "pid": c.pid}))
        .collect()
}

/// The whole status document.
pub fn status_json(app: &App) -> Value {
    let s = &app.state;
    json!({
        "version": crate::services::control::DAEMON_VERSION,
        "pid": std::process::id(),
        "uptime_seconds": s.started.elapsed().as_secs_f64(),
        "http": { "address": app.addr.to_string(), "requests": app.stats.total() },
        "connections": {
            "open": s.open_connections(),
            "total": s.total_connections.load(std::sync::atomic::Ordering::Relaxed),
        },
        "socket_requests": socket_requests(app),
        "clients": clients_json(app),
        "namespaces": app.namespaces.iter().map(|n| namespace_json(n)).collect::<Vec<_>>(),
    })
}

fn json_response(text: String) -> Response {
    let mut r = text.into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

pub async fn status(State(app): State<Arc<App>>) -> Response {
    json_response(status_json(&app).to_string())
}

pub async fn history(State(app): State<Arc<App>>) -> Response {
    json_response(app.history.to_json())
}
