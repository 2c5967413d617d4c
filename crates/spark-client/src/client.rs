//! [`Client`]: one connection to sparkd behind a mutex, the typed Control requests, and events.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spark_proto::control::*;
use spark_proto::{Frame, Message, PROTOCOL_VERSION, service};

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::event::{DEFAULT_EVENT_QUEUE, Event, EventQueue, EventReceiver};
use crate::transport::{Connector, DefaultConnector};

/// While [`Client::next_event`] reads an idle socket it holds the connection for at most this long at a
/// time, so a request from another thread waits no longer than this behind it.
const EVENT_WAIT_SLICE: Duration = Duration::from_millis(5);

/// How a client introduces itself and how long it waits.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Shown in the daemon's logs.
    pub client_name: String,
    /// Longest wait for any single read or write; `None` = forever.
    pub io_timeout: Option<Duration>,
    /// Register this process as a sponsor of the daemon (see `sparkd --exit-with-sponsors`).
    pub sponsor: bool,
    /// Events kept until someone takes them; later ones are dropped and counted
    /// ([`EventReceiver::dropped`]). Default [`DEFAULT_EVENT_QUEUE`].
    pub event_queue: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let name = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "rust-client".into());
        ClientOptions {
            client_name: name,
            io_timeout: Some(Duration::from_secs(30)),
            sponsor: false,
            event_queue: DEFAULT_EVENT_QUEUE,
        }
    }
}

/// A connection to sparkd. `Send + Sync`: share it across threads; each exchange holds it briefly.
pub struct Client {
    path: PathBuf,
    conn: Mutex<Conn>,
    /// Threads blocked in [`Client::lock`]: an idle event wait steps aside for them.
    waiting: AtomicUsize,
    events: Arc<EventQueue>,
    hello: HelloResponse,
    /// Large buffers handed out by streamed gets come back here (see `pool.rs`).
    pub(crate) pool: Arc<crate::pool::BlobPool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with default options. Fails at once with [`Error::NotRunning`] when no daemon listens.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client> {
        Self::connect_with(path, &ClientOptions::default())
    }

    /// Connects to the default socket path.
    pub fn connect_default() -> Result<Client> {
        Self::connect(crate::default_socket_path())
    }

    /// Connects over the platform's transport ([`DefaultConnector`]).
    pub fn connect_with(path: impl AsRef<Path>, opts: &ClientOptions) -> Result<Client> {
        Self::connect_via(&DefaultConnector, path, opts)
    }

    /// Connects through `connector` and says Hello.
    pub fn connect_via(
        connector: &dyn Connector,
        path: impl AsRef<Path>,
        opts: &ClientOptions,
    ) -> Result<Client> {
        let path = path.as_ref().to_path_buf();
        let mut stream = connector.connect(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                Error::NotRunning {
                    path: path.clone(),
                    source: e,
                }
            }
            _ => Error::Transport(e),
        })?;
        stream
            .set_io_timeout(opts.io_timeout)
            .map_err(Error::Transport)?;
        let events = EventQueue::new(opts.event_queue);
        let mut conn = Conn::new(stream, events.clone());
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            flags: if opts.sponsor { HELLO_FLAG_SPONSOR } else { 0 },
            pid: std::process::id(),
            client_name: opts.client_name.clone(),
        };
        conn.write_msg(service::CONTROL, &hello)?;
        conn.flush()?;
        let hello: HelloResponse = conn.read_msg()?;
        Ok(Client {
            path,
            conn: Mutex::new(conn),
            waiting: AtomicUsize::new(0),
            events,
            hello,
            pool: Arc::default(),
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// What the daemon said in the handshake (version, pid, services, capabilities).
    pub fn hello(&self) -> &HelloResponse {
        &self.hello
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Conn> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let g = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        g
    }

    /// Sends one frame and returns its reply frame; an ErrorResponse becomes [`Error::Daemon`].
    pub fn request(&self, frame: &Frame) -> Result<Frame> {
        let mut c = self.lock();
        c.write_frame(frame.service, frame.msg_type, &frame.payload)?;
        c.flush()?;
        c.read_reply()
    }

    /// Sends a typed request and decodes a typed reply.
    pub fn call<M: Message, R: Message>(&self, service: u16, m: &M) -> Result<R> {
        let mut c = self.lock();
        c.write_msg(service, m)?;
        c.flush()?;
        c.read_msg()
    }

    /// Sends a request without waiting for its reply (the reply is read and dropped later, in order).
    pub fn send_one_way(&self, frame: &Frame) -> Result<()> {
        let mut c = self.lock();
        c.write_frame(frame.service, frame.msg_type, &frame.payload)?;
        c.flush()?;
        c.owe_discarded_reply();
        Ok(())
    }

    /// Sends every frame, then reads every reply, in order: one round trip for the batch. Each reply is
    /// `Ok(frame)` or `Err(Error::Daemon)`; a transport failure fails the whole batch. A reply that streams
    /// (a get of a blob too large for one frame) is read past and reported as `Err(Error::Protocol)`: fetch
    /// such blobs with [`crate::CacheClient::get`].
    pub fn pipeline(&self, frames: &[Frame]) -> Result<Vec<Result<Frame>>> {
        let mut c = self.lock();
        for f in frames {
            c.write_frame(f.service, f.msg_type, &f.payload)?;
        }
        c.flush()?;
        let mut out = Vec::with_capacity(frames.len());
        for _ in frames {
            match c.read_reply() {
                Ok(f) if c.skip_stream_after(&f)? => out.push(Err(Error::Protocol(
                    "a streamed reply cannot be returned from a pipeline; use CacheClient::get"
                        .into(),
                ))),
                Ok(f) => out.push(Ok(f)),
                Err(e @ Error::Daemon(_)) => out.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A handle on this client's event queue: events that arrive while any thread talks to the daemon.
    pub fn events(&self) -> EventReceiver {
        EventReceiver::new(self.events.clone())
    }

    /// The next server event, waiting up to `wait` (zero: only what has already arrived).
    ///
    /// Queued events come first. Otherwise, when no request is in flight, this reads the socket itself;
    /// while another thread's request holds the connection, it waits for that thread's reads to queue one.
    /// It gives the connection up every few milliseconds, so requests from other threads are not held up
    /// behind a long wait. `Ok(None)` when no event came in time.
    pub fn next_event(&self, wait: Duration) -> Result<Option<Event>> {
        // An event already queued (a subscriber behind a busy publisher) is taken without reading the clock.
        if let Some(e) = self.events.pop() {
            return Ok(Some(e));
        }
        let deadline = Instant::now() + wait;
        let mut slice = wait.min(EVENT_WAIT_SLICE);
        loop {
            if let Some(e) = self.events.pop() {
                return Ok(Some(e));
            }
            let idle = if self.waiting.load(Ordering::SeqCst) == 0 {
                match self.conn.try_lock() {
                    Ok(c) => Some(c),
                    Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    Err(TryLockError::WouldBlock) => None,
                }
            } else {
                None
            };
            let got = match idle {
                Some(mut c) => c.next_event(slice)?,
                None => self.events.pop_within(slice),
            };
            if got.is_some() {
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            slice = left.min(EVENT_WAIT_SLICE);
        }
    }

    /// An event already queued, if any (no socket read, no clock).
    pub(crate) fn queued_event(&self) -> Option<Event> {
        self.events.pop()
    }

    /// Round-trip time of a Ping.
    pub fn ping(&self) -> Result<Duration> {
        let t = Instant::now();
        let data = Bytes::from_static(b"spark");
        let p: Pong = self.call(service::CONTROL, &Ping { data: data.clone() })?;
        if p.data != data {
            return Err(Error::Protocol("Pong did not echo the Ping payload".into()));
        }
        Ok(t.elapsed())
    }

    pub fn version(&self) -> Result<VersionResponse> {
        self.call(service::CONTROL, &Version)
    }

    pub fn stats(&self) -> Result<StatsResponse> {
        self.call(service::CONTROL, &Stats)
    }

    /// Every namespace the daemon serves, with its named counters. A daemon older than this message
    /// answers [`Error::Daemon`] with code `UnknownMessage`; callers fall back to the per-service stats.
    pub fn namespaces(&self) -> Result<Vec<NamespaceStats>> {
        let r: NamespacesResponse = self.call(service::CONTROL, &Namespaces)?;
        Ok(r.namespaces)
    }

    /// Asks the daemon to exit after finishing in-flight requests.
    pub fn shutdown(&self) -> Result<()> {
        let _: ShutdownAck = self.call(service::CONTROL, &Shutdown)?;
        Ok(())
    }

    /// Registers `pid` as a sponsor; returns the number of live sponsors.
    pub fn register_sponsor(&self, pid: u32) -> Result<u32> {
        let a: RegisterSponsorAck = self.call(service::CONTROL, &RegisterSponsor { pid })?;
        Ok(a.sponsors)
    }

    /// Closes the connection (dropping the client does the same).
    pub fn disconnect(self) {
        drop(self);
    }
}
