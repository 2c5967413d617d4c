//! The connection: framing over a blocking Unix socket, behind a mutex.

use std::io::{IoSlice, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use spark_proto::control::*;
use spark_proto::{
    ErrorResponse, Frame, FrameHeader, HEADER_LEN, Message, PROTOCOL_VERSION, msg, service,
};

use crate::cache::{AssetCache, ShaderCache};
use crate::error::{Error, Result};

/// Payloads at least this big are written with their own syscall rather than copied behind the header.
const COPY_LIMIT: usize = 64 * 1024;
/// Frames with payloads at least this big are read straight into a buffer of their own. (Below it, the
/// allocator would map and unmap a fresh region for each such frame: measured 0.4x at 256 KiB.)
const DIRECT_READ_MIN: usize = 1 << 20;
/// The scratch buffer every smaller read goes through.
const SCRATCH_LEN: usize = 64 * 1024;

/// How a client introduces itself and how long it waits.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Shown in the daemon's logs.
    pub client_name: String,
    /// Longest wait for any single read or write; `None` = forever.
    pub io_timeout: Option<Duration>,
    /// Register this process as a sponsor of the daemon (see `sparkd --exit-with-sponsors`).
    pub sponsor: bool,
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
        }
    }
}

/// What [`Conn::read_chunk_into`] read.
pub(crate) enum Next {
    /// A chunk of this many bytes, now at the front of the destination.
    Chunk(usize),
    /// Any other frame (the stream's end, an error, or a chunk that did not fit).
    Frame(Frame),
}

/// One framed connection. Public to the crate so the cache clients can stream under one lock.
pub(crate) struct Conn {
    stream: UnixStream,
    rbuf: BytesMut,
    /// Zeroed once; reads land here and only the bytes received are copied on into `rbuf`.
    scratch: Box<[u8]>,
    wbuf: Vec<u8>,
    /// Replies still owed for one-way sends; read and dropped before the next reply.
    discard: usize,
    /// Set after a transport or framing failure: the byte stream can no longer be trusted.
    broken: bool,
}

impl Conn {
    /// Queues a frame; large payloads are written straight from their buffer.
    pub(crate) fn write_frame(
        &mut self,
        service: u16,
        msg_type: u16,
        payload: &[u8],
    ) -> Result<()> {
        self.write_frame_parts(service, msg_type, &[], payload)
    }

    /// Queues a frame whose payload is `head` then `body` (a key, then a blob), without first joining them.
    /// Small frames are copied into the write buffer; a large body goes out in one vectored write with
    /// everything queued before it, header included (one syscall, no copy of the body).
    pub(crate) fn write_frame_parts(
        &mut self,
        service: u16,
        msg_type: u16,
        head: &[u8],
        body: &[u8],
    ) -> Result<()> {
        let len = head.len() + body.len();
        if len > spark_proto::MAX_PAYLOAD {
            return Err(Error::Protocol(format!(
                "payload of {len} bytes exceeds the frame limit"
            )));
        }
        let h = FrameHeader {
            len: len as u32,
            service,
            msg_type,
        };
        self.wbuf.extend_from_slice(&h.encode());
        self.wbuf.extend_from_slice(head);
        if body.len() < COPY_LIMIT {
            self.wbuf.extend_from_slice(body);
            if self.wbuf.len() >= 256 * 1024 {
                self.flush()?;
            }
            return Ok(());
        }
        let queued = std::mem::take(&mut self.wbuf);
        let r = self.io(|s| send_all_vectored(s, &mut [IoSlice::new(&queued), IoSlice::new(body)]));
        self.wbuf = queued;
        self.wbuf.clear();
        r
    }

    pub(crate) fn write_msg<M: Message>(&mut self, service: u16, m: &M) -> Result<()> {
        let mut p = BytesMut::new();
        m.encode(&mut p);
        self.write_frame(service, M::TYPE, &p)
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        let r = self.io(|s| send_all(s, &buf));
        self.wbuf = buf;
        self.wbuf.clear();
        r
    }

    fn io<T>(&mut self, f: impl FnOnce(&mut UnixStream) -> std::io::Result<T>) -> Result<T> {
        if self.broken {
            return Err(Error::Transport(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the connection failed earlier; reconnect",
            )));
        }
        f(&mut self.stream).map_err(|e| {
            self.broken = true;
            Error::Transport(e)
        })
    }

    /// Reads the next frame that is not a server event.
    pub(crate) fn read_frame(&mut self) -> Result<Frame> {
        loop {
            let f = self.read_any_frame()?;
            if !msg::is_event(f.msg_type) {
                return Ok(f);
            }
            // Events are not subscribed to by this client yet; skip them.
        }
    }

    fn read_any_frame(&mut self) -> Result<Frame> {
        loop {
            match Frame::decode_from(&mut self.rbuf) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e.into());
                }
            }
            if self.rbuf.len() >= HEADER_LEN {
                let mut hb = [0u8; HEADER_LEN];
                hb.copy_from_slice(&self.rbuf[..HEADER_LEN]);
                let h = FrameHeader::decode(&hb)?;
                let len = h.len as usize;
                if len >= DIRECT_READ_MIN {
                    return self.read_large(h);
                }
                if len >= SCRATCH_LEN {
                    // Mid-sized: zero exactly the rest of this frame in the read buffer and read it there.
                    // (A buffer of its own would be a fresh mapping per frame from the allocator.)
                    let old = self.rbuf.len();
                    self.rbuf.resize(HEADER_LEN + len, 0);
                    let mut rbuf = std::mem::take(&mut self.rbuf);
                    let r = self.io(|s| s.read_exact(&mut rbuf[old..]));
                    self.rbuf = rbuf;
                    r?;
                    continue;
                }
            }
            self.fill()?;
        }
    }

    /// Reads what the socket has into the read buffer, through the scratch buffer: zeroing a fresh region
    /// of the read buffer for every read cost more than the copy of the bytes that actually arrive.
    fn fill(&mut self) -> Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let n = self.io(|s| s.read(&mut scratch));
        if let Ok(n) = n {
            self.rbuf.extend_from_slice(&scratch[..n]);
        }
        self.scratch = scratch;
        if n? == 0 {
            self.broken = true;
            return Err(Error::Transport(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "sparkd closed the connection",
            )));
        }
        Ok(())
    }

    /// Reads a large frame, whose header is at the front of the read buffer, straight into a buffer of its
    /// own: the payload crosses from the kernel once and becomes the frame without another copy. (A large
    /// zeroed allocation is fresh pages, so it costs no zeroing pass either.) Nothing after this frame can
    /// be buffered yet: the read buffer holds less than this frame.
    fn read_large(&mut self, h: FrameHeader) -> Result<Frame> {
        let mut payload = vec![0u8; h.len as usize];
        let have = self.rbuf.len() - HEADER_LEN;
        payload[..have].copy_from_slice(&self.rbuf[HEADER_LEN..]);
        self.rbuf.clear();
        self.io(|s| s.read_exact(&mut payload[have..]))?;
        Ok(Frame {
            service: h.service,
            msg_type: h.msg_type,
            payload: Bytes::from(payload),
        })
    }

    /// Reads the next frame of a streamed reply on `service`. A chunk whose payload fits in `dst` is read
    /// straight into it (a large blob then crosses from the kernel into its final buffer once); any other
    /// frame is returned whole, as [`Conn::read_reply`] returns it.
    pub(crate) fn read_chunk_into(&mut self, service: u16, dst: &mut [u8]) -> Result<Next> {
        while self.rbuf.len() < HEADER_LEN {
            self.fill()?;
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.rbuf[..HEADER_LEN]);
        let h = match FrameHeader::decode(&hb) {
            Ok(h) => h,
            Err(e) => {
                self.broken = true;
                return Err(e.into());
            }
        };
        let len = h.len as usize;
        if h.msg_type != msg::STREAM_CHUNK || h.service != service || len > dst.len() {
            return self.read_reply().map(Next::Frame);
        }
        let have = (self.rbuf.len() - HEADER_LEN).min(len);
        dst[..have].copy_from_slice(&self.rbuf[HEADER_LEN..HEADER_LEN + have]);
        self.rbuf.advance(HEADER_LEN + have);
        self.io(|s| s.read_exact(&mut dst[have..len]))?;
        Ok(Next::Chunk(len))
    }

    /// Drops replies owed to one-way sends (their errors included: that is what one-way means).
    fn settle(&mut self) -> Result<()> {
        while self.discard > 0 {
            self.discard -= 1;
            let f = self.read_frame()?;
            self.skip_stream_after(&f)?;
        }
        Ok(())
    }

    /// If `f` opens a streamed reply (a cache GetResponse with status 2), reads and drops the rest of the
    /// stream so the next reply is read in step. Returns whether it did.
    pub(crate) fn skip_stream_after(&mut self, f: &Frame) -> Result<bool> {
        let streamed = f.service != service::CONTROL
            && f.msg_type == spark_proto::cache::GET_RESPONSE
            && f.payload.first() == Some(&2);
        if !streamed {
            return Ok(false);
        }
        loop {
            let c = self.read_frame()?;
            match c.msg_type {
                msg::STREAM_CHUNK => continue,
                msg::STREAM_END | msg::ERROR => return Ok(true),
                t => {
                    self.broken = true;
                    return Err(Error::Protocol(format!(
                        "unexpected message 0x{t:04x} in a stream"
                    )));
                }
            }
        }
    }

    /// Marks the connection unusable (a stream was left half-sent or half-read).
    pub(crate) fn poison(&mut self) {
        self.broken = true;
    }

    /// Reads one reply: `Err(Daemon)` for an ErrorResponse.
    pub(crate) fn read_reply(&mut self) -> Result<Frame> {
        self.settle()?;
        let f = self.read_frame()?;
        if f.is_error() {
            let e = ErrorResponse::decode(&f.payload)?;
            return Err(Error::Daemon(e));
        }
        Ok(f)
    }

    /// Reads a reply of type `R`.
    pub(crate) fn read_msg<R: Message>(&mut self) -> Result<R> {
        let f = self.read_reply()?;
        if f.msg_type != R::TYPE {
            self.broken = true;
            return Err(Error::Protocol(format!(
                "expected message type 0x{:04x}, got 0x{:04x} (service 0x{:04x})",
                R::TYPE,
                f.msg_type,
                f.service
            )));
        }
        Ok(R::decode(&f.payload)?)
    }
}

/// `write_all` with MSG_NOSIGNAL: a daemon that died mid-session must surface as an EPIPE error (a miss for
/// the engine), never as a SIGPIPE that kills a host process which, unlike Rust programs, does not ignore it
/// (C and C++ engines using the C ABI).
fn send_all(s: &UnixStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match rustix::net::send(s, buf, rustix::net::SendFlags::NOSIGNAL) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A connection to sparkd. `Send + Sync`: share it across threads; each exchange holds it briefly.
pub struct Client {
    path: PathBuf,
    conn: Mutex<Conn>,
    hello: HelloResponse,
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

    pub fn connect_with(path: impl AsRef<Path>, opts: &ClientOptions) -> Result<Client> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                Error::NotRunning {
                    path: path.clone(),
                    source: e,
                }
            }
            _ => Error::Transport(e),
        })?;
        stream
            .set_read_timeout(opts.io_timeout)
            .map_err(Error::Transport)?;
        stream
            .set_write_timeout(opts.io_timeout)
            .map_err(Error::Transport)?;
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            scratch: vec![0u8; SCRATCH_LEN].into_boxed_slice(),
            wbuf: Vec::with_capacity(8 * 1024),
            discard: 0,
            broken: false,
        };
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
            hello,
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
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
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
        c.discard += 1;
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

    /// The shader cache.
    pub fn shader(&self) -> ShaderCache<'_> {
        ShaderCache::new(self, service::SHADER)
    }

    /// The asset cache.
    pub fn asset(&self) -> AssetCache<'_> {
        AssetCache::new(self, service::ASSET)
    }
}

/// `send_all` for several buffers in one `sendmsg`, with MSG_NOSIGNAL for the same reason.
fn send_all_vectored(s: &UnixStream, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !bufs.is_empty() {
        let mut no_ancillary = rustix::net::SendAncillaryBuffer::default();
        match rustix::net::sendmsg(s, bufs, &mut no_ancillary, rustix::net::SendFlags::NOSIGNAL) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
