//! Blocking Rust client for `sparkd`.
//!
//! - [`Client`]: one connection, usable from any thread (`Send + Sync`; one exchange at a time holds its
//!   lock). Hello on connect, typed requests, pipelining, one-way sends.
//! - [`CacheClient`]: the typed Shader and Asset caches ([`Client::shader`], [`Client::asset`]), with large
//!   blobs streamed transparently.
//! - [`Error`] tells apart a daemon that is not running, a transport failure, a protocol violation and an
//!   ErrorResponse from the daemon.
//! - [`DaemonConnection`] and [`DaemonConfig`]: the engine lifecycle — the process-wide connection,
//!   `SPARK_DAEMON_*` settings, a free [`try_connect`], auto-spawn, reconnect after a daemon restart.
//! - [`TieredShaderCache`]: the engine's shader disk cache with the daemon in front of it.

mod cache;
mod conn;
mod error;
pub mod lifecycle;
pub mod tiered;

pub use cache::{AssetCache, CacheClient, ShaderCache};
pub use conn::{Client, ClientOptions};
pub use error::{Error, Result};
pub use lifecycle::{DaemonConfig, DaemonConnection, SpawnError, connect_or_spawn, try_connect};
pub use spark_proto;
pub use spark_proto::cache::{AssetKey, CacheStats, ShaderKey};
pub use spark_proto::control::{HelloResponse, StatsResponse, VersionResponse};
pub use tiered::{
    CodecError, CompiledShader, LocalShaderCache, ShaderReflection, TieredShaderCache, TieredStats,
};

/// The default socket path for this user (same rule as the daemon's).
pub fn default_socket_path() -> std::path::PathBuf {
    spark_proto::default_socket_path(
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
        rustix::process::geteuid().as_raw(),
    )
}
