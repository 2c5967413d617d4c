//! The server loop: accept connections from a transport until shutdown, then drain.
//!
//! Request path (see `docs/ARCHITECTURE.md`): [`crate::transport::Listener::accept`] → [`crate::conn::serve`]
//! (reader → handler → writer) → the registered [`crate::registry::Service`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::config::Config;
use crate::conn::{self, ConnEnv};
use crate::transport::Listener;

/// How long shutdown waits for in-flight requests before exiting anyway (the promise is 500 ms in total).
const DRAIN_LIMIT: Duration = Duration::from_millis(400);

/// Serves `listener` until shutdown. Returns an error (non-zero exit) on a fatal accept failure.
pub async fn run<L: Listener>(
    mut listener: L,
    env: Arc<ConnEnv>,
    config: &Config,
) -> anyhow::Result<()> {
    let state = env.state.clone();
    info!(
        socket = %listener.describe(),
        pid = std::process::id(),
        services = ?env.registry.ids(),
        "sparkd ready"
    );
    crate::platform::spawn_signal_handlers(&state);
    crate::lifetime::spawn_monitor(&state, config);
    for svc in env.registry.services() {
        svc.clone().start();
    }
    let result = accept_loop(&mut listener, &env).await;
    // New clients must see "not running" at once, not a socket that never answers.
    listener.close();
    state.request_shutdown("stopping");
    let deadline = Instant::now() + DRAIN_LIMIT;
    while state.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let left = state.open_connections();
    if left > 0 {
        warn!("{left} connection(s) still busy at exit");
    }
    result
}

async fn accept_loop<L: Listener>(listener: &mut L, env: &Arc<ConnEnv>) -> anyhow::Result<()> {
    let state = env.state.clone();
    let mut transient_errors = 0u32;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = state.shutting_down() => return Ok(()),
        };
        match accepted {
            Ok(c) => {
                transient_errors = 0;
                tokio::spawn(conn::serve(c, env.clone()));
            }
            Err(e) if listener.is_transient(&e) => {
                // Out of fds or an aborted handshake: back off instead of spinning, keep serving.
                transient_errors += 1;
                warn!("accept failed (transient, attempt {transient_errors}): {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                error!("accept failed fatally: {e}");
                return Err(anyhow::Error::new(e).context("accept on the daemon socket failed"));
            }
        }
    }
}
