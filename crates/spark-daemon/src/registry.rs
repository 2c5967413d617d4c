//! The service seam: the [`Service`] trait, what a handler gets ([`Request`], [`Ctx`]) and what it returns
//! ([`Reply`] or a [`HandlerError`]), and the id → service table.
//!
//! Handlers never touch the socket. They decode their request, do the work and return one logical reply; the
//! connection layer ([`crate::conn`]) encodes it and releases it in request order. Adding a service is one
//! folder under `services/` implementing [`Service`] plus one `register` line in [`crate::build_registry`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use spark_proto::{ErrorCode, ErrorResponse, Frame, Message, ProtoError};
use tokio::sync::mpsc;

use crate::events::EventSender;
use crate::state::ServerState;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler resolves to.
pub type HandlerResult = Result<Reply, HandlerError>;

/// What a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Answer the request with this ErrorResponse; the connection stays usable.
    #[error("{0}")]
    Reply(ErrorResponse),
    /// The connection can no longer be trusted to be in step (a broken upload stream): the error is sent in
    /// its place in the reply order, then the connection closes.
    #[error("closing connection: {0}")]
    Close(ErrorResponse),
    /// The connection ended under this request (EOF in an upload): there is no one to answer.
    #[error("the connection ended before the request completed")]
    Gone,
}

impl HandlerError {
    pub fn reply(code: ErrorCode, msg: impl Into<String>) -> Self {
        HandlerError::Reply(ErrorResponse::new(code, msg))
    }
    pub fn close(code: ErrorCode, msg: impl Into<String>) -> Self {
        HandlerError::Close(ErrorResponse::new(code, msg))
    }
}

impl From<ProtoError> for HandlerError {
    fn from(e: ProtoError) -> Self {
        HandlerError::reply(ErrorCode::Malformed, format!("malformed request: {e}"))
    }
}

/// A reply, encoded by the connection layer.
pub enum Reply {
    /// One message.
    Msg(Box<dyn Encode>),
    /// One frame whose payload is `head` then `body`: a blob is never copied to be joined with its status byte,
    /// and a large one is written from where it lies.
    Blob {
        msg_type: u16,
        head: Bytes,
        body: Bytes,
    },
    /// A first message, then the parts of a streamed blob until [`StreamPart::End`] or [`StreamPart::Fail`].
    /// Nothing else (no event, no other reply) is written between the first frame and the terminal one.
    Stream {
        first: Box<dyn Encode>,
        parts: mpsc::Receiver<StreamPart>,
    },
}

impl Reply {
    pub fn msg<M: Message + Send + 'static>(m: M) -> Reply {
        Reply::Msg(Box::new(m))
    }
}

/// One piece of a streamed reply.
pub enum StreamPart {
    Chunk(Bytes),
    /// The XXH3-128 of the whole blob: written as StreamEnd.
    End(u128),
    /// Ends the stream with an ErrorResponse instead of a StreamEnd (the client discards what it got).
    Fail(ErrorResponse),
}

/// A message the writer can encode: every [`Message`].
pub trait Encode: Send {
    fn msg_type(&self) -> u16;
    fn encode(&self, out: &mut BytesMut);
}

impl<M: Message + Send> Encode for M {
    fn msg_type(&self) -> u16 {
        M::TYPE
    }
    fn encode(&self, out: &mut BytesMut) {
        Message::encode(self, out)
    }
}

/// Who is on the other end of a connection, as the transport saw it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
}

/// One connection, as handlers see it.
pub struct ConnInfo {
    /// Unique for the daemon's lifetime; never reused.
    pub id: u64,
    pub peer: Peer,
    /// Queues server-initiated events on this connection.
    pub events: EventSender,
}

/// A handler's context: its connection and the daemon.
#[derive(Clone)]
pub struct Ctx {
    pub conn: Arc<ConnInfo>,
    pub state: Arc<ServerState>,
}

impl Ctx {
    /// Resolves when the daemon starts shutting down.
    pub async fn shutdown(&self) {
        self.state.shutting_down().await
    }
}

/// One request.
pub struct Request {
    pub frame: Frame,
    pub ctx: Ctx,
    /// For a request that opens an upload ([`Service::opens_upload`]): the stream's frames, routed here by the
    /// connection's reader.
    pub upload: Option<mpsc::Receiver<UploadPart>>,
    /// Another whole request was already read behind this one (the client pipelines): work that batches,
    /// such as a small put, should join a batch rather than run alone.
    pub more_behind: bool,
}

/// A frame of an upload stream, or why the stream broke.
pub enum UploadPart {
    /// A StreamChunk's payload.
    Chunk(Bytes),
    /// The StreamEnd frame's payload.
    End(Bytes),
    /// The reader saw something that breaks the stream; the handler answers with this and the connection
    /// closes.
    Abort(ErrorResponse),
}

impl Request {
    /// Decodes the request payload as `M`.
    pub fn decode<M: Message>(&self) -> Result<M, HandlerError> {
        Ok(M::decode(&self.frame.payload)?)
    }

    /// The request's upload stream (present when the service said the request opens one).
    pub fn take_upload(&mut self) -> Result<mpsc::Receiver<UploadPart>, HandlerError> {
        self.upload
            .take()
            .ok_or_else(|| HandlerError::reply(ErrorCode::Internal, "request has no upload stream"))
    }
}

/// A service: one id, one handler.
pub trait Service: Send + Sync + 'static {
    fn id(&self) -> u16;

    /// Capability names this service adds to the Hello response.
    fn capabilities(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether `frame` opens an upload stream: the reader then routes the StreamChunk/StreamEnd frames that
    /// follow to this request instead of treating them as requests. Must be decided from the frame alone.
    fn opens_upload(&self, _frame: &Frame) -> bool {
        false
    }

    /// Whether `frame` changes state (a put, a clear, an invalidation). The connection keeps effects in request
    /// order: a write starts after every earlier request of its connection has finished, and any request
    /// starts after every earlier write has. Requests that only read run concurrently.
    fn is_write(&self, _frame: &Frame) -> bool {
        false
    }

    /// The one key `frame` reads or writes, as a hash, when it touches exactly one (a cache's Get or Put);
    /// `None` when it may touch any (a clear, a stats read). Effects are then ordered per key: a write waits
    /// only for earlier requests of its connection with the same key (and for any keyless one), so pipelined
    /// puts of different keys run together and the store can commit them as one batch. Two keys that hash
    /// alike are merely ordered as one. Must be decided from the frame alone.
    fn effect_key(&self, _frame: &Frame) -> Option<u64> {
        None
    }

    /// Handles one request. Requests of one connection may run concurrently; their replies are released in
    /// request order by the connection layer.
    fn handle(self: Arc<Self>, req: Request) -> BoxFuture<HandlerResult>;

    /// Called once when a connection ends, however it ends, so the service can release what the connection
    /// held (subscriptions, locks, sponsors).
    fn on_disconnect(&self, _conn_id: u64) {}

    /// Called once on the runtime before the first connection is accepted. A service that restores state
    /// from an earlier run starts that here, in a task of its own, so startup never waits for it.
    fn start(self: Arc<Self>) {}

    /// The service's own levels and counters (the Watch service's roots and subscriptions …), read at scrape
    /// time by the HTTP front's `/metrics`. None by default.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[derive(Default)]
pub struct Registry {
    services: BTreeMap<u16, Arc<dyn Service>>,
}

impl Registry {
    pub fn register(&mut self, svc: Arc<dyn Service>) {
        let id = svc.id();
        let prev = self.services.insert(id, svc);
        assert!(prev.is_none(), "service id 0x{id:04x} registered twice");
    }

    pub fn get(&self, id: u16) -> Option<&Arc<dyn Service>> {
        self.services.get(&id)
    }

    /// Registered ids, ascending.
    pub fn ids(&self) -> Vec<u16> {
        self.services.keys().copied().collect()
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<dyn Service>> {
        self.services.values()
    }

    /// Every service's capabilities, sorted, without duplicates.
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = self
            .services
            .values()
            .flat_map(|s| s.capabilities().iter().map(|c| c.to_string()))
            .collect();
        caps.sort();
        caps.dedup();
        caps
    }
}

/// The reply for a frame whose service is not registered.
pub fn unknown_service(id: u16) -> ErrorResponse {
    ErrorResponse::new(
        ErrorCode::UnknownService,
        format!("no service with id 0x{id:04x} is registered in this sparkd"),
    )
}

/// The reply for a message type a service does not handle.
pub fn unknown_message(frame: &Frame) -> HandlerError {
    HandlerError::reply(
        ErrorCode::UnknownMessage,
        format!(
            "service 0x{:04x} ({}) has no message type 0x{:04x}",
            frame.service,
            spark_proto::service::name(frame.service),
            frame.msg_type
        ),
    )
}
