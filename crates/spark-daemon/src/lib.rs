//! `sparkd`, the SparkDaemon server.
//!
//! Layout (see `docs/ARCHITECTURE.md`):
//! - [`config`]: flags and resolved configuration;
//! - [`server`]: socket ownership (lock file, stale socket), accept loop, per-connection dispatch,
//!   shutdown, idle and sponsor lifetime rules;
//! - [`conn`]: one connection's framing (buffered reads with a frame deadline, batched writes);
//! - [`registry`]: the [`registry::Service`] trait and the id → service table;
//! - [`services`]: one folder per service (`control`, `shader`, `asset`), plus the blob-cache logic the
//!   two caches share.

pub mod config;
pub mod conn;
pub mod registry;
pub mod server;
pub mod services;

use std::sync::Arc;

use anyhow::Context;
use tracing::info;

pub use config::{Args, Config};

/// Opens the stores and builds the service table. Adding a service is one `register` line here.
pub fn build_registry(
    config: &Config,
) -> anyhow::Result<(registry::Registry, Vec<spark_store::Store>)> {
    let mut reg = registry::Registry::default();
    reg.register(Arc::new(services::control::ControlService));
    let shader = open_store(&config.shader)?;
    let asset = open_store(&config.asset)?;
    reg.register(Arc::new(services::shader::shader_service(shader.clone())));
    reg.register(Arc::new(services::asset::asset_service(asset.clone())));
    Ok((reg, vec![shader, asset]))
}

fn open_store(cfg: &spark_store::StoreConfig) -> anyhow::Result<spark_store::Store> {
    let (store, rep) = spark_store::Store::open(cfg.clone()).with_context(|| {
        format!(
            "cannot open the {} cache{}",
            cfg.name,
            cfg.dir
                .as_ref()
                .map(|d| format!(" in {}", d.display()))
                .unwrap_or_default()
        )
    })?;
    let mb = |b: u64| b / (1024 * 1024);
    info!(
        "{} cache: {} entries loaded ({} MiB on disk) in {:.1} ms; dir {}; memory budget {} MiB; disk budget {}{}",
        cfg.name,
        rep.entries,
        mb(rep.bytes_on_disk),
        rep.index_load_time.as_secs_f64() * 1000.0,
        cfg.dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "none (memory only)".into()),
        mb(cfg.memory_budget),
        if cfg.disk_budget == 0 {
            "unbounded".to_string()
        } else {
            format!("{} MiB", mb(cfg.disk_budget))
        },
        if rep.trimmed_at_start > 0 {
            format!("; {} evicted to fit the budget", rep.trimmed_at_start)
        } else {
            String::new()
        },
    );
    Ok(store)
}

/// Runs a daemon with `config` to completion on a new runtime: takes the socket, opens the stores, serves.
pub fn run(config: Config) -> Result<(), RunError> {
    let ownership =
        server::take_socket(&config.socket, config.default_socket).map_err(|e| match e {
            server::OwnershipError::AlreadyRunning { .. } => {
                RunError::AlreadyRunning(e.to_string())
            }
            server::OwnershipError::Other(e) => RunError::Fatal(e),
        })?;
    let (registry, stores) = build_registry(&config).map_err(RunError::Fatal)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sparkd")
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()
        .map_err(|e| RunError::Fatal(e.into()))?;
    let state = server::ServerState::new(registry);
    let result = rt.block_on(async move {
        for s in stores {
            // Files of earlier runs are cleaned while we serve; the sweep never touches this run's files.
            std::thread::Builder::new()
                .name("sparkd-sweep".into())
                .spawn(move || {
                    s.sweep();
                })
                .ok();
        }
        server::run(config, ownership, state).await
    });
    rt.shutdown_timeout(std::time::Duration::from_millis(50));
    result.map_err(RunError::Fatal)
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another daemon owns the socket: exit status 3.
    #[error("{0}")]
    AlreadyRunning(String),
    #[error("{0:#}")]
    Fatal(anyhow::Error),
}
