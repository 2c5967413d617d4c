use std::path::PathBuf;

use spark_proto::{ErrorCode, ErrorResponse, ProtoError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing listens at the socket path: the daemon is not running.
    #[error(
        "sparkd is not running at {path} ({source}); start it with `sparkd`, or enable auto-spawn"
    )]
    NotRunning {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The connection failed or timed out mid-exchange; the client must reconnect.
    #[error("connection to sparkd failed: {0}")]
    Transport(#[source] std::io::Error),
    /// The daemon sent something this client cannot make sense of.
    #[error("protocol error talking to sparkd: {0}")]
    Protocol(String),
    /// The daemon answered with an ErrorResponse.
    #[error("sparkd: {0}")]
    Daemon(ErrorResponse),
    /// A local reader or writer the caller handed in failed (a file, stdout): neither the daemon nor the
    /// connection is at fault. A stream it interrupted leaves the connection unusable.
    #[error("local I/O failed while talking to sparkd: {0}")]
    Local(#[source] std::io::Error),
}

impl Error {
    /// The daemon's error code, for [`Error::Daemon`].
    pub fn daemon_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Daemon(e) => Some(e.kind()),
            _ => None,
        }
    }

    /// An ErrorResponse, or the caller's own I/O: the connection itself is not the problem, so a reconnect
    /// and retry would fail the same way.
    pub(crate) fn blames_the_caller_or_daemon(&self) -> bool {
        matches!(self, Error::Daemon(_) | Error::Local(_))
    }

    /// True when the daemon is absent or the connection broke: callers fall back to working without it.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::NotRunning { .. } | Error::Transport(_))
    }
}

impl From<ProtoError> for Error {
    fn from(e: ProtoError) -> Self {
        Error::Protocol(e.to_string())
    }
}
