//! A service for the connection layer's tests only: compiled with `--features test-services` (never in a
//! release build) and registered only when `SPARKD_TEST_SERVICES=1` is set, so every other test sees the
//! daemon users get. Requests that wait on each other, sleep, fan events out, stream with an event queued
//! mid-stream, and a record of disconnects. Service id `0x7F00`; its message layouts are private to the tests.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::{Notify, mpsc};

use crate::events::{Event, EventSender, Sent};
use crate::registry::{
    BoxFuture, Encode, HandlerError, HandlerResult, Reply, Request, Service, StreamPart,
    unknown_message,
};

pub const ID: u16 = 0x7F00;
pub const WAIT_GATE: u16 = 0x0001;
pub const SLEEP: u16 = 0x0003;
pub const OPEN_GATE: u16 = 0x0005;
pub const SUBSCRIBE: u16 = 0x0007;
pub const PUBLISH: u16 = 0x0009;
pub const WHO_AM_I: u16 = 0x000B;
pub const STREAM_WITH_EVENT: u16 = 0x000D;
pub const DISCONNECTS: u16 = 0x000F;
/// Panics after its first await (so it is not answered inline); with a non-empty payload, at once.
pub const PANIC: u16 = 0x0011;
/// The event this service sends.
pub const EVENT: u16 = 0x8000;
/// Where `on_disconnect` appends `<conn id>\n`, so a test can see disconnects that outlive the daemon.
pub const DISCONNECT_LOG_ENV: &str = "SPARKD_TEST_DISCONNECT_LOG";
/// Set to `1` to register this service.
pub const ENABLE_ENV: &str = "SPARKD_TEST_SERVICES";

/// Registers the service when the environment asks for it.
pub fn register_if_asked(reg: &mut crate::registry::Registry) {
    if std::env::var_os(ENABLE_ENV).is_some_and(|v| v == "1") {
        tracing::warn!("{ENABLE_ENV}=1: registering the test-only service 0x{ID:04x}");
        reg.register(Arc::new(TestService::default()));
    }
}

/// A reply of this service: a type and a raw payload.
struct Raw(u16, Bytes);
impl Encode for Raw {
    fn msg_type(&self) -> u16 {
        self.0
    }
    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.1);
    }
}

fn raw(ty: u16, payload: BytesMut) -> HandlerResult {
    Ok(Reply::Msg(Box::new(Raw(ty, payload.freeze()))))
}

#[derive(Default)]
pub struct TestService {
    gates: Mutex<HashMap<u32, Arc<Notify>>>,
    running: AtomicU32,
    peak: AtomicU32,
    subscribers: Mutex<BTreeMap<u64, EventSender>>,
    disconnects: Mutex<BTreeMap<u64, u32>>,
}

impl TestService {
    fn gate(&self, id: u32) -> Arc<Notify> {
        self.gates.lock().unwrap().entry(id).or_default().clone()
    }

    /// Counts this handler as running; the guard uncounts it.
    fn enter(&self) -> (u32, RunGuard<'_>) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        (now, RunGuard(&self.running))
    }

    async fn wait_gate(&self, mut p: Bytes) -> HandlerResult {
        let (gate, tag) = (p.get_u32_le(), p.get_u32_le());
        let (_, _g) = self.enter();
        let n = self.gate(gate);
        let released = tokio::time::timeout(Duration::from_secs(20), n.notified())
            .await
            .is_ok();
        let mut out = BytesMut::new();
        out.put_u32_le(tag);
        out.put_u8(released as u8);
        out.put_u32_le(self.peak.load(Ordering::SeqCst));
        raw(WAIT_GATE + 1, out)
    }

    async fn sleep(&self, mut p: Bytes) -> HandlerResult {
        let (ms, tag) = (p.get_u32_le(), p.get_u32_le());
        let (now, _g) = self.enter();
        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        let mut out = BytesMut::new();
        out.put_u32_le(tag);
        out.put_u32_le(now);
        raw(SLEEP + 1, out)
    }

    fn publish(&self, mut p: Bytes) -> HandlerResult {
        let (count, size) = (p.get_u32_le(), p.get_u32_le() as usize);
        let subs: Vec<EventSender> = self.subscribers.lock().unwrap().values().cloned().collect();
        let (mut queued, mut dropped, mut closed) = (0u32, 0u32, 0u32);
        for i in 0..count {
            let mut payload = BytesMut::with_capacity(size.max(4));
            payload.put_u32_le(i);
            payload.resize(size.max(4), 0xEE);
            let payload = payload.freeze();
            for s in &subs {
                match s.send(Event::new(ID, EVENT, payload.clone())) {
                    Sent::Queued => queued += 1,
                    Sent::Dropped => dropped += 1,
                    Sent::Closed => closed += 1,
                }
            }
        }
        let mut out = BytesMut::new();
        out.put_u32_le(queued);
        out.put_u32_le(dropped);
        out.put_u32_le(closed);
        raw(PUBLISH + 1, out)
    }

    /// A streamed reply of `len` bytes in 3 chunks; after the first chunk is handed over, an event is queued on
    /// this connection. It must reach the client after the stream's end frame.
    fn stream_with_event(&self, req: &Request, mut p: Bytes) -> HandlerResult {
        let len = p.get_u32_le() as usize;
        let events = req.ctx.conn.events.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let body = Bytes::from(vec![0x5Au8; len]);
            let third = len.div_ceil(3).max(1);
            let mut hasher = spark_proto::BlobHasher::new();
            for (i, c) in body.chunks(third).enumerate() {
                hasher.update(c);
                if tx.send(StreamPart::Chunk(body.slice_ref(c))).await.is_err() {
                    return;
                }
                if i == 0 {
                    // Give the writer time to be in the middle of the stream when the event arrives.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    events.send(Event::new(ID, EVENT, Bytes::from_static(b"mid-stream")));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let _ = tx.send(StreamPart::End(hasher.digest128())).await;
        });
        let mut first = BytesMut::new();
        first.put_u8(2);
        first.put_u64_le(len as u64);
        Ok(Reply::Stream {
            first: Box::new(Raw(STREAM_WITH_EVENT + 1, first.freeze())),
            parts: rx,
        })
    }

    fn disconnects(&self) -> HandlerResult {
        let d = self.disconnects.lock().unwrap();
        let mut out = BytesMut::new();
        out.put_u16_le(d.len() as u16);
        for (id, n) in d.iter() {
            out.put_u64_le(*id);
            out.put_u32_le(*n);
        }
        raw(DISCONNECTS + 1, out)
    }
}

struct RunGuard<'a>(&'a AtomicU32);
impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn need(p: &Bytes, n: usize) -> Result<(), HandlerError> {
    if p.len() < n {
        return Err(HandlerError::reply(
            spark_proto::ErrorCode::Malformed,
            format!("test message needs {n} bytes"),
        ));
    }
    Ok(())
}

impl Service for TestService {
    fn id(&self) -> u16 {
        ID
    }

    fn capabilities(&self) -> &'static [&'static str] {
        &["test-services"]
    }

    fn handle(self: Arc<Self>, req: Request) -> BoxFuture<HandlerResult> {
        Box::pin(async move {
            let p = req.frame.payload.clone();
            match req.frame.msg_type {
                WAIT_GATE => {
                    need(&p, 8)?;
                    self.wait_gate(p).await
                }
                SLEEP => {
                    need(&p, 8)?;
                    self.sleep(p).await
                }
                OPEN_GATE => {
                    need(&p, 4)?;
                    self.gate(p.clone().get_u32_le()).notify_one();
                    raw(OPEN_GATE + 1, BytesMut::new())
                }
                SUBSCRIBE => {
                    let id = req.ctx.conn.id;
                    self.subscribers
                        .lock()
                        .unwrap()
                        .insert(id, req.ctx.conn.events.clone());
                    let mut out = BytesMut::new();
                    out.put_u64_le(id);
                    raw(SUBSCRIBE + 1, out)
                }
                PUBLISH => {
                    need(&p, 8)?;
                    self.publish(p)
                }
                WHO_AM_I => {
                    let mut out = BytesMut::new();
                    out.put_u64_le(req.ctx.conn.id);
                    out.put_u32_le(req.ctx.conn.peer.pid.unwrap_or(0));
                    raw(WHO_AM_I + 1, out)
                }
                STREAM_WITH_EVENT => {
                    need(&p, 4)?;
                    self.stream_with_event(&req, p)
                }
                DISCONNECTS => self.disconnects(),
                PANIC => {
                    if p.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    panic!("the test service's PANIC request")
                }
                _ => Err(unknown_message(&req.frame)),
            }
        })
    }

    fn on_disconnect(&self, conn_id: u64) {
        self.subscribers.lock().unwrap().remove(&conn_id);
        *self.disconnects.lock().unwrap().entry(conn_id).or_default() += 1;
        if let Some(path) = std::env::var_os(DISCONNECT_LOG_ENV)
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            // One write(2) per line: O_APPEND keeps whole lines apart when connections end at once
            // (`writeln!` may split a line into several writes that interleave).
            let _ = f.write_all(format!("{conn_id}\n").as_bytes());
        }
    }
}
