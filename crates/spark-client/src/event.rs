//! Server-initiated events (`msg_type >= 0x8000`, protocol §4.4) and the bounded queue they wait in.
//!
//! Events arrive on the one connection between replies. Whoever happens to be reading the socket — a
//! request waiting for its reply, or [`Client::next_event`](crate::Client::next_event) when the client is
//! idle — puts them in the client's queue; [`EventReceiver`] and `next_event` take them out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spark_proto::control::EventsLost;
use spark_proto::{Message, service};

use crate::error::Result;

/// How many events a client keeps before it drops new ones (see [`EventReceiver::dropped`]).
pub const DEFAULT_EVENT_QUEUE: usize = 4096;

/// One server-initiated frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub service: u16,
    pub msg_type: u16,
    pub payload: Bytes,
}

impl Event {
    /// Decodes the payload as `M` when this event is an `M` on `service`; `Ok(None)` when it is another
    /// event. A payload that does not decode is [`crate::Error::Protocol`].
    pub fn decode<M: Message>(&self, service: u16) -> Result<Option<M>> {
        if self.service != service || self.msg_type != M::TYPE {
            return Ok(None);
        }
        Ok(Some(M::decode(&self.payload)?))
    }

    /// For the Control event EventsLost: how many events the daemon dropped for this connection.
    pub fn events_lost(&self) -> Option<u64> {
        self.decode::<EventsLost>(service::CONTROL)
            .ok()
            .flatten()
            .map(|e| e.dropped)
    }
}

/// The client's side of the event stream: a bounded FIFO shared by the connection and its receivers.
#[derive(Debug)]
pub(crate) struct EventQueue {
    events: Mutex<VecDeque<Event>>,
    arrived: Condvar,
    /// Threads in [`EventQueue::pop_within`]'s wait, counted under the `events` lock: a push signals only
    /// when someone waits (a condvar signal is a system call even with nobody to wake, once per event).
    waiting: AtomicUsize,
    capacity: usize,
    dropped: AtomicU64,
}

impl EventQueue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(EventQueue {
            events: Mutex::new(VecDeque::new()),
            arrived: Condvar::new(),
            waiting: AtomicUsize::new(0),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Event>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `e`, or counts it as dropped when the queue is full: a caller that stopped looking at events
    /// must not make the client's memory grow without bound.
    pub(crate) fn push(&self, e: Event) {
        let mut q = self.lock();
        if q.len() >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push_back(e);
        let waiting = self.waiting.load(Ordering::Relaxed) > 0;
        drop(q);
        if waiting {
            self.arrived.notify_one();
        }
    }

    /// Whether one more event fits.
    pub(crate) fn has_room(&self) -> bool {
        self.lock().len() < self.capacity
    }

    pub(crate) fn pop(&self) -> Option<Event> {
        self.lock().pop_front()
    }

    pub(crate) fn pop_within(&self, wait: Duration) -> Option<Event> {
        let deadline = Instant::now() + wait;
        let mut q = self.lock();
        loop {
            if let Some(e) = q.pop_front() {
                return Some(e);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.waiting.fetch_add(1, Ordering::Relaxed);
            q = self
                .arrived
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A handle on a client's event queue. Cloneable and `Send`; every handle (and
/// [`Client::next_event`](crate::Client::next_event)) takes from the same queue, so each event is seen
/// once.
///
/// A receiver does not read the socket itself: it sees events that arrived while some thread was talking
/// to the daemon. A program that only waits for events calls `Client::next_event`, which reads the socket
/// when no request is in flight.
#[derive(Debug, Clone)]
pub struct EventReceiver {
    queue: Arc<EventQueue>,
}

impl EventReceiver {
    pub(crate) fn new(queue: Arc<EventQueue>) -> Self {
        EventReceiver { queue }
    }

    /// The oldest queued event, without waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.queue.pop()
    }

    /// The oldest queued event, waiting up to `wait` for another thread's read to queue one.
    pub fn recv_timeout(&self, wait: Duration) -> Option<Event> {
        self.queue.pop_within(wait)
    }

    /// Events waiting now.
    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events this client dropped because its queue was full (events the daemon dropped are reported
    /// separately, by an EventsLost event).
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u8) -> Event {
        Event {
            service: 2,
            msg_type: 0x8100,
            payload: Bytes::from(vec![n]),
        }
    }

    #[test]
    fn a_full_queue_drops_new_events_and_counts_them() {
        let q = EventQueue::new(2);
        let r = EventReceiver::new(q.clone());
        for n in 0..5 {
            q.push(ev(n));
        }
        assert_eq!(r.len(), 2);
        assert_eq!(r.dropped(), 3);
        assert_eq!(r.try_recv(), Some(ev(0)));
        assert_eq!(r.try_recv(), Some(ev(1)));
        assert_eq!(r.try_recv(), None);
    }

    #[test]
    fn recv_timeout_sees_an_event_pushed_by_another_thread() {
        let q = EventQueue::new(8);
        let r = EventReceiver::new(q.clone());
        assert_eq!(r.recv_timeout(Duration::from_millis(5)), None);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            q.push(ev(7));
        });
        assert_eq!(r.recv_timeout(Duration::from_secs(5)), Some(ev(7)));
        t.join().unwrap();
    }

    #[test]
    fn events_lost_decodes_only_the_control_event() {
        let mut p = bytes::BytesMut::new();
        EventsLost { dropped: 42 }.encode(&mut p);
        let lost = Event {
            service: service::CONTROL,
            msg_type: spark_proto::control::EVENTS_LOST,
            payload: p.freeze(),
        };
        assert_eq!(lost.events_lost(), Some(42));
        let elsewhere = Event {
            service: service::SHADER,
            ..lost.clone()
        };
        assert_eq!(elsewhere.events_lost(), None);
        assert_eq!(ev(1).events_lost(), None);
        let short = Event {
            payload: Bytes::from_static(&[1, 2]),
            ..lost
        };
        assert!(matches!(
            short.decode::<EventsLost>(service::CONTROL),
            Err(crate::Error::Protocol(_))
        ));
    }
}
