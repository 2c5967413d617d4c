//! Binding, routing and the gate every request passes (token check, request counters).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::auth::Token;
use super::metrics::HttpStats;
use super::status::History;
use super::{HttpConfig, bazel, ccache, dashboard, metrics, status};
use crate::namespaces::Namespaces;
use crate::state::ServerState;

/// What every HTTP handler shares.
pub struct App {
    pub state: Arc<ServerState>,
    /// The socket protocol's services (for their own counters in `/metrics`).
    pub registry: Arc<crate::registry::Registry>,
    pub namespaces: Arc<Namespaces>,
    pub token: Token,
    pub stats: HttpStats,
    pub history: History,
    pub addr: SocketAddr,
    pub started: Instant,
}

/// A bound HTTP listener, not serving yet (bound before the socket, so a daemon that answers on its socket
/// already answers HTTP).
pub struct HttpServer {
    listener: TcpListener,
    app: Arc<App>,
}

/// Binds the configured address and loads (or creates) the token. Errors say what to change.
pub async fn bind(
    cfg: &HttpConfig,
    token_path: &std::path::Path,
    env: Arc<crate::conn::ConnEnv>,
    namespaces: Arc<Namespaces>,
) -> anyhow::Result<HttpServer> {
    let token = Token::load_or_create(token_path)?;
    let listener = TcpListener::bind(cfg.addr).await.with_context(|| {
        format!(
            "cannot listen for HTTP on {}; choose another address or port with --http",
            cfg.addr
        )
    })?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App {
        state: env.state.clone(),
        registry: env.registry.clone(),
        namespaces,
        token,
        stats: HttpStats::default(),
        history: History::default(),
        addr,
        started: Instant::now(),
    });
    Ok(HttpServer { listener, app })
}

impl HttpServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.app.addr
    }

    /// Serves until the daemon shuts down; the samples for the dashboard are taken meanwhile.
    pub fn spawn(self) {
        let HttpServer { listener, app } = self;
        info!(
            "HTTP on http://{} (token in {})",
            app.addr,
            app.token.path().display()
        );
        status::spawn_sampler(app.clone());
        let router = router(app.clone());
        let state = app.state.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { state.shutting_down().await });
            if let Err(e) = serve.await {
                warn!("the HTTP front stopped: {e}");
            }
        });
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/events", get(dashboard::events))
        .route("/api/history", get(status::history))
        .route("/status", get(status::status))
        .route("/metrics", get(metrics::metrics))
        .route(
            "/ccache/{*key}",
            get(ccache::get)
                .head(ccache::head)
                .put(ccache::put)
                .delete(ccache::delete),
        )
        .route(
            "/ac/{hash}",
            get(bazel::get_ac).head(bazel::head_ac).put(bazel::put_ac),
        )
        .route(
            "/cas/{hash}",
            get(bazel::get_cas)
                .head(bazel::head_cas)
                .put(bazel::put_cas),
        )
        .layer(middleware::from_fn_with_state(app.clone(), gate))
        .with_state(app)
}

/// The label a request is counted under, and whether it may carry the token in its query (the dashboard's
/// own routes: a browser's EventSource cannot send headers).
fn endpoint(path: &str) -> (&'static str, bool) {
    match path {
        "/" => ("dashboard", true),
        "/events" => ("events", true),
        "/api/history" => ("history", true),
        "/status" => ("status", true),
        "/metrics" => ("metrics", false),
        p if p.starts_with("/assets/") => ("assets", true),
        p if p.starts_with("/ccache/") => ("ccache", false),
        p if p.starts_with("/ac/") => ("bazel-ac", false),
        p if p.starts_with("/cas/") => ("bazel-cas", false),
        _ => ("other", false),
    }
}

/// Refuses a request without the token (401), and counts every request by endpoint, method and status.
async fn gate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let (ep, query_ok) = endpoint(req.uri().path());
    let method = req.method().clone();
    let bytes_in = super::blobs::content_length(req.headers()).unwrap_or(0);
    let resp = if app.token.admits(req.headers(), req.uri().query(), query_ok) {
        next.run(req).await
    } else {
        app.token.refusal()
    };
    let bytes_out = if method == axum::http::Method::HEAD {
        0
    } else {
        super::blobs::content_length(resp.headers()).unwrap_or(0)
    };
    app.stats.count(
        ep,
        method.as_str(),
        resp.status().as_u16(),
        bytes_in,
        bytes_out,
    );
    resp
}
