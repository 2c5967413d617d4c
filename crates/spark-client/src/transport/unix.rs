//! Unix-domain sockets, written with `MSG_NOSIGNAL`.

use std::io::{self, IoSlice, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Connector, Transport};

/// Connects with [`UnixStream::connect`].
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixConnector;

impl Connector for UnixConnector {
    fn connect(&self, path: &Path) -> io::Result<Box<dyn Transport>> {
        Ok(Box::new(UnixTransport::new(UnixStream::connect(path)?)))
    }
}

/// A connected Unix socket. It remembers its I/O timeout, and the read timeout the socket has now: a bounded
/// wait for events sets the socket's timeout only when it differs, and a call's read puts the I/O timeout
/// back only then, so a subscriber's steady stream of waits costs one system call per read, not three.
#[derive(Debug)]
pub struct UnixTransport {
    stream: UnixStream,
    io_timeout: Option<Duration>,
    /// The socket's read timeout (`SO_RCVTIMEO`) as last set.
    read_timeout: Option<Duration>,
}

impl UnixTransport {
    /// Wraps a socket connected some other way (a socketpair in tests, an inherited descriptor).
    pub fn new(stream: UnixStream) -> Self {
        UnixTransport {
            stream,
            io_timeout: None,
            read_timeout: None,
        }
    }

    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        if self.read_timeout != t {
            self.stream.set_read_timeout(t)?;
            self.read_timeout = t;
        }
        Ok(())
    }

    /// One read bounded by `wait` (not zero); `Ok(None)` when it timed out.
    fn read_bounded(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
        // Whole milliseconds, rounded down: successive waits of nearly the same length (each
        // `next_event(30 s)` call) then ask for the same timeout and need no `setsockopt`. The caller
        // retries until its deadline, so a wait cut short by the rounding is not a timeout.
        let ms = Duration::from_millis(wait.as_millis() as u64);
        let t = if ms.is_zero() { wait } else { ms };
        self.set_read_timeout(Some(t))?;
        match self.stream.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Read for UnixTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A bounded wait may have left its own timeout on the socket; calls are bounded by the I/O timeout.
        let io_timeout = self.io_timeout;
        self.set_read_timeout(io_timeout)?;
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
        self.read_timeout = timeout;
        Ok(())
    }

    fn read_within(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
        // What has already arrived is taken with one non-blocking `recv`, whatever the socket's timeout (and a
        // zero wait must not sleep even a millisecond: an engine polls once per frame).
        match rustix::net::recv(&self.stream, &mut *buf, rustix::net::RecvFlags::DONTWAIT) {
            Ok((n, _)) => return Ok(Some(n)),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.read_bounded(buf, left) {
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A transport on one end of a socket pair, a handle on the same socket to look at its read timeout, and
    /// the other end.
    fn pair(io_timeout: Duration) -> (UnixTransport, UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let probe = a.try_clone().unwrap();
        let mut t = UnixTransport::new(a);
        t.set_io_timeout(Some(io_timeout)).unwrap();
        (t, probe, b)
    }

    #[test]
    fn a_zero_wait_does_not_block_or_touch_the_timeout() {
        let io = Duration::from_secs(7);
        let (mut t, probe, mut peer) = pair(io);
        let mut buf = [0u8; 16];
        assert_eq!(t.read_within(&mut buf, Duration::ZERO).unwrap(), None);
        assert_eq!(probe.read_timeout().unwrap(), Some(io));
        peer.write_all(b"abc").unwrap();
        assert_eq!(t.read_within(&mut buf, Duration::ZERO).unwrap(), Some(3));
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(probe.read_timeout().unwrap(), Some(io));
    }

    #[test]
    fn a_bounded_wait_times_out_and_a_later_call_read_is_bounded_by_the_io_timeout_again() {
        let io = Duration::from_secs(7);
        let (mut t, probe, mut peer) = pair(io);
        let mut buf = [0u8; 16];
        let wait = Duration::from_millis(30);
        assert_eq!(t.read_within(&mut buf, wait).unwrap(), None);
        let during = probe
            .read_timeout()
            .unwrap()
            .expect("a bounded wait sets a timeout");
        // The kernel keeps timeouts in scheduler ticks, so it reads back rounded up to one.
        assert!(
            during < Duration::from_secs(1),
            "{during:?} for a {wait:?} wait"
        );
        // Data already there is taken without changing the timeout left by the wait.
        peer.write_all(b"x").unwrap();
        assert_eq!(
            t.read_within(&mut buf, Duration::from_secs(30)).unwrap(),
            Some(1)
        );
        assert_eq!(probe.read_timeout().unwrap(), Some(during));
        // A call's read puts the I/O timeout back.
        peer.write_all(b"yz").unwrap();
        assert_eq!(t.read(&mut buf).unwrap(), 2);
        assert_eq!(probe.read_timeout().unwrap(), Some(io));
        drop(peer);
        assert_eq!(
            t.read_within(&mut buf, wait).unwrap(),
            Some(0),
            "end of stream"
        );
    }
}
