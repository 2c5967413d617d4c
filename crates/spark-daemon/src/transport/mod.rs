//! The transport seam: a listener that yields connections (a read half, a write half) and what the platform
//! says about the peer. The connection layer is generic over it; everything platform-specific about where
//! clients connect lives in one file per transport.
//!
//! - [`unix`]: a Unix domain socket guarded by a lock file, peers checked by uid (`SO_PEERCRED`);
//!   `activation`: the same socket when a service manager created it and passed it (`LISTEN_FDS`).
//! - `windows`: a named pipe with an owner-only security descriptor, guarded by a `LockFileEx` lock, peers
//!   checked by user SID.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::registry::Peer;

#[cfg(unix)]
pub mod unix;
#[cfg(windows)]
pub mod windows;

#[cfg(unix)]
pub mod activation;

/// One accepted connection.
pub struct Accepted<R, W> {
    pub read: R,
    pub write: W,
    pub peer: Peer,
    /// Why this peer may not talk to the daemon, if it may not (another user). The connection layer answers
    /// with `PermissionDenied` and closes.
    pub refused: Option<String>,
}

/// Where clients connect.
pub trait Listener: Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;

    /// The next connection. Errors for which [`Listener::is_transient`] is true are retried after a pause.
    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<Accepted<Self::Read, Self::Write>>> + Send;

    /// Whether an accept error is worth retrying (out of fds, an aborted handshake).
    fn is_transient(&self, e: &std::io::Error) -> bool;

    /// Where it listens, for logs.
    fn describe(&self) -> String;

    /// Stops listening so new clients see "not running" at once (removes the socket file).
    fn close(&mut self);
}
