//! Unix-domain sockets, written with `MSG_NOSIGNAL`.

use std::io::{self, IoSlice, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{Connector, Transport};

/// Connects with [`UnixStream::connect`].
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixConnector;

impl Connector for UnixConnector {
    fn connect(&self, path: &Path) -> io::Result<Box<dyn Transport>> {
        Ok(Box::new(UnixTransport {
            stream: UnixStream::connect(path)?,
            io_timeout: None,
        }))
    }
}

/// A connected Unix socket; remembers its I/O timeout so a bounded wait can restore it.
#[derive(Debug)]
pub struct UnixTransport {
    stream: UnixStream,
    io_timeout: Option<Duration>,
}

impl UnixTransport {
    /// Wraps a socket connected some other way (a socketpair in tests, an inherited descriptor).
    pub fn new(stream: UnixStream) -> Self {
        UnixTransport {
            stream,
            io_timeout: None,
        }
    }
}

impl Read for UnixTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A signal delivered to the host (a child process of its exiting, a profiler) interrupts the read; it
        // is not the connection's failure.
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl Transport for UnixTransport {
    /// `send` with MSG_NOSIGNAL rather than `write`: see the trait for why.
    fn send_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match rustix::net::send(&self.stream, buf, rustix::net::SendFlags::NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// One `sendmsg` per round, with MSG_NOSIGNAL for the same reason.
    fn send_all_vectored(&mut self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        while !bufs.is_empty() {
            let mut no_ancillary = rustix::net::SendAncillaryBuffer::default();
            let flags = rustix::net::SendFlags::NOSIGNAL;
            match rustix::net::sendmsg(&self.stream, bufs, &mut no_ancillary, flags) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn set_io_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)?;
        self.io_timeout = timeout;
        Ok(())
    }

    fn read_within(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
        // A zero wait is a non-blocking read (std refuses a zero timeout, and an engine polling once per
        // frame must not sleep even a millisecond).
        let r = if wait.is_zero() {
            self.stream.set_nonblocking(true)?;
            let r = self.stream.read(buf);
            self.stream.set_nonblocking(false)?;
            r
        } else {
            self.stream.set_read_timeout(Some(wait))?;
            let r = self.stream.read(buf);
            self.stream.set_read_timeout(self.io_timeout)?;
            r
        };
        match r {
            Ok(n) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
