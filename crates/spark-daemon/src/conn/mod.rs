//! One client connection: a reader task and a writer task joined by a bounded queue of replies in request
//! order, plus a bounded queue of events ([`crate::events`]).
//!
//! ```text
//!  socket ──► reader ──► handler (polled once; a task of its own if it must wait) ──┐
//!               │  slot per request, in order (≤ MAX_IN_FLIGHT queued)              ▼
//!               └──────────────────────────────────────────────────────────────► writer ──► socket
//!  any service ──► EventSender ──► event queue (bounded) ──────────────────────────────┘ (between replies)
//! ```
//!
//! When the connection ends, however it ends, every service's `on_disconnect` runs once.

pub(crate) mod effect_order;
pub(crate) mod reader;
pub mod stats;
pub(crate) mod writer;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use spark_proto::{ErrorCode, ErrorResponse, Message, service};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::registry::{ConnInfo, Ctx, Peer, Registry};
use crate::state::ServerState;
use crate::transport::Accepted;

/// Requests of one connection whose replies may be pending at once. Past it the reader stops reading.
pub const MAX_IN_FLIGHT: usize = 32;

/// What every connection shares.
pub struct ConnEnv {
    pub state: Arc<ServerState>,
    pub registry: Arc<Registry>,
    pub frame_timeout: Duration,
}

/// Serves one accepted connection until it ends.
pub async fn serve<R, W>(conn: Accepted<R, W>, env: Arc<ConnEnv>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let id = env.state.connection_opened();
    if let Some(why) = conn.refused {
        warn!("refused a connection: {why}");
        refuse(conn.read, conn.write, why).await;
        env.state.connection_closed(id);
        return;
    }
    serve_accepted(id, conn.read, conn.write, conn.peer, &env).await;
    for svc in env.registry.services() {
        svc.on_disconnect(id);
    }
    env.state.connection_closed(id);
}

async fn serve_accepted<R, W>(id: u64, read: R, write: W, peer: Peer, env: &ConnEnv)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (events, queue) = crate::events::channel();
    let ctx = Ctx {
        conn: Arc::new(ConnInfo { id, peer, events }),
        state: env.state.clone(),
    };
    let (slots_tx, slots_rx) = mpsc::channel(MAX_IN_FLIGHT);
    let shared = Arc::new(writer::Shared::new(write, env.state.clone()));
    let mut writer = tokio::spawn(writer::run(shared.clone(), slots_rx, queue));
    let frames = reader::FrameReader::new(read, env.frame_timeout);
    let mut r = reader::Reader::new(frames, &ctx, &env.registry, slots_tx, shared);
    let ended = r.run(&mut writer).await;
    // Dropping the reader closes the reply queue: the writer sends what is still owed, then stops. A client
    // that stopped reading gets the frame timeout to take it, then the connection is dropped.
    drop(r);
    let end = match ended {
        Some(end) => end,
        None => match tokio::time::timeout(env.frame_timeout, &mut writer).await {
            Ok(end) => end.unwrap_or(writer::End::Drained),
            Err(_) => {
                writer.abort();
                writer::End::Failed(std::io::ErrorKind::TimedOut.into())
            }
        },
    };
    match end {
        writer::End::Failed(e) => debug!(conn = id, "connection ended: writing failed: {e}"),
        end => debug!(conn = id, "connection ended: {end:?}"),
    }
}

/// Tells a refused peer why, then discards what it sends for at most a second until it hangs up: closing with
/// its request unread would reset the connection, and the client would never see the reason.
async fn refuse<R, W>(mut read: R, mut write: W, why: String)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let e = ErrorResponse::new(ErrorCode::PermissionDenied, why);
    let mut p = BytesMut::new();
    e.encode(&mut p);
    if let Ok(f) = spark_proto::Frame::new(service::CONTROL, ErrorResponse::TYPE, p.freeze()) {
        let _ = write.write_all(&f.to_bytes()).await;
        let _ = write.flush().await;
    }
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
