//! A connection's writer task: releases replies strictly in request order, interleaves events between
//! replies (never inside a streamed one), and batches small frames into few syscalls.
//!
//! The reader hands over one [`Slot`] per request, in request order, through a bounded queue: its length is the
//! connection's in-flight limit, so a client that stops reading stops having its requests read too.

use std::future::Future;
use std::io::IoSlice;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use spark_proto::control::EventsLost;
use spark_proto::{ErrorCode, ErrorResponse, FrameHeader, HEADER_LEN, MAX_PAYLOAD, msg, service};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tracing::debug;

use crate::events::{Event, EventQueue};
use crate::registry::{BoxFuture, Encode, HandlerError, HandlerResult, Reply, StreamPart};
use crate::state::ServerState;

/// Payloads at least this large are written straight from their buffer instead of being copied.
const DIRECT_WRITE_MIN: usize = 64 * 1024;
/// Flush the write buffer once it holds this much, even mid-batch.
const WRITE_BUF_HIGH: usize = 256 * 1024;

/// A request's reply, as the reader queued it.
pub(crate) enum Pending {
    /// The handler finished while the reader polled it.
    Ready(HandlerResult),
    /// The handler did not finish at once and no reply is owed before it: the writer runs it to completion
    /// itself (it would wait for it first anyway), then marks it done for the requests ordered after it.
    Head {
        fut: BoxFuture<HandlerResult>,
        done: watch::Sender<bool>,
    },
    /// The handler runs in a task of its own.
    Running(oneshot::Receiver<HandlerResult>),
}

/// One request's place in the reply order.
pub(crate) struct Slot {
    pub service: u16,
    /// When the request's frame was read (for the latency histogram).
    pub started: std::time::Instant,
    pub reply: Pending,
}

/// Why the writer stopped.
#[derive(Debug)]
pub(crate) enum End {
    /// Every reply owed was written.
    Drained,
    /// A reply closed the connection (a broken stream) after it was sent.
    Closed,
    /// Writing to the client failed.
    Failed(std::io::Error),
}

pub(crate) struct Out<W> {
    w: W,
    buf: BytesMut,
    state: Arc<ServerState>,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    /// Queues one frame whose payload `m` encodes.
    fn msg(&mut self, service: u16, m: &dyn Encode) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; HEADER_LEN]);
        m.encode(&mut self.buf);
        let len = self.buf.len() - start - HEADER_LEN;
        if len > MAX_PAYLOAD {
            // No reply may exceed a frame; a handler that built one has a bug. Say so instead of desyncing.
            self.buf.truncate(start);
            let e = ErrorResponse::new(
                ErrorCode::Internal,
                format!("reply of {len} bytes exceeds the frame limit"),
            );
            return self.msg(service, &e);
        }
        let h = FrameHeader {
            len: len as u32,
            service,
            msg_type: m.msg_type(),
        };
        self.buf[start..start + HEADER_LEN].copy_from_slice(&h.encode());
    }

    /// One frame whose payload is `head` then `body`; a large body is written from where it lies.
    async fn parts(
        &mut self,
        service: u16,
        msg_type: u16,
        head: &[u8],
        body: &[u8],
    ) -> std::io::Result<()> {
        let len = head.len() + body.len();
        if len > MAX_PAYLOAD {
            let e = ErrorResponse::new(
                ErrorCode::Internal,
                format!("reply of {len} bytes exceeds the frame limit"),
            );
            self.msg(service, &e);
            return Ok(());
        }
        let h = FrameHeader {
            len: len as u32,
            service,
            msg_type,
        };
        self.buf.extend_from_slice(&h.encode());
        self.buf.extend_from_slice(head);
        if body.len() < DIRECT_WRITE_MIN {
            self.buf.extend_from_slice(body);
            return self.flush_if_full().await;
        }
        let mut bufs = [IoSlice::new(&self.buf), IoSlice::new(body)];
        self.state.conn_stats.bytes_out(self.buf.len() + body.len());
        write_all_vectored(&mut self.w, &mut bufs).await?;
        self.buf.clear();
        Ok(())
    }

    async fn flush_if_full(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= WRITE_BUF_HIGH {
            self.flush().await?;
        }
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.state.conn_stats.bytes_out(self.buf.len());
            self.w.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// What the writer shares with the reader: the output buffer, and how many queued replies are not yet in
/// it. When none are owed, the reader may append a finished reply itself (see `Reader::write_inline`): the
/// common case — a memory hit, a ping — then costs no hand-over between tasks.
pub(crate) struct Shared<W> {
    pub out: Mutex<Out<W>>,
    /// Slots queued by the reader whose replies are not yet in `out`.
    pub owed: AtomicUsize,
}

impl<W> Shared<W> {
    pub(crate) fn new(w: W, state: Arc<ServerState>) -> Self {
        Shared {
            out: Mutex::new(Out {
                w,
                buf: BytesMut::with_capacity(16 * 1024),
                state,
            }),
            owed: AtomicUsize::new(0),
        }
    }
}

/// Writes replies and events until the reader is done and every owed reply is out, or the connection fails.
pub(crate) async fn run<W: AsyncWrite + Unpin>(
    shared: Arc<Shared<W>>,
    mut slots: mpsc::Receiver<Slot>,
    mut events: EventQueue,
) -> End {
    let r = write_loop(&shared, &mut slots, &mut events).await;
    let end = match r {
        Ok(end) => end,
        Err(e) => End::Failed(e),
    };
    let mut out = shared.out.lock().await;
    if matches!(end, End::Drained | End::Closed) {
        let _ = out.flush().await;
    }
    let _ = out.w.shutdown().await;
    end
}

enum Next {
    Slot(Option<Slot>),
    Event(Event),
    /// Nothing more is ready now.
    Idle,
}

/// Waits (without the buffer's lock) for a reply or an event, then, holding the lock, writes it and whatever
/// else is ready, and flushes. Every locked stretch ends with a flush, which the reader relies on.
async fn write_loop<W: AsyncWrite + Unpin>(
    shared: &Shared<W>,
    slots: &mut mpsc::Receiver<Slot>,
    events: &mut EventQueue,
) -> std::io::Result<End> {
    loop {
        let mut next = tokio::select! {
            biased;
            s = slots.recv() => Next::Slot(s),
            Some(e) = events.recv() => Next::Event(e),
        };
        let mut out = shared.out.lock().await;
        loop {
            match next {
                Next::Idle => break,
                Next::Event(e) => write_event(&mut out, events, e).await?,
                Next::Slot(None) => return Ok(End::Drained),
                Next::Slot(Some(slot)) => {
                    let result = match slot.reply {
                        Pending::Ready(r) => r,
                        Pending::Running(rx) => wait_reply(&mut out, events, rx).await?,
                        Pending::Head { fut, done } => {
                            let r = run_head(&mut out, events, fut).await?;
                            done.send_replace(true);
                            r
                        }
                    };
                    let close = write_result(&mut out, slot.service, result).await?;
                    out.state
                        .conn_stats
                        .reply_latency(slot.service, slot.started.elapsed());
                    shared.owed.fetch_sub(1, Ordering::AcqRel);
                    if close {
                        return Ok(End::Closed);
                    }
                }
            }
            next = match slots.try_recv() {
                Ok(s) => Next::Slot(Some(s)),
                Err(mpsc::error::TryRecvError::Disconnected) => Next::Slot(None),
                Err(mpsc::error::TryRecvError::Empty) => {
                    events.try_recv().map_or(Next::Idle, Next::Event)
                }
            };
        }
        out.flush().await?;
    }
}

/// Waits for a running handler, writing events while it works (they go out before its reply, which has not
/// started). Earlier replies are flushed first so a slow request never holds back finished ones.
async fn wait_reply<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    events: &mut EventQueue,
    mut rx: oneshot::Receiver<HandlerResult>,
) -> std::io::Result<HandlerResult> {
    match rx.try_recv() {
        Ok(r) => return Ok(r),
        // The handler's task ended without a result (it panicked); the receiver must not be polled again.
        Err(oneshot::error::TryRecvError::Closed) => return Ok(handler_failed()),
        Err(oneshot::error::TryRecvError::Empty) => {}
    }
    out.flush().await?;
    loop {
        tokio::select! {
            biased;
            r = &mut rx => return Ok(r.unwrap_or_else(|_| handler_failed())),
            Some(e) = events.recv() => {
                write_event(out, events, e).await?;
                out.flush().await?;
            }
        }
    }
}

/// Runs the first request in line to completion, writing events while it works. A panic in the handler
/// becomes an Internal error for that request, as it would in a task of its own.
async fn run_head<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    events: &mut EventQueue,
    fut: BoxFuture<HandlerResult>,
) -> std::io::Result<HandlerResult> {
    out.flush().await?;
    let mut fut = CatchPanic(fut);
    loop {
        tokio::select! {
            biased;
            r = &mut fut => return Ok(r.unwrap_or_else(handler_failed)),
            Some(e) = events.recv() => {
                write_event(out, events, e).await?;
                out.flush().await?;
            }
        }
    }
}

/// The reply to a request whose handler panicked.
pub(crate) fn handler_failed() -> HandlerResult {
    Err(HandlerError::Reply(ErrorResponse::new(
        ErrorCode::Internal,
        "the request's handler failed; see the daemon log",
    )))
}

/// Polls a handler, turning a panic into `None`.
struct CatchPanic(BoxFuture<HandlerResult>);

impl Future for CatchPanic {
    type Output = Option<HandlerResult>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(r)) => Poll::Ready(Some(r)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => {
                tracing::error!("a request handler panicked; the request gets an Internal error");
                Poll::Ready(None)
            }
        }
    }
}

async fn write_event<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    events: &EventQueue,
    e: Event,
) -> std::io::Result<()> {
    let (head, rest) = e.wire_parts();
    let head = head.as_ref().map_or(&[][..], |h| &h[..]);
    out.parts(e.service, e.msg_type, head, rest).await?;
    let lost = events.take_lost();
    if lost > 0 {
        out.msg(service::CONTROL, &EventsLost { dropped: lost });
    }
    out.flush_if_full().await
}

/// Whether the reader may write `r` itself: a reply that fits the buffer and neither waits on a producer nor
/// closes the connection.
pub(crate) fn inlinable(r: &HandlerResult) -> bool {
    match r {
        Ok(Reply::Msg(_)) | Err(HandlerError::Reply(_)) => true,
        Ok(Reply::Blob { head, body, .. }) => head.len() + body.len() < DIRECT_WRITE_MIN,
        _ => false,
    }
}

/// Writes one request's reply; returns true when the connection must close after it.
pub(crate) async fn write_result<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    service: u16,
    result: HandlerResult,
) -> std::io::Result<bool> {
    match result {
        Ok(Reply::Msg(m)) => {
            out.msg(service, m.as_ref());
            out.flush_if_full().await?;
        }
        Ok(Reply::Blob {
            msg_type,
            head,
            body,
        }) => out.parts(service, msg_type, &head, &body).await?,
        Ok(Reply::Stream { first, parts }) => {
            return write_stream(out, service, first, parts).await;
        }
        Err(HandlerError::Reply(e)) => out.msg(service, &e),
        Err(HandlerError::Close(e)) => {
            debug!("closing connection after error: {e}");
            out.msg(service, &e);
            return Ok(true);
        }
        Err(HandlerError::Gone) => {}
    }
    Ok(false)
}

/// A streamed reply: its first frame, its chunks, then exactly one terminal frame. Nothing else is written
/// in between, events included.
async fn write_stream<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    service: u16,
    first: Box<dyn Encode>,
    mut parts: mpsc::Receiver<StreamPart>,
) -> std::io::Result<bool> {
    out.msg(service, first.as_ref());
    loop {
        let part = match parts.try_recv() {
            Ok(p) => Some(p),
            Err(_) => {
                out.flush().await?;
                parts.recv().await
            }
        };
        match part {
            Some(StreamPart::Chunk(c)) => out.parts(service, msg::STREAM_CHUNK, &[], &c).await?,
            Some(StreamPart::End(checksum)) => {
                out.msg(service, &spark_proto::cache::StreamEnd { checksum });
                return Ok(false);
            }
            Some(StreamPart::Fail(e)) => {
                out.msg(service, &e);
                return Ok(false);
            }
            None => {
                // The producer died mid-stream: the client must not take what it got for a whole blob.
                let e = ErrorResponse::new(
                    ErrorCode::Internal,
                    "the streamed reply failed part-way; closing the connection",
                );
                out.msg(service, &e);
                return Ok(true);
            }
        }
    }
}

/// Writes all buffers with as few syscalls as the kernel allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}
