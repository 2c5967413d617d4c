//! The seam between the framing code and the operating system's local sockets.
//!
//! The framing code only ever sees a [`Transport`]: a byte stream that can write without raising
//! signals and can wait a bounded time for input. A [`Connector`] opens one from a socket path. On Unix
//! that is a Unix-domain socket (`unix`); on Windows a named pipe, `\\.\pipe\NAME` (`windows`). On any
//! other platform [`DefaultConnector`] fails every connect with an `Unsupported` error that says so, so an
//! engine there runs as if no daemon were installed.

use std::io::{self, IoSlice, Read};
use std::path::Path;
use std::time::Duration;

#[cfg(unix)]
pub mod unix;
#[cfg(windows)]
pub mod windows;

/// One connected byte stream to the daemon.
pub trait Transport: Read + Send {
    /// Writes all of `buf`. A peer that went away is an `Err` (EPIPE), never a signal: a C or C++ host
    /// that does not ignore SIGPIPE must survive a daemon dying mid-session.
    fn send_all(&mut self, buf: &[u8]) -> io::Result<()>;

    /// [`Self::send_all`] for several buffers, in as few system calls as the platform allows.
    fn send_all_vectored(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<()>;

    /// The longest any one read or write may block; `None` = forever.
    fn set_io_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Reads what has arrived into `buf`, waiting at most `wait` (zero: do not wait). `Ok(None)` when
    /// nothing arrived in time; `Ok(Some(0))` at end of stream. Later reads and writes are bounded by the
    /// I/O timeout set with [`Self::set_io_timeout`] again.
    fn read_within(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>>;
}

/// Opens transports to a daemon's socket path.
pub trait Connector: Send + Sync {
    /// Connects to the daemon at `path`. `NotFound` / `ConnectionRefused` mean no daemon listens there.
    fn connect(&self, path: &Path) -> io::Result<Box<dyn Transport>>;
}

/// The platform's transport: Unix-domain sockets on Unix, named pipes on Windows; elsewhere an
/// `Unsupported` error.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultConnector;

/// What [`DefaultConnector`] reports where there is no transport yet.
pub const NO_TRANSPORT_MESSAGE: &str = "sparkd transport: this platform has neither Unix sockets nor \
     Windows named pipes; running without the daemon";

impl Connector for DefaultConnector {
    #[cfg(unix)]
    fn connect(&self, path: &Path) -> io::Result<Box<dyn Transport>> {
        unix::UnixConnector.connect(path)
    }

    #[cfg(windows)]
    fn connect(&self, path: &Path) -> io::Result<Box<dyn Transport>> {
        windows::PipeConnector.connect(path)
    }

    #[cfg(not(any(unix, windows)))]
    fn connect(&self, _path: &Path) -> io::Result<Box<dyn Transport>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            NO_TRANSPORT_MESSAGE,
        ))
    }
}
