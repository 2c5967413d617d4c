//! Shared-session locks and state, decided by NATS JetStream KV: create-if-absent for a lock, update on the
//! revision for a refresh or a compare-and-set, delete on the revision for a release. Every call is bounded
//! by [`super::OP_TIMEOUT`], and none is made while the link is down: the caller gets an error at once.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::Ordering;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::StreamExt;
use spark_proto::ErrorCode;
use spark_proto::collab::{
    LOCK_EXPIRED, LOCK_FORCED, LOCK_LOCKED, LOCK_RELEASED, LockInfo, MemberInfo,
};

use super::wire::{self, Body};
use super::{Bridge, Link, OP_TIMEOUT};
use crate::registry::HandlerError;
use crate::services::collab::hub::Hub;
use crate::services::collab::session::now_ms;

fn degraded(session: &str) -> HandlerError {
    HandlerError::reply(
        ErrorCode::Io,
        format!(
            "shared collab session {session:?} is degraded: NATS is unreachable, and its locks and state are \
             decided there; retry when the session reports it recovered"
        ),
    )
}

fn nats_err(b: &Bridge, what: &str, e: impl std::fmt::Display) -> HandlerError {
    b.errors.fetch_add(1, Ordering::Relaxed);
    HandlerError::reply(ErrorCode::Io, format!("NATS {what} failed: {e}"))
}

async fn timed<T, E: std::fmt::Display>(
    b: &Bridge,
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, HandlerError> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| nats_err(b, what, e)),
        Err(_) => Err(nats_err(b, what, "timed out")),
    }
}

/// The live entry of `key` (a delete or purge marker counts as absent).
async fn live_entry(
    b: &Bridge,
    store: &kv::Store,
    key: &str,
) -> Result<Option<kv::Entry>, HandlerError> {
    let e = timed(b, "get", store.entry(key)).await?;
    Ok(e.filter(|e| e.operation == Operation::Put))
}

fn link_or_degraded(b: &Bridge, session: &str) -> Result<Link, HandlerError> {
    b.link().ok_or_else(|| degraded(session))
}

/// Locks `resources` for `me` in NATS, all or none; returns the contested locks.
pub async fn lock(
    b: &Bridge,
    hub: &Hub,
    session: &str,
    me: &MemberInfo,
    resources: &[String],
    note: &str,
) -> Result<Vec<LockInfo>, HandlerError> {
    let link = link_or_degraded(b, session)?;
    let mut taken: Vec<(LockInfo, u64)> = Vec::new();
    let mut contested = Vec::new();
    for r in resources {
        let key = wire::kv_key(session, r);
        let info = LockInfo {
            resource: r.clone(),
            owner: me.member,
            who: format!("{}/{}", me.client, me.user),
            host: me.host.clone(),
            note: note.to_string(),
            since_ms: now_ms(),
        };
        match tokio::time::timeout(OP_TIMEOUT, link.locks.create(&key, wire::lock_value(&info)))
            .await
        {
            Ok(Ok(rev)) => taken.push((info, rev)),
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match live_entry(b, &link.locks, &key)
                    .await?
                    .map(|e| wire::parse_lock(&e.value))
                {
                    Some(Ok(l)) if l.owner == me.member => {}
                    Some(Ok(l)) => contested.push(l),
                    Some(Err(_)) => contested.push(LockInfo {
                        resource: r.clone(),
                        who: "(unreadable entry)".into(),
                        ..Default::default()
                    }),
                    // Released between our create and our read: one more try next time; report it free.
                    None => {}
                }
            }
            Ok(Err(e)) => {
                rollback(b, &link, session, &taken).await;
                return Err(nats_err(b, "lock", e));
            }
            Err(_) => {
                rollback(b, &link, session, &taken).await;
                return Err(nats_err(b, "lock", "timed out"));
            }
        }
    }
    if !contested.is_empty() {
        rollback(b, &link, session, &taken).await;
        return Ok(contested);
    }
    for (info, rev) in &taken {
        b.forward(
            hub.daemon_id,
            session,
            Body::Lock {
                state: LOCK_LOCKED,
                reason: String::new(),
                lock: info.clone(),
            },
        );
        hub.mirror_lock(session, info.clone(), Some(*rev), LOCK_LOCKED, "");
    }
    Ok(Vec::new())
}

async fn rollback(b: &Bridge, link: &Link, session: &str, taken: &[(LockInfo, u64)]) {
    for (info, rev) in taken {
        let key = wire::kv_key(session, &info.resource);
        let _ = timed(
            b,
            "unlock",
            link.locks.delete_expect_revision(&key, Some(*rev)),
        )
        .await;
    }
}

/// Releases `resources` (anyone's when `force`); returns how many.
pub async fn unlock(
    b: &Bridge,
    hub: &Hub,
    session: &str,
    me: u64,
    resources: &[String],
    force: bool,
    reason: &str,
) -> Result<u32, HandlerError> {
    let link = link_or_degraded(b, session)?;
    let mut n = 0;
    for r in resources {
        let key = wire::kv_key(session, r);
        let Some(e) = live_entry(b, &link.locks, &key).await? else {
            continue;
        };
        let Ok(l) = wire::parse_lock(&e.value) else {
            continue;
        };
        let forced = l.owner != me;
        if forced && !force {
            continue;
        }
        match timed(
            b,
            "unlock",
            link.locks.delete_expect_revision(&key, Some(e.revision)),
        )
        .await
        {
            Ok(()) => {
                let state = if forced { LOCK_FORCED } else { LOCK_RELEASED };
                let reason = if forced { reason } else { "" };
                b.forward(
                    hub.daemon_id,
                    session,
                    Body::Lock {
                        state,
                        reason: reason.to_string(),
                        lock: l.clone(),
                    },
                );
                hub.mirror_lock(session, l, None, state, reason);
                n += 1;
            }
            // Refreshed or changed meanwhile: the caller may retry.
            Err(e) => tracing::debug!("collab: unlock of {r} raced: {e:?}"),
        }
    }
    Ok(n)
}

/// Releases a lock a local member held when it left (entry still at `revision`), and announces it.
pub async fn release_entry(
    b: &Bridge,
    hub: &Hub,
    link: &Link,
    session: &str,
    resource: &str,
    revision: u64,
    lock: LockInfo,
) {
    let key = wire::kv_key(session, resource);
    if timed(
        b,
        "unlock",
        link.locks.delete_expect_revision(&key, Some(revision)),
    )
    .await
    .is_ok()
    {
        b.forward(
            hub.daemon_id,
            session,
            Body::Lock {
                state: LOCK_RELEASED,
                reason: String::new(),
                lock,
            },
        );
    }
}

/// The value and version of a shared session's key.
pub async fn kv_get(
    b: &Bridge,
    session: &str,
    key: &str,
) -> Result<Option<(u64, Bytes)>, HandlerError> {
    let link = link_or_degraded(b, session)?;
    Ok(live_entry(b, &link.state, &wire::kv_key(session, key))
        .await?
        .map(|e| (e.revision, e.value)))
}

/// Writes a shared session's key in NATS (compare-and-set on the revision when `cas`); returns (ok, version).
pub async fn kv_put(
    b: &Bridge,
    hub: &Hub,
    session: &str,
    key: &str,
    cas: Option<u64>,
    delete: bool,
    value: Bytes,
) -> Result<(bool, u64), HandlerError> {
    let link = link_or_degraded(b, session)?;
    let k = wire::kv_key(session, key);
    let current = || async {
        Ok::<u64, HandlerError>(
            live_entry(b, &link.state, &k)
                .await?
                .map_or(0, |e| e.revision),
        )
    };
    let result: Result<u64, bool> = match (cas, delete) {
        (None, false) => Ok(timed(b, "put", link.state.put(&k, value.clone())).await?),
        (Some(0), false) => {
            match tokio::time::timeout(OP_TIMEOUT, link.state.create(&k, value.clone())).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(false),
                Ok(Err(e)) => return Err(nats_err(b, "create", e)),
                Err(_) => return Err(nats_err(b, "create", "timed out")),
            }
        }
        (Some(v), false) => {
            match tokio::time::timeout(OP_TIMEOUT, link.state.update(&k, value.clone(), v)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(false),
                Ok(Err(e)) => return Err(nats_err(b, "update", e)),
                Err(_) => return Err(nats_err(b, "update", "timed out")),
            }
        }
        (cas, true) => {
            let cur = current().await?;
            if cur == 0 || cas.is_some_and(|v| v != cur) {
                return Ok((cas.is_none() && cur == 0, cur));
            }
            match tokio::time::timeout(OP_TIMEOUT, link.state.delete_expect_revision(&k, Some(cur)))
                .await
            {
                Ok(Ok(())) => Ok(cur),
                _ => Err(false),
            }
        }
    };
    match result {
        Ok(version) => {
            let value = if delete { Bytes::new() } else { value };
            b.forward(
                hub.daemon_id,
                session,
                Body::Kv {
                    key: key.to_string(),
                    version,
                    deleted: delete,
                    value: value.clone(),
                },
            );
            hub.kv_remote_changed(session, key, version, delete, value);
            Ok((true, version))
        }
        Err(_) => Ok((false, current().await?)),
    }
}

/// Rewrites every lock local members hold, so its age stays under the TTL; a lock whose entry moved on
/// (force-unlocked, or expired and taken) is lost and announced.
pub async fn refresh_own(b: &Bridge, hub: &Hub, link: &Link) {
    for (session, lock, rev) in hub.own_locks() {
        let key = wire::kv_key(&session, &lock.resource);
        match tokio::time::timeout(
            OP_TIMEOUT,
            link.locks.update(&key, wire::lock_value(&lock), rev),
        )
        .await
        {
            Ok(Ok(new)) => hub.set_own_rev(&session, &lock.resource, new),
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::info!(
                    "collab: lock {} in {session} was lost (expired or forced)",
                    lock.resource
                );
                hub.mirror_lock(
                    &session,
                    lock,
                    None,
                    LOCK_EXPIRED,
                    "the lock's entry changed in NATS",
                );
            }
            _ => {
                b.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Brings the lock mirror of every shared session in line with the bucket: entries gone (their daemon stopped
/// refreshing them) are announced as expired; entries we did not know are added.
pub async fn reconcile(b: &Bridge, hub: &Hub, link: &Link) {
    // The mirror is read first: a lock mirrored after the listing started is not judged by it.
    let mirrors = hub.mirrors();
    let Ok(Ok(mut keys)) = tokio::time::timeout(OP_TIMEOUT, link.locks.keys()).await else {
        b.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut present = HashSet::new();
    let read = async {
        while let Some(k) = keys.next().await {
            match k {
                Ok(k) => {
                    present.insert(k);
                }
                Err(_) => return false,
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(OP_TIMEOUT, read).await, Ok(true)) {
        b.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    for (session, mirrored) in mirrors {
        let prefix = wire::kv_prefix(&session);
        let known: HashSet<String> = mirrored
            .iter()
            .map(|l| wire::kv_key(&session, &l.resource))
            .collect();
        for l in mirrored {
            if !present.contains(&wire::kv_key(&session, &l.resource)) {
                hub.mirror_lock(
                    &session,
                    l,
                    None,
                    LOCK_EXPIRED,
                    "its daemon stopped refreshing it",
                );
            }
        }
        for k in present
            .iter()
            .filter(|k| k.starts_with(&prefix) && !known.contains(*k))
        {
            if let Ok(Some(e)) = live_entry(b, &link.locks, k).await
                && let Ok(l) = wire::parse_lock(&e.value)
            {
                hub.mirror_lock(&session, l, None, LOCK_LOCKED, "");
            }
        }
    }
}
