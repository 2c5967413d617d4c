//! Server-initiated events: a bounded queue per connection, filled by any service at any time and drained by
//! the connection's writer between replies.
//!
//! The queue is bounded twice, by count and by bytes, so a client that stops reading costs the daemon a fixed
//! amount of memory however fast events are produced. What does not fit is dropped and counted; the writer later
//! sends one `EventsLost` event (Control, `0x8001`) with the count, so a client never misses events silently.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use spark_proto::{Message, msg};
use tokio::sync::mpsc;

/// Events queued per connection at most.
pub const EVENT_QUEUE_LEN: usize = 1024;
/// Bytes of event payload queued per connection at most.
pub const EVENT_QUEUE_BYTES: usize = 8 << 20;

/// One server-initiated frame.
#[derive(Debug, Clone)]
pub struct Event {
    pub service: u16,
    pub msg_type: u16,
    pub payload: Bytes,
    /// When set, written (little-endian) in place of the payload's first four bytes: one encoded body is then
    /// shared by every receiver of a fan-out, each with its own leading id (a Collab subscription), instead of
    /// an encoding and an allocation per receiver.
    pub head: Option<u32>,
}

impl Event {
    pub fn new(service: u16, msg_type: u16, payload: Bytes) -> Event {
        Event {
            service,
            msg_type,
            payload,
            head: None,
        }
    }

    /// An event whose payload is `body` with its first four bytes replaced by `head` (see [`Event::head`]).
    /// `body` must be at least four bytes long.
    pub fn with_head(service: u16, msg_type: u16, body: Bytes, head: u32) -> Event {
        debug_assert!(body.len() >= 4, "a headed event's body starts with its u32");
        Event {
            service,
            msg_type,
            payload: body,
            head: Some(head),
        }
    }

    /// The payload as written: the replacing leading bytes, if any, and the rest.
    pub fn wire_parts(&self) -> (Option<[u8; 4]>, &[u8]) {
        match self.head {
            Some(h) if self.payload.len() >= 4 => (Some(h.to_le_bytes()), &self.payload[4..]),
            _ => (None, &self.payload[..]),
        }
    }
}

/// What became of an event handed to [`EventSender::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The queue was full: dropped and counted; the client will get an `EventsLost`.
    Dropped,
    /// The connection is gone: drop the subscription.
    Closed,
}

struct Shared {
    lost: AtomicU64,
    bytes: AtomicUsize,
}

/// Queues events on one connection. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Event>,
    shared: Arc<Shared>,
}

/// Events the writer takes off the channel at once: one release of their slots instead of one per event
/// (a fan-out brings dozens per wake-up).
const TAKE_AT_ONCE: usize = 128;

/// The writer's end of the queue.
pub(crate) struct EventQueue {
    rx: mpsc::Receiver<Event>,
    /// Taken off the channel, not yet handed out; their bytes still count against the byte bound.
    taken: std::collections::VecDeque<Event>,
    /// Where a batch lands first (kept to spare an allocation per batch).
    batch: Vec<Event>,
    shared: Arc<Shared>,
}

pub(crate) fn channel() -> (EventSender, EventQueue) {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE_LEN);
    let shared = Arc::new(Shared {
        lost: AtomicU64::new(0),
        bytes: AtomicUsize::new(0),
    });
    (
        EventSender {
            tx,
            shared: shared.clone(),
        },
        EventQueue {
            rx,
            taken: std::collections::VecDeque::with_capacity(TAKE_AT_ONCE),
            batch: Vec::with_capacity(TAKE_AT_ONCE),
            shared,
        },
    )
}

impl EventSender {
    /// Queues an event without waiting.
    pub fn send(&self, ev: Event) -> Sent {
        debug_assert!(msg::is_event(ev.msg_type), "events use types >= 0x8000");
        if self.tx.is_closed() {
            return Sent::Closed;
        }
        let len = ev.payload.len();
        let before = self.shared.bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > EVENT_QUEUE_BYTES && before > 0 {
            self.shared.bytes.fetch_sub(len, Ordering::AcqRel);
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            return Sent::Dropped;
        }
        match self.tx.try_send(ev) {
            Ok(()) => Sent::Queued,
            Err(e) => {
                self.shared.bytes.fetch_sub(len, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        self.shared.lost.fetch_add(1, Ordering::Relaxed);
                        Sent::Dropped
                    }
                    mpsc::error::TrySendError::Closed(_) => Sent::Closed,
                }
            }
        }
    }

    /// Queues a typed event message on `service`.
    pub fn send_msg<M: Message>(&self, service: u16, m: &M) -> Sent {
        let mut p = BytesMut::new();
        m.encode(&mut p);
        self.send(Event::new(service, M::TYPE, p.freeze()))
    }

    /// Queues an event if the connection's queue has room, else hands it back untouched (not counted as
    /// lost): for a producer with its own backlog that only wants to skip it when it is empty.
    pub fn try_send_or_return(&self, ev: Event) -> Result<(), Event> {
        let len = ev.payload.len();
        let before = self.shared.bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > EVENT_QUEUE_BYTES && before > 0 {
            self.shared.bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(ev);
        }
        self.tx.try_send(ev).map_err(|e| {
            self.shared.bytes.fetch_sub(len, Ordering::AcqRel);
            e.into_inner()
        })
    }

    /// Queues an event, waiting while the connection's queue is full, for a producer that keeps its own
    /// bounded backlog and reports its own losses (Collab subscriptions): nothing is dropped here.
    pub async fn send_wait(&self, ev: Event) -> Sent {
        let len = ev.payload.len();
        // The byte bound still holds: wait for the writer to drain rather than grow past it.
        while self.shared.bytes.load(Ordering::Acquire) + len > EVENT_QUEUE_BYTES
            && self.shared.bytes.load(Ordering::Acquire) > 0
        {
            if self.tx.is_closed() {
                return Sent::Closed;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let Ok(permit) = self.tx.reserve().await else {
            return Sent::Closed;
        };
        self.shared.bytes.fetch_add(len, Ordering::AcqRel);
        permit.send(ev);
        Sent::Queued
    }

    /// True once the connection's writer is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl EventQueue {
    /// Cancel-safe: what was taken off the channel stays in `taken`.
    pub(crate) async fn recv(&mut self) -> Option<Event> {
        if self.taken.is_empty() {
            self.rx.recv_many(&mut self.batch, TAKE_AT_ONCE).await;
            self.taken.extend(self.batch.drain(..));
        }
        self.pop()
    }

    pub(crate) fn try_recv(&mut self) -> Option<Event> {
        if self.taken.is_empty() {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            // Only what is there now; the next `recv` registers the writer's real waker.
            let _ = self
                .rx
                .poll_recv_many(&mut cx, &mut self.batch, TAKE_AT_ONCE);
            self.taken.extend(self.batch.drain(..));
        }
        self.pop()
    }

    fn pop(&mut self) -> Option<Event> {
        let ev = self.taken.pop_front()?;
        self.release(&ev);
        Some(ev)
    }

    fn release(&self, ev: &Event) {
        self.shared
            .bytes
            .fetch_sub(ev.payload.len(), Ordering::AcqRel);
    }

    /// Events dropped since the last call, once the queue has room again (at most half full), so the
    /// `EventsLost` that reports them is not itself followed by more losses at once.
    pub(crate) fn take_lost(&self) -> u64 {
        if self.shared.lost.load(Ordering::Relaxed) == 0 || self.rx.len() > EVENT_QUEUE_LEN / 2 {
            return 0;
        }
        self.shared.lost.swap(0, Ordering::Relaxed)
    }
}
