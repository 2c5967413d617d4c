//! Windows named pipes, opened as files with `std` and read through `PeekNamedPipe` for bounded waits.
//!
//! The pipe is a synchronous handle: reads and writes block. Waiting at most some time for input (the I/O
//! timeout, [`Transport::read_within`]) polls `PeekNamedPipe` — spinning briefly, then in 1 ms sleeps — and
//! reads only once bytes are there, so a read never blocks past its deadline. Writes have no timeout: the
//! daemon always drains its pipes (it reads ahead up to 32 requests), so a write blocks only while the daemon
//! itself is stopped, as a Unix socket's would once its buffer fills.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::windows::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use spark_platform::windows as win;

use super::{Connector, Transport};

/// `ERROR_PIPE_BUSY`: every instance of the pipe is in use right now; another will be free soon.
const ERROR_PIPE_BUSY: i32 = 231;
/// `ERROR_BROKEN_PIPE`: the daemon closed its end.
const ERROR_BROKEN_PIPE: i32 = 109;
/// `SECURITY_IDENTIFICATION` (as a `SECURITY_SQOS` flag): the server may learn who we are but never act as
/// us, so a process squatting the pipe name cannot impersonate the client.
const SECURITY_IDENTIFICATION: u32 = 1 << 16;
/// How long a connect keeps retrying while every pipe instance is busy (a burst of clients).
pub const BUSY_WAIT: Duration = Duration::from_secs(2);
/// Writes of at most this many bytes in total are copied into one buffer and sent with one `WriteFile`.
const COALESCE: usize = 64 * 1024;

/// Connects to `\\.\pipe\NAME`: a missing pipe is `NotFound` (no daemon) at once; a busy one is retried
/// for up to [`BUSY_WAIT`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PipeConnector;

impl Connector for PipeConnector {
    fn connect(&self, path: &Path) -> io::Result<Box<dyn Transport>> {
        if !spark_platform::is_pipe_path(path) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a named pipe path (\\\\.\\pipe\\NAME); sparkd on Windows listens on a pipe",
                    path.display()
                ),
            ));
        }
        let deadline = Instant::now() + BUSY_WAIT;
        loop {
            let r = OpenOptions::new()
                .read(true)
                .write(true)
                .security_qos_flags(SECURITY_IDENTIFICATION)
                .open(path);
            match r {
                Ok(file) => {
                    return Ok(Box::new(PipeTransport {
                        file,
                        io_timeout: None,
                    }));
                }
                Err(e)
                    if e.raw_os_error() == Some(ERROR_PIPE_BUSY) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A connected pipe; remembers its I/O timeout.
#[derive(Debug)]
pub struct PipeTransport {
    file: File,
    io_timeout: Option<Duration>,
}

impl PipeTransport {
    /// Waits until a read would not block (bytes, or the daemon's end closed): `Ok(false)` when `wait`
    /// passed first.
    fn wait_readable(&self, wait: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + wait;
        let mut polls = 0u32;
        loop {
            match win::pipe_bytes_available(&self.file) {
                Ok(0) => {}
                Ok(_) => return Ok(true),
                // The read that follows returns end of stream.
                Err(e) if e.raw_os_error() == Some(ERROR_BROKEN_PIPE) => return Ok(true),
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // A reply usually arrives within microseconds: spin a little before sleeping.
            polls += 1;
            if polls < 200 {
                std::thread::yield_now();
            } else {
                std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
            }
        }
    }
}

impl Read for PipeTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(t) = self.io_timeout
            && !self.wait_readable(t)?
        {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no reply from sparkd within {t:?}"),
            ));
        }
        // std reports ERROR_BROKEN_PIPE as end of stream.
        self.file.read(buf)
    }
}

impl Transport for PipeTransport {
    /// Windows has no SIGPIPE: a closed pipe is an error from WriteFile, which is all the trait asks.
    fn send_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn send_all_vectored(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total <= COALESCE {
            let mut one = Vec::with_capacity(total);
            for b in bufs.iter() {
                one.extend_from_slice(b);
            }
            return self.file.write_all(&one);
        }
        for b in bufs.iter() {
            self.file.write_all(b)?;
        }
        Ok(())
    }

    fn set_io_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.io_timeout = timeout;
        Ok(())
    }

    fn read_within(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
        if !self.wait_readable(wait)? {
            return Ok(None);
        }
        self.file.read(buf).map(Some)
    }
}
