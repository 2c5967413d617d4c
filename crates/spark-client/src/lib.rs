//! Blocking Rust client for `sparkd`.
//!
//! Layers, each knowing only the ones below it: `transport` (bytes to the daemon) → `conn` (framing,
//! events, one-way replies) → [`Client`] (typed requests) → [`CacheClient`] (typed caches) →
//! [`lifecycle`] and [`tiered`] (engine helpers).
//!
//! - [`Client`]: one connection, usable from any thread (`Send + Sync`; one exchange at a time holds its
//!   lock). Hello on connect, typed requests, pipelining, one-way sends.
//! - [`CacheClient`]: the typed Shader and Asset caches ([`Client::shader`], [`Client::asset`]), with large
//!   blobs streamed transparently.
//! - Shader compilation in the daemon: [`Client::compile`], [`Client::compile_each`] (results as they
//!   complete), [`Client::compile_stats`].
//! - [`Event`]s the daemon sends on its own ([`Client::events`], [`Client::next_event`]).
//! - [`Error`] tells apart a daemon that is not running, a transport failure, a protocol violation, an
//!   ErrorResponse from the daemon and a failing local reader or writer.
//! - [`transport`]: the seam between framing and the OS (Unix sockets, Windows named pipes).
//! - [`DaemonConnection`] and [`DaemonConfig`]: the engine lifecycle — the process-wide connection,
//!   `SPARK_DAEMON_*` settings, a free [`try_connect`], auto-spawn, reconnect after a daemon restart.
//! - [`TieredShaderCache`]: the engine's shader disk cache with the daemon in front of it, and
//!   [`TieredShaderCache::get_or_compile`]: daemon compile first, else local cache, else naga in process.

mod cache;
mod client;
pub mod collab;
mod compile;
mod conn;
mod error;
mod event;
pub mod import;
pub mod lifecycle;
mod platform;
mod pool;
pub mod tiered;
mod tiered_compile;
pub mod transport;
pub mod watch;

pub use cache::{AssetCache, CacheClient, ShaderCache};
pub use client::{Client, ClientOptions};
pub use collab::{CollabClient, CollabEvent, JoinOptions, LockOutcome};
pub use error::{Error, Result};
pub use event::{DEFAULT_EVENT_QUEUE, Event, EventReceiver};
pub use import::{ImportSpec, Imported, asset_invalidated};
pub use lifecycle::{DaemonConfig, DaemonConnection, SpawnError, connect_or_spawn, try_connect};
pub use spark_proto;
pub use spark_proto::cache::{AssetKey, CacheStats, ShaderKey};
pub use spark_proto::compile::{
    CompileRequest, CompileResult, CompileStats, Diagnostic, Language, Origin, ResultStatus, Stage,
    Target,
};
pub use spark_proto::control::{HelloResponse, NamespaceStats, StatsResponse, VersionResponse};
pub use tiered::{
    CodecError, CompiledShader, LocalShaderCache, ShaderReflection, TieredShaderCache, TieredStats,
};
pub use tiered_compile::{CompileSource, TieredCompile};
pub use watch::{Clock, WatchClient, WatchEvent, WatchSpec};

/// The default socket path for this user (same rule as the daemon's): on Windows the pipe
/// `\\.\pipe\spark-<SID>-sparkd`.
#[cfg(windows)]
pub fn default_socket_path() -> std::path::PathBuf {
    spark_platform::windows::default_pipe()
}

/// The default socket path for this user (same rule as the daemon's).
#[cfg(not(windows))]
pub fn default_socket_path() -> std::path::PathBuf {
    spark_proto::default_socket_path(
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
        platform::current_uid(),
    )
}
