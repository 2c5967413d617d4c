//! Control's operator requests: verify a namespace's checksums (with progress events) and trim a namespace
//! to a size. Both run on the blocking pool: they read or delete many files.

use std::time::{Duration, Instant};

use spark_proto::operator::*;
use spark_proto::{ErrorCode, service};

use crate::namespaces::{Namespace, Namespaces};
use crate::registry::{HandlerError, HandlerResult, Reply, Request};

/// At most this often a running verify reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

fn namespace(
    namespaces: &Namespaces,
    name: &str,
) -> Result<std::sync::Arc<Namespace>, HandlerError> {
    namespaces.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = namespaces.iter().map(|n| n.name()).collect();
        HandlerError::reply(
            ErrorCode::InvalidKey,
            format!(
                "no namespace '{name}'; this daemon serves {}",
                known.join(", ")
            ),
        )
    })
}

fn task_failed(e: tokio::task::JoinError) -> HandlerError {
    HandlerError::reply(ErrorCode::Internal, format!("the store task failed: {e}"))
}

pub async fn verify(namespaces: &Namespaces, req: &Request) -> HandlerResult {
    let v: Verify = req.decode()?;
    let ns = namespace(namespaces, &v.namespace)?;
    let events = req.ctx.conn.events.clone();
    let store = ns.store().clone();
    let name = ns.name().to_string();
    let r = tokio::task::spawn_blocking(move || {
        let mut last = Instant::now();
        store.verify(|r| {
            // The first entry, then every PROGRESS_EVERY, then the last: a bar that starts and ends right.
            if r.checked == 1 || r.checked == r.total || last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                events.send_msg(
                    service::CONTROL,
                    &VerifyProgress {
                        namespace: name.clone(),
                        checked: r.checked,
                        total: r.total,
                        corrupt: r.corrupt,
                    },
                );
            }
        })
    })
    .await
    .map_err(task_failed)?;
    if r.corrupt > 0 {
        tracing::warn!(
            namespace = ns.name(),
            "verify dropped {} corrupt entries",
            r.corrupt
        );
    }
    Ok(Reply::msg(VerifyResponse {
        checked: r.checked,
        bytes: r.bytes,
        corrupt: r.corrupt,
        memory_only: r.memory_only,
    }))
}

pub async fn trim(namespaces: &Namespaces, req: &Request) -> HandlerResult {
    let t: Trim = req.decode()?;
    let ns = namespace(namespaces, &t.namespace)?;
    let store = ns.store().clone();
    let r = tokio::task::spawn_blocking(move || store.trim_to(t.target_bytes))
        .await
        .map_err(task_failed)?;
    tracing::info!(
        namespace = ns.name(),
        "trim evicted {} entries: {} -> {} bytes",
        r.evicted,
        r.bytes_before,
        r.bytes_after
    );
    Ok(Reply::msg(TrimResponse {
        evicted: r.evicted,
        bytes_before: r.bytes_before,
        bytes_after: r.bytes_after,
    }))
}
