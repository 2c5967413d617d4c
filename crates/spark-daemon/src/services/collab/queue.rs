//! One subscription's bounded queue and the task that moves it onto its connection.
//!
//! Publishers never wait: [`SubQueue::offer`] appends or, when the queue is full, counts a drop. The pump
//! task waits for the connection's writer ([`EventSender::send_wait`]), so a subscriber that stops reading
//! fills only its own queue. The drops of one overflow become one `Lagged` event placed where the messages
//! went missing: before the next message that fits, or when the queue drains.
//!
//! While the backlog is empty and nothing is in flight, an offer goes straight into the connection's queue
//! (order is kept: nothing of this subscription is ahead of it), which saves the pump a wake-up per message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use spark_proto::Message;
use spark_proto::collab::Lagged;
use spark_proto::service;
use tokio::sync::Notify;

use super::lock;
use crate::events::{Event, EventSender, Sent};

/// What a subscription receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Messages whose topic matches the pattern (`spark_proto::collab::topic_matches`).
    Topic(String),
    /// Key changes under the prefix.
    Kv(String),
}

struct State {
    q: VecDeque<Event>,
    /// Messages dropped since the last Lagged event.
    lag: u64,
    /// The pump holds an event it has not handed to the connection yet.
    inflight: bool,
}

pub struct SubQueue {
    pub id: u32,
    pub conn: u64,
    pub session: String,
    pub filter: Filter,
    cap: usize,
    state: std::sync::Mutex<State>,
    wake: Notify,
    closed: AtomicBool,
    /// The hub's drop counter (stats).
    dropped: Arc<AtomicU64>,
    events: EventSender,
}

fn encode<M: Message>(m: &M) -> Event {
    let mut p = BytesMut::new();
    m.encode(&mut p);
    Event::new(service::COLLAB, M::TYPE, p.freeze())
}

/// One fan-out's message, encoded once for all the subscriptions it goes to. Every message a subscription
/// receives starts with its `u32` subscription id, so each gets an event sharing this body with its own id
/// written in front ([`Event::with_head`]): no encoding, allocation or string copy per subscriber.
pub struct SharedMessage {
    msg_type: u16,
    body: Bytes,
}

impl SharedMessage {
    /// `m` with any subscription id (it is replaced); `size_hint` is roughly its encoded length.
    pub fn encode<M: Message>(m: &M, size_hint: usize) -> SharedMessage {
        let mut p = BytesMut::with_capacity(size_hint);
        m.encode(&mut p);
        SharedMessage {
            msg_type: M::TYPE,
            body: p.freeze(),
        }
    }

    /// The event subscription `id` receives.
    pub fn event_for(&self, id: u32) -> Event {
        Event::with_head(service::COLLAB, self.msg_type, self.body.clone(), id)
    }
}

impl SubQueue {
    /// A new queue of `cap` events and its pump task (needs a tokio runtime).
    pub fn start(
        id: u32,
        conn: u64,
        session: String,
        filter: Filter,
        cap: usize,
        events: EventSender,
        dropped: Arc<AtomicU64>,
    ) -> Arc<SubQueue> {
        let q = Arc::new(SubQueue {
            id,
            conn,
            session,
            filter,
            cap: cap.max(1),
            state: std::sync::Mutex::new(State {
                q: VecDeque::new(),
                lag: 0,
                inflight: false,
            }),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            dropped,
            events,
        });
        tokio::spawn(pump(q.clone()));
        q
    }

    /// Queues the fan-out's message for the subscriber; false (and counted) when its queue is full.
    pub fn offer(&self, m: &SharedMessage) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let mut s = lock(&self.state);
        if s.q.len() >= self.cap {
            s.lag += 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if s.lag > 0 {
            // The gap is reported where it happened, before the first message after it.
            let lagged = encode(&Lagged {
                subscription: self.id,
                dropped: std::mem::take(&mut s.lag),
            });
            s.q.push_back(lagged);
        }
        let ev = m.event_for(self.id);
        // Fast path: nothing of ours is waiting, so handing this straight to the connection keeps the order
        // and saves the pump a wake-up. A full connection queue sends it through the backlog instead.
        let ev = if s.q.is_empty() && !s.inflight {
            match self.events.try_send_or_return(ev) {
                Ok(()) => return true,
                Err(ev) => ev,
            }
        } else {
            ev
        };
        s.q.push_back(ev);
        drop(s);
        self.wake.notify_one();
        true
    }

    /// Ends the pump; queued events are discarded.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        lock(&self.state).q.clear();
        self.wake.notify_one();
    }

    /// The next event to deliver: a queued one, or the pending Lagged once the queue is empty. Marks it in
    /// flight until [`SubQueue::delivered`].
    fn next(&self) -> Option<Event> {
        let mut s = lock(&self.state);
        let ev = match s.q.pop_front() {
            Some(e) => e,
            None if s.lag > 0 => {
                let lag = std::mem::take(&mut s.lag);
                encode(&Lagged {
                    subscription: self.id,
                    dropped: lag,
                })
            }
            None => return None,
        };
        s.inflight = true;
        Some(ev)
    }

    fn delivered(&self) {
        lock(&self.state).inflight = false;
    }
}

async fn pump(q: Arc<SubQueue>) {
    loop {
        if q.closed.load(Ordering::Relaxed) {
            return;
        }
        match q.next() {
            Some(ev) => {
                let sent = q.events.send_wait(ev).await;
                q.delivered();
                if sent == Sent::Closed {
                    q.closed.store(true, Ordering::Relaxed);
                    return;
                }
            }
            // notify_one keeps a permit when nobody waits, so an offer between next() and here is not lost.
            None => q.wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use spark_proto::collab::{KvChanged, TopicMessage};

    use super::*;

    fn bytes_of<M: Message>(m: &M) -> Vec<u8> {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        b.to_vec()
    }

    /// What the writer sends for an event: its head, if any, then the rest of its payload.
    fn written(e: &Event) -> Vec<u8> {
        let (head, rest) = e.wire_parts();
        let mut v = head.map_or(Vec::new(), |h| h.to_vec());
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn a_shared_message_is_written_as_its_own_encoding_for_each_subscription() {
        let msg = |subscription| TopicMessage {
            subscription,
            session: "level1".into(),
            topic: "cursor/ana".into(),
            publisher: 0x1234_5678_0000_0001,
            seq: 42,
            payload: Bytes::from_static(b"x=1,y=2"),
        };
        let shared = SharedMessage::encode(&msg(0), 8);
        for id in [1, 2, 255, 256, 0xDEAD_BEEF, u32::MAX] {
            let e = shared.event_for(id);
            assert_eq!(
                (e.service, e.msg_type),
                (service::COLLAB, TopicMessage::TYPE)
            );
            assert_eq!(written(&e), bytes_of(&msg(id)), "subscription {id}");
        }
        let kv = |subscription| KvChanged {
            subscription,
            session: "s".into(),
            key: "cfg/lod".into(),
            version: 7,
            deleted: false,
            value: Bytes::new(),
        };
        let shared = SharedMessage::encode(&kv(0), 0);
        assert_eq!(written(&shared.event_for(9)), bytes_of(&kv(9)));
    }

    #[test]
    fn an_event_without_a_head_is_written_as_it_is() {
        let e = Event::new(service::COLLAB, 0x8004, Bytes::from_static(b"abcdef"));
        assert_eq!(written(&e), b"abcdef");
        // A head on a body too short to hold it is ignored rather than cutting into the body.
        let e = Event {
            head: Some(1),
            ..Event::new(service::COLLAB, 0x8004, Bytes::from_static(b"ab"))
        };
        assert_eq!(written(&e), b"ab");
    }
}
