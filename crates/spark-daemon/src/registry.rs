//! The dispatch registry: services register by id; the connection loop routes each frame to its service.
//!
//! Adding a service is one folder under `services/` implementing [`Service`] plus one `register` line in
//! [`crate::server::build_registry`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use spark_proto::{ErrorCode, ErrorResponse, Frame, Message, ProtoError};

use crate::conn::{Conn, ConnError};
use crate::server::ServerState;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Answer the request with this ErrorResponse; the connection stays usable.
    #[error("{0}")]
    Reply(ErrorResponse),
    /// The connection can no longer be trusted to be in sync (e.g. a broken stream): send this error if
    /// nothing was sent yet, then close.
    #[error("closing connection: {0}")]
    Close(ErrorResponse),
    /// The connection itself failed.
    #[error(transparent)]
    Conn(#[from] ConnError),
}

impl HandlerError {
    pub fn reply(code: ErrorCode, msg: impl Into<String>) -> Self {
        HandlerError::Reply(ErrorResponse::new(code, msg))
    }
}

impl From<ProtoError> for HandlerError {
    fn from(e: ProtoError) -> Self {
        HandlerError::reply(ErrorCode::Malformed, format!("malformed request: {e}"))
    }
}

/// Everything a handler may use for one request.
pub struct Request<'a> {
    pub frame: Frame,
    pub conn: &'a mut Conn,
    pub state: &'a Arc<ServerState>,
}

impl Request<'_> {
    /// Decodes the request payload as `M`.
    pub fn decode<M: Message>(&self) -> Result<M, HandlerError> {
        Ok(M::decode(&self.frame.payload)?)
    }

    /// Sends the single reply to this request.
    pub async fn reply<M: Message>(&mut self, msg: &M) -> Result<(), HandlerError> {
        self.conn.send(self.frame.service, msg).await?;
        Ok(())
    }
}

/// A service: one id, one handler.
pub trait Service: Send + Sync + 'static {
    fn id(&self) -> u16;

    /// Capability names this service adds to the Hello response.
    fn capabilities(&self) -> &'static [&'static str] {
        &[]
    }

    /// Handles one request. Must send exactly one logical reply (a message, or a stream), or return an
    /// error for the dispatcher to send.
    fn handle<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Result<(), HandlerError>>;
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
