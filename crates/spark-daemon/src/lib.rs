//! `sparkd`, the SparkDaemon server.
//!
//! Layout (see `docs/ARCHITECTURE.md`):
//! - [`config`]: flags and the resolved configuration, including the namespace table's budgets;
//! - [`transport`]: where clients connect (a Unix socket; a named pipe on Windows) behind the [`transport::Listener`] seam;
//! - [`server`]: the accept loop, shutdown and drain; [`lifetime`]: idle and sponsor exit rules;
//! - [`conn`]: one connection — a reader task, a writer task, replies in request order, events between them;
//! - [`events`]: the per-connection event queue services push server-initiated frames into;
//! - [`registry`]: the [`registry::Service`] trait, what handlers get and return, the id → service table;
//! - [`namespaces`]: the named stores every front end uses, with single-flight fills;
//! - [`services`]: one folder per service (`control`, `shader`, `asset`, `watch`);
//! - [`services`]: one folder per service (`control`, `shader`, `asset`, `compile`);
//! - [`state`]: what every connection shares; [`platform`]: process liveness and signals;
//! - [`team`]: a namespace's upstream (Redis, S3) with read-through, write-behind and a circuit breaker.

pub mod config;
pub mod conn;
pub mod events;
pub mod http;
pub mod lifetime;
pub mod namespaces;
pub mod platform;
pub mod registry;
pub mod server;
pub mod services;
pub mod state;
pub mod team;
pub mod transport;

use std::sync::Arc;

pub use config::{Args, Config};
use namespaces::Namespaces;

/// Builds the service table over the namespaces. Adding a service is one `register` line here.
pub fn build_registry(namespaces: &Arc<Namespaces>, config: &Config) -> registry::Registry {
    let mut reg = registry::Registry::default();
    reg.register(Arc::new(services::shader::shader_service(
        namespaces.expect("shader"),
    )));
    let watch = Arc::new(services::watch::WatchService::new(config.watch));
    reg.register(Arc::new(services::asset::asset_service(
        namespaces.expect("asset"),
        watch.shared(),
    )));
    reg.register(watch);
    reg.register(Arc::new(services::compile::CompileService::new(
        namespaces.expect("compile"),
        &config.compile,
    )));
    reg.register(Arc::new(services::collab::CollabService::new(
        config.collab.clone(),
    )));
    #[cfg(feature = "test-services")]
    services::testing::register_if_asked(&mut reg);
    // Control reports every other service, so it is registered last.
    reg.register(Arc::new(services::control::ControlService::new(
        reg.ids(),
        reg.capabilities(),
        namespaces.clone(),
    )));
    reg
}

/// Runs a daemon with `config` to completion on a new runtime: takes the socket, opens the stores, serves.
#[cfg(any(unix, windows))]
pub fn run(config: Config) -> Result<(), RunError> {
    #[cfg(unix)]
    use transport::unix::{
        OwnershipError, UnixTransport as PlatformTransport, adopt_socket, take_socket,
    };
    #[cfg(windows)]
    use transport::windows::{OwnershipError, PipeTransport as PlatformTransport, take_socket};
    // First, while this is the only thread: it edits the environment (LISTEN_FDS).
    #[cfg(unix)]
    let passed = transport::activation::passed_listener().map_err(RunError::Fatal)?;
    #[cfg(unix)]
    let ownership = match &passed {
        Some((_, path)) => adopt_socket(path),
        None => take_socket(&config.socket, config.default_socket),
    };
    #[cfg(windows)]
    let ownership = take_socket(&config.socket, config.default_socket);
    let ownership = ownership.map_err(|e| match e {
        OwnershipError::Other(e) => RunError::Fatal(e),
        e => RunError::AlreadyRunning(e.to_string()),
    })?;
    let namespaces = Arc::new(Namespaces::open(&config.namespaces).map_err(RunError::Fatal)?);
    let registry = Arc::new(build_registry(&namespaces, &config));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sparkd")
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()
        .map_err(|e| RunError::Fatal(e.into()))?;
    let env = Arc::new(conn::ConnEnv {
        state: Arc::new(state::ServerState::default()),
        registry,
        frame_timeout: config.frame_timeout,
    });
    let result = rt.block_on(async {
        for ns in namespaces.iter() {
            // Files of earlier runs are cleaned while we serve; the sweep never touches this run's files.
            let store = ns.store().clone();
            std::thread::Builder::new()
                .name("sparkd-sweep".into())
                .spawn(move || {
                    store.sweep();
                })
                .ok();
        }
        // HTTP is bound before the socket: a daemon that answers on its socket answers HTTP too.
        if let Some(h) = &config.http {
            let token = http::auth::token_path(&config.socket);
            http::bind(h, &token, env.clone(), namespaces.clone())
                .await
                .map_err(RunError::Fatal)?
                .spawn();
        }
        team::attach(&namespaces, &config.team);
        #[cfg(unix)]
        let listener = match passed {
            Some((l, _)) => PlatformTransport::adopt(l, ownership).map_err(bind_error)?,
            None => PlatformTransport::bind(ownership).map_err(bind_error)?,
        };
        #[cfg(windows)]
        let listener = PlatformTransport::bind(ownership).map_err(bind_error)?;
        server::run(listener, env, &config)
            .await
            .map_err(RunError::Fatal)
    });
    rt.shutdown_timeout(std::time::Duration::from_millis(50));
    result
}

#[cfg(unix)]
fn bind_error(e: anyhow::Error) -> RunError {
    RunError::Fatal(e)
}

/// A pipe name held by another process is "already running" (exit status 3), like a held lock.
#[cfg(windows)]
fn bind_error(e: transport::windows::OwnershipError) -> RunError {
    use transport::windows::OwnershipError;
    match e {
        OwnershipError::Other(e) => RunError::Fatal(e),
        e => RunError::AlreadyRunning(e.to_string()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another daemon owns the socket: exit status 3.
    #[error("{0}")]
    AlreadyRunning(String),
    #[error("{0:#}")]
    Fatal(anyhow::Error),
}
