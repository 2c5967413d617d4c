//! Framing on one connection: frames in and out of a [`Transport`], one-way replies owed, and the
//! server events that arrive between replies. Knows nothing of caches or of the typed API above it.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use spark_proto::{ErrorResponse, Frame, FrameHeader, HEADER_LEN, Message, msg, service};

use crate::error::{Error, Result};
use crate::event::{Event, EventQueue};
use crate::transport::Transport;

/// Payloads at least this big are written with their own syscall rather than copied behind the header.
const COPY_LIMIT: usize = 64 * 1024;
/// Frames with payloads at least this big are read straight into a buffer of their own. (Below it, the
/// allocator would map and unmap a fresh region for each such frame: measured 0.4x at 256 KiB.)
const DIRECT_READ_MIN: usize = 1 << 20;
/// The scratch buffer every smaller read goes through.
const SCRATCH_LEN: usize = 64 * 1024;

/// What [`Conn::read_chunk_into`] read.
pub(crate) enum Next {
    /// A chunk of this many bytes, now at the front of the destination.
    Chunk(usize),
    /// Any other frame (the stream's end, an error, or a chunk that did not fit).
    Frame(Frame),
}

/// One framed connection. Public to the crate so the cache clients can stream under one lock.
pub(crate) struct Conn {
    stream: Box<dyn Transport>,
    rbuf: BytesMut,
    /// Zeroed once; reads land here and only the bytes received are copied on into `rbuf`.
    scratch: Box<[u8]>,
    wbuf: Vec<u8>,
    /// Replies still owed for one-way sends; read and dropped before the next reply.
    discard: usize,
    /// Set after a transport or framing failure: the byte stream can no longer be trusted.
    broken: bool,
    /// Where events read on the way to a reply go.
    events: Arc<EventQueue>,
}

impl Conn {
    pub(crate) fn new(stream: Box<dyn Transport>, events: Arc<EventQueue>) -> Conn {
        Conn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            scratch: vec![0u8; SCRATCH_LEN].into_boxed_slice(),
            wbuf: Vec::with_capacity(8 * 1024),
            discard: 0,
            broken: false,
            events,
        }
    }

    /// Counts a request sent without waiting: its reply is read and dropped before the next one.
    pub(crate) fn owe_discarded_reply(&mut self) {
        self.discard += 1;
    }

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
        let r = self.io(|s| s.send_all_vectored(&mut [IoSlice::new(&queued), IoSlice::new(body)]));
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
        let r = self.io(|s| s.send_all(&buf));
        self.wbuf = buf;
        self.wbuf.clear();
        r
    }

    fn io<T>(&mut self, f: impl FnOnce(&mut dyn Transport) -> std::io::Result<T>) -> Result<T> {
        if self.broken {
            return Err(Error::Transport(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the connection failed earlier; reconnect",
            )));
        }
        f(&mut *self.stream).map_err(|e| {
            self.broken = true;
            Error::Transport(e)
        })
    }

    /// Reads the next frame that is not a server event; events read on the way are queued.
    pub(crate) fn read_frame(&mut self) -> Result<Frame> {
        loop {
            let f = self.read_any_frame()?;
            if !msg::is_event(f.msg_type) {
                return Ok(f);
            }
            self.queue_event(f);
        }
    }

    fn queue_event(&self, f: Frame) {
        self.events.push(Event {
            service: f.service,
            msg_type: f.msg_type,
            payload: f.payload,
        });
    }

    /// The next event, reading the socket for at most `wait` when none is queued. Only for when no reply is
    /// awaited: replies still owed to one-way sends are read (and dropped) first, and any other reply is a
    /// protocol violation. A frame whose first bytes arrived in time is read whole, under the I/O timeout,
    /// so a slow frame never leaves the stream out of step.
    pub(crate) fn next_event(&mut self, wait: Duration) -> Result<Option<Event>> {
        // Only a read of the socket needs the deadline.
        let mut deadline = None;
        loop {
            if let Some(e) = self.events.pop() {
                return Ok(Some(e));
            }
            if self.discard > 0 {
                self.settle()?;
                continue;
            }
            if self.rbuf.is_empty() {
                let d = *deadline.get_or_insert_with(|| Instant::now() + wait);
                if !self.fill_within(d)? {
                    return Ok(None);
                }
            }
            let f = self.read_any_frame()?;
            self.queue_unasked(f)?;
            // The other whole frames of that read are queued too (while they fit: a frame left here is not
            // lost), so the next calls take them from the queue without coming back here.
            while self.events.has_room() {
                match Frame::decode_from(&mut self.rbuf) {
                    Ok(Some(f)) => self.queue_unasked(f)?,
                    Ok(None) => break,
                    Err(e) => {
                        self.broken = true;
                        return Err(e.into());
                    }
                }
            }
        }
    }

    /// Queues an event that came with no request outstanding; anything else breaks the connection.
    fn queue_unasked(&mut self, f: Frame) -> Result<()> {
        if !msg::is_event(f.msg_type) {
            self.broken = true;
            return Err(Error::Protocol(format!(
                "reply 0x{:04x} on service 0x{:04x} arrived with no request outstanding",
                f.msg_type, f.service
            )));
        }
        self.queue_event(f);
        Ok(())
    }

    /// [`Self::fill`] that gives up at `deadline`; returns whether anything arrived.
    fn fill_within(&mut self, deadline: Instant) -> Result<bool> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut scratch = std::mem::take(&mut self.scratch);
        let n = self.io(|s| s.read_within(&mut scratch, wait));
        if let Ok(Some(n)) = n {
            self.rbuf.extend_from_slice(&scratch[..n]);
        }
        self.scratch = scratch;
        match n? {
            None => Ok(false),
            Some(0) => Err(self.closed_by_daemon()),
            Some(_) => Ok(true),
        }
    }

    fn closed_by_daemon(&mut self) -> Error {
        self.broken = true;
        Error::Transport(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "sparkd closed the connection",
        ))
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
            return Err(self.closed_by_daemon());
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
        let h = loop {
            let h = self.peek_header()?;
            if !msg::is_event(h.msg_type) {
                break h;
            }
            // An event between two chunks: queue it and look again. (Handing it to `read_reply` would
            // return the chunk after it as a frame, whose bytes would then never reach `dst`.)
            let f = self.read_any_frame()?;
            self.queue_event(f);
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

    /// The header at the front of the read buffer, reading until it is there.
    fn peek_header(&mut self) -> Result<FrameHeader> {
        while self.rbuf.len() < HEADER_LEN {
            self.fill()?;
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.rbuf[..HEADER_LEN]);
        FrameHeader::decode(&hb).map_err(|e| {
            self.broken = true;
            e.into()
        })
    }

    /// Drops replies owed to one-way sends (their errors included: that is what one-way means).
    pub(crate) fn settle(&mut self) -> Result<()> {
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
