//! The optional HTTP front (`--http 127.0.0.1:PORT`): Prometheus metrics, a JSON status, a live dashboard, and
//! ccache's and Bazel's HTTP caches over the same namespaces the socket protocol uses. See `docs/http.md`.
//!
//! - [`server`]: binding (loopback only unless `--http-allow-remote`), the router, shutdown;
//! - [`auth`]: the per-user token file and the check every request passes (Bearer, Basic, or `?token=` for
//!   the dashboard's own pages);
//! - [`metrics`]: `/metrics`, derived at scrape time from the namespaces' and the connection layer's counters;
//! - [`status`]: `/status` JSON and the history of samples the dashboard charts;
//! - [`dashboard`]: `/`, its embedded assets and the server-sent events that keep it live;
//! - [`blobs`]: streamed bodies in and out of a namespace, shared by [`ccache`] and [`bazel`].
//!
//! It runs on the daemon's runtime and only calls the namespace layer, whose disk work runs on the blocking
//! pool, so it never holds up the socket protocol.

pub mod auth;
pub mod bazel;
pub mod blobs;
pub mod ccache;
pub mod dashboard;
pub mod metrics;
pub mod server;
pub mod status;

use std::net::SocketAddr;

use anyhow::{Context, bail};

pub use server::{HttpServer, bind};

/// The namespaces only the HTTP front serves (declared in `namespaces/decl.rs`): without `--http` they get no
/// share of the memory budget.
pub const NAMESPACES: &[&str] = &["ccache", "bazel-ac", "bazel-cas"];

/// Where the HTTP front listens.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
}

impl HttpConfig {
    /// Parses `--http ADDR`; a non-loopback address is refused unless `allow_remote`.
    pub fn parse(addr: &str, allow_remote: bool) -> anyhow::Result<HttpConfig> {
        let addr: SocketAddr = addr.parse().with_context(|| {
            format!("--http takes an IP address and port such as 127.0.0.1:8420, not '{addr}'")
        })?;
        if !addr.ip().is_loopback() && !allow_remote {
            bail!(
                "--http {addr}: refusing to serve HTTP on a non-loopback address; every user who can reach it \
                 could try the token. Use 127.0.0.1:{port} (or [::1]:{port}), or add --http-allow-remote if \
                 you really mean it",
                port = addr.port()
            );
        }
        Ok(HttpConfig { addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_allowed() {
        assert!(HttpConfig::parse("127.0.0.1:8420", false).is_ok());
        assert!(HttpConfig::parse("[::1]:8420", false).is_ok());
        let e = HttpConfig::parse("0.0.0.0:8420", false).unwrap_err();
        assert!(e.to_string().contains("--http-allow-remote"), "{e}");
        assert!(HttpConfig::parse("0.0.0.0:8420", true).is_ok());
        let e = HttpConfig::parse("localhost", false).unwrap_err();
        assert!(e.to_string().contains("IP address and port"), "{e}");
    }
}
