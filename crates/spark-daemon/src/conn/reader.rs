//! A connection's reader: reads frames, starts each request's handler, and queues the request's place in the
//! reply order for the writer. Frames of an upload stream are routed to the request that opened it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use spark_proto::{
    ErrorCode, ErrorResponse, Frame, FrameHeader, HEADER_LEN, ProtoError, msg, service,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::debug;

use super::effect_order::EffectOrder;
use super::writer::{self, End, Pending, Shared, Slot};
use crate::registry::{
    BoxFuture, Ctx, HandlerError, HandlerResult, Registry, Request, UploadPart, unknown_service,
};

/// Frames of one upload that may wait for its handler.
const UPLOAD_QUEUE: usize = 2;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("client closed the connection")]
    Closed,
    #[error("client closed the connection in the middle of a frame")]
    TruncatedFrame,
    #[error("frame not completed within {0:?}")]
    FrameTimeout(Duration),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Buffered frame reads with a per-frame deadline.
pub(crate) struct FrameReader<R> {
    r: R,
    rbuf: BytesMut,
    frame_timeout: Duration,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(r: R, frame_timeout: Duration) -> Self {
        FrameReader {
            r,
            rbuf: BytesMut::with_capacity(8 * 1024),
            frame_timeout,
        }
    }

    /// Reads the next frame. Cancel-safe: a partial frame stays buffered. Waiting for the first byte of a
    /// frame is unbounded (idle clients are fine); once a frame has started, all of it must arrive within
    /// the frame timeout.
    pub(crate) async fn read_frame(&mut self) -> Result<Frame, ReadError> {
        let mut deadline = None;
        loop {
            if let Some(frame) = Frame::decode_from(&mut self.rbuf)? {
                return Ok(frame);
            }
            if !self.rbuf.is_empty() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + self.frame_timeout);
            }
            // Grow only towards what the announced (already validated) frame needs.
            let want = self.bytes_wanted();
            self.rbuf.reserve(want.clamp(4096, 1 << 20));
            let n = match deadline {
                None => self.r.read_buf(&mut self.rbuf).await?,
                Some(d) => {
                    match tokio::time::timeout_at(d, self.r.read_buf(&mut self.rbuf)).await {
                        Ok(r) => r?,
                        Err(_) => return Err(ReadError::FrameTimeout(self.frame_timeout)),
                    }
                }
            };
            if n == 0 {
                return Err(if self.rbuf.is_empty() {
                    ReadError::Closed
                } else {
                    ReadError::TruncatedFrame
                });
            }
        }
    }

    /// True when a whole frame is already buffered (the next read returns at once).
    pub(crate) fn has_buffered_frame(&self) -> bool {
        if self.rbuf.len() < HEADER_LEN {
            return false;
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.rbuf[..HEADER_LEN]);
        match FrameHeader::decode(&hb) {
            Ok(h) => self.rbuf.len() >= HEADER_LEN + h.len as usize,
            Err(_) => true,
        }
    }

    fn bytes_wanted(&self) -> usize {
        if self.rbuf.len() < HEADER_LEN {
            return HEADER_LEN - self.rbuf.len();
        }
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.rbuf[..HEADER_LEN]);
        FrameHeader::decode(&hb)
            .map(|h| (HEADER_LEN + h.len as usize).saturating_sub(self.rbuf.len()))
            .unwrap_or(0)
    }
}

/// The upload stream in progress on this connection.
struct Upload {
    service: u16,
    tx: mpsc::Sender<UploadPart>,
}

/// The reader's side of one connection.
pub(crate) struct Reader<'a, R, W> {
    pub frames: FrameReader<R>,
    pub ctx: &'a Ctx,
    pub registry: &'a Registry,
    pub slots: mpsc::Sender<Slot>,
    shared: Arc<Shared<W>>,
    /// Replies written inline and not flushed yet.
    dirty: bool,
    upload: Option<Upload>,
    order: EffectOrder,
    /// Set when the writer was seen to stop (a finished task must not be awaited twice).
    writer_end: Option<End>,
}

/// What the reader loop should do after a frame.
enum Step {
    Go,
    Stop,
}

impl<'a, R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Reader<'a, R, W> {
    pub(crate) fn new(
        frames: FrameReader<R>,
        ctx: &'a Ctx,
        registry: &'a Registry,
        slots: mpsc::Sender<Slot>,
        shared: Arc<Shared<W>>,
    ) -> Self {
        Reader {
            frames,
            ctx,
            registry,
            slots,
            shared,
            dirty: false,
            upload: None,
            order: EffectOrder::default(),
            writer_end: None,
        }
    }

    /// Reads until the client leaves, the stream breaks, the writer stops or the daemon shuts down (shutdown
    /// waits for an upload in progress: it is a request being handled). Returns the writer's end if the
    /// writer stopped first.
    pub(crate) async fn run(&mut self, writer: &mut JoinHandle<End>) -> Option<End> {
        let mut shutdown = self.ctx.state.shutdown_signal();
        loop {
            let uploading = self.upload.is_some();
            // A frame already buffered is taken first, so a pipelined batch costs no other polls per frame.
            let read = tokio::select! {
                biased;
                r = self.frames.read_frame() => r,
                end = &mut *writer => return Some(end.unwrap_or(End::Drained)),
                _ = shutdown.wait_for(|s| *s), if !uploading => return None,
            };
            let step = match read {
                Ok(frame) => self.on_frame(frame, writer).await,
                Err(e) => self.on_read_error(e, writer).await,
            };
            if let Step::Stop = step {
                return self.writer_end.take();
            }
            if self.dirty && !self.frames.has_buffered_frame() && self.flush_inline().await.is_err()
            {
                return self.writer_end.take();
            }
        }
    }

    async fn on_read_error(&mut self, e: ReadError, writer: &mut JoinHandle<End>) -> Step {
        match e {
            ReadError::Proto(e) => {
                // An oversize header: the byte stream cannot be resynchronised. Every such error goes on
                // Control, inside an upload or not; the upload's handler sees its stream end and answers nothing.
                debug!("closing connection: {e}");
                self.upload = None;
                let err =
                    ErrorResponse::new(ErrorCode::TooLarge, format!("{e}; closing the connection"));
                self.push(
                    service::CONTROL,
                    std::time::Instant::now(),
                    Pending::Ready(Err(HandlerError::Close(err))),
                    writer,
                )
                .await;
            }
            ReadError::FrameTimeout(t) if self.upload.is_some() => {
                self.abort_upload(format!(
                    "upload stream frame not completed within {t:?}; closing the connection"
                ))
                .await;
            }
            e => debug!("connection ended: {e}"),
        }
        Step::Stop
    }

    async fn on_frame(&mut self, frame: Frame, writer: &mut JoinHandle<End>) -> Step {
        let started = std::time::Instant::now();
        let stats = &self.ctx.state.conn_stats;
        stats.bytes_in(HEADER_LEN + frame.payload.len());
        if let Some(up) = &self.upload {
            let stream_frame = frame.service == up.service
                && (frame.msg_type == msg::STREAM_CHUNK || frame.msg_type == msg::STREAM_END);
            if !stream_frame {
                let why = format!(
                    "expected a stream chunk or end for service 0x{:04x}, got message 0x{:04x} on service 0x{:04x}",
                    up.service, frame.msg_type, frame.service
                );
                self.abort_upload(why).await;
                return Step::Stop;
            }
            let part = if frame.msg_type == msg::STREAM_CHUNK {
                UploadPart::Chunk(frame.payload)
            } else {
                UploadPart::End(frame.payload)
            };
            let end = matches!(part, UploadPart::End(_));
            // The handler may have given up on the stream already; the frames are then just consumed.
            let _ = up.tx.send(part).await;
            if end {
                self.upload = None;
            }
            return Step::Go;
        }
        if frame.msg_type == msg::STREAM_CHUNK || frame.msg_type == msg::STREAM_END {
            // Outside an upload these belong to a PutStream that was already answered (refused before its
            // stream began: unknown service, malformed header). Dropping them keeps one reply per request.
            debug!(
                "dropping a stream frame that belongs to no upload (service 0x{:04x})",
                frame.service
            );
            return Step::Go;
        }
        let service = frame.service;
        stats.request(service, frame.msg_type);
        let mut pending = self.start(frame);
        if let Pending::Ready(r) = pending {
            match self.write_inline(service, r).await {
                Ok(None) => {
                    let stats = &self.ctx.state.conn_stats;
                    stats.reply_latency(service, started.elapsed());
                    return Step::Go;
                }
                Ok(Some(r)) => pending = Pending::Ready(r),
                Err(e) => {
                    debug!("connection ended: writing failed: {e}");
                    return Step::Stop;
                }
            }
        }
        self.push(service, started, pending, writer).await
    }

    /// Writes a finished reply straight into the output buffer when no earlier reply is still owed and the
    /// writer is not using the buffer: order is kept, and the writer task is not woken for it. Gives the
    /// reply back when it must go through the writer.
    async fn write_inline(
        &mut self,
        service: u16,
        r: HandlerResult,
    ) -> std::io::Result<Option<HandlerResult>> {
        if !writer::inlinable(&r) || self.shared.owed.load(Ordering::Acquire) != 0 {
            return Ok(Some(r));
        }
        let Ok(mut out) = self.shared.out.try_lock() else {
            return Ok(Some(r));
        };
        writer::write_result(&mut out, service, r).await?;
        self.dirty = true;
        Ok(None)
    }

    /// Sends what was written inline, before the reader waits for the client. If the writer holds the buffer,
    /// it flushes before it lets go, so there is nothing to do.
    async fn flush_inline(&mut self) -> std::io::Result<()> {
        self.dirty = false;
        if let Ok(mut out) = self.shared.out.try_lock() {
            out.flush().await?;
        }
        Ok(())
    }

    /// Starts a request's handler. One that finishes at once (a memory hit, a ping) is answered without a task
    /// of its own; any other runs in its own task, so later requests need not wait for it. A request whose
    /// effects must follow an earlier one's ([`EffectOrder`]) waits for it in that task.
    fn start(&mut self, frame: Frame) -> Pending {
        let Some(svc) = self.registry.get(frame.service).cloned() else {
            return Pending::Ready(Err(HandlerError::Reply(unknown_service(frame.service))));
        };
        let write = svc.is_write(&frame);
        let key = svc.effect_key(&frame);
        let deps = self.order.deps(write, key);
        let upload = svc.opens_upload(&frame).then(|| {
            let (tx, rx) = mpsc::channel(UPLOAD_QUEUE);
            self.upload = Some(Upload {
                service: frame.service,
                tx,
            });
            rx
        });
        let req = Request {
            frame,
            ctx: self.ctx.clone(),
            upload,
            more_behind: self.frames.has_buffered_frame(),
        };
        let mut fut = svc.handle(req);
        if deps.is_empty()
            && let Some(r) = poll_once(&mut fut)
        {
            return Pending::Ready(r);
        }
        let (done_tx, done_rx) = watch::channel(false);
        self.order.running(write, key, done_rx);
        if deps.is_empty() && self.shared.owed.load(Ordering::Acquire) == 0 {
            // First in line: the writer runs it itself (no task, no hand-over of its result), while the reader
            // goes on starting the requests behind it in tasks of their own.
            return Pending::Head { fut, done: done_tx };
        }
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            for mut d in deps {
                // An error means the earlier request's task is gone: finished as far as order goes.
                let _ = d.wait_for(|done| *done).await;
            }
            let r = fut.await;
            done_tx.send_replace(true);
            let _ = tx.send(r);
        });
        Pending::Running(rx)
    }

    /// Queues a request's place in the reply order, waiting while the in-flight limit is reached.
    async fn push(
        &mut self,
        service: u16,
        started: std::time::Instant,
        reply: Pending,
        writer: &mut JoinHandle<End>,
    ) -> Step {
        let slot = Slot {
            service,
            started,
            reply,
        };
        self.shared.owed.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::TrySendError::Full(slot)) = self.slots.try_send(slot) {
            // Throttled: the client is not reading its replies fast enough.
            tokio::select! {
                r = self.slots.send(slot) => if r.is_err() { return Step::Stop },
                end = &mut *writer => {
                    self.writer_end = Some(end.unwrap_or(End::Drained));
                    return Step::Stop;
                }
            }
        }
        Step::Go
    }

    /// Tells the upload's handler why its stream broke; it answers with that error and the connection closes.
    async fn abort_upload(&mut self, why: String) {
        if let Some(up) = self.upload.take() {
            let e = ErrorResponse::new(ErrorCode::StreamMismatch, why);
            let _ = up.tx.send(UploadPart::Abort(e)).await;
        }
    }
}

/// Polls a handler once, without a task: most requests complete on their first poll. A panic answers the
/// request with an Internal error instead of taking the connection down.
fn poll_once(fut: &mut BoxFuture<HandlerResult>) -> Option<HandlerResult> {
    let mut cx = Context::from_waker(Waker::noop());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Pin::new(&mut *fut).as_mut().poll(&mut cx)
    })) {
        Ok(Poll::Ready(r)) => Some(r),
        Ok(Poll::Pending) => None,
        Err(_) => {
            tracing::error!("a request handler panicked; the request gets an Internal error");
            Some(writer::handler_failed())
        }
    }
}
