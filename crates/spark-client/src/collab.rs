//! The Collab service (`0x0005`) from the client side: sessions and presence, pub/sub, versioned session
//! state, advisory locks and the activity feed. Events (joins, messages, lock changes…) arrive on this
//! connection; take them with [`CollabClient::next_event`] or decode any [`Event`] with
//! [`CollabEvent::from_event`].

use std::time::Duration;

use bytes::Bytes;
use spark_proto::collab::{
    Ack, Activity, ActivityResponse, CollabStats, JOIN_EXISTING, JOIN_SHARED, Join, Joined, KV_CAS,
    KV_DELETE, KvChanged, KvGet, KvPut, KvValue, KvWatch, KvWritten, Lagged, Leave, Lock,
    LockChanged, LockInfo, LockResponse, Locks, LocksResponse, MemberInfo, MemberJoined,
    MemberLeft, Members, MembersResponse, PresenceChanged, Publish, Published, SessionInfo,
    SessionStatus, Sessions, SessionsResponse, SetPresence, Stats, Subscribe, Subscribed,
    TopicMessage, Unlock, Unsubscribe,
};
use spark_proto::service;

use crate::client::Client;
use crate::error::Result;
use crate::event::Event;

/// How to join a session.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    /// Shown to other members (default: the client name given at connect).
    pub client: String,
    /// The user name (default: `$USER`).
    pub user: String,
    /// Bridge the session through NATS when the daemon has a bridge (set by whoever creates it).
    pub shared: bool,
    /// Fail instead of creating the session.
    pub existing: bool,
    pub presence: Bytes,
}

/// A Collab event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollabEvent {
    Joined(MemberJoined),
    Left(MemberLeft),
    Presence(PresenceChanged),
    Message(TopicMessage),
    Lagged(Lagged),
    Kv(KvChanged),
    Lock(LockChanged),
    Status(SessionStatus),
}

impl CollabEvent {
    /// Decodes a server event when it is a Collab event; `Ok(None)` for other services' events.
    pub fn from_event(e: &Event) -> Result<Option<CollabEvent>> {
        use spark_proto::collab as c;
        if e.service != service::COLLAB {
            return Ok(None);
        }
        let s = service::COLLAB;
        Ok(match e.msg_type {
            c::MEMBER_JOINED => e.decode::<MemberJoined>(s)?.map(CollabEvent::Joined),
            c::MEMBER_LEFT => e.decode::<MemberLeft>(s)?.map(CollabEvent::Left),
            c::PRESENCE_CHANGED => e.decode::<PresenceChanged>(s)?.map(CollabEvent::Presence),
            c::MESSAGE => e.decode::<TopicMessage>(s)?.map(CollabEvent::Message),
            c::LAGGED => e.decode::<Lagged>(s)?.map(CollabEvent::Lagged),
            c::KV_CHANGED => e.decode::<KvChanged>(s)?.map(CollabEvent::Kv),
            c::LOCK_CHANGED => e.decode::<LockChanged>(s)?.map(CollabEvent::Lock),
            c::SESSION_STATUS => e.decode::<SessionStatus>(s)?.map(CollabEvent::Status),
            _ => None,
        })
    }
}

/// What a Lock request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    Acquired,
    /// Nothing was locked: these resources are held by others (resource, owner, who, host, note).
    Contested(Vec<LockInfo>),
}

/// The Collab service on one client.
pub struct CollabClient<'a> {
    client: &'a Client,
}

impl Client {
    /// The Collab service.
    pub fn collab(&self) -> CollabClient<'_> {
        CollabClient { client: self }
    }
}

impl CollabClient<'_> {
    fn call<M: spark_proto::Message, R: spark_proto::Message>(&self, m: &M) -> Result<R> {
        self.client.call(service::COLLAB, m)
    }

    /// Joins (creating unless `opts.existing`) `session` as a member of this connection.
    pub fn join(&self, session: &str, opts: &JoinOptions) -> Result<Joined> {
        let mut flags = 0;
        if opts.shared {
            flags |= JOIN_SHARED;
        }
        if opts.existing {
            flags |= JOIN_EXISTING;
        }
        let user = if opts.user.is_empty() {
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        } else {
            opts.user.clone()
        };
        self.call(&Join {
            session: session.into(),
            flags,
            client: opts.client.clone(),
            user,
            pid: std::process::id(),
            presence: opts.presence.clone(),
        })
    }

    /// Leaves `session`; true when this connection was a member.
    pub fn leave(&self, session: &str) -> Result<bool> {
        let a: Ack = self.call(&Leave {
            session: session.into(),
        })?;
        Ok(a.count > 0)
    }

    pub fn sessions(&self) -> Result<Vec<SessionInfo>> {
        let r: SessionsResponse = self.call(&Sessions)?;
        Ok(r.sessions)
    }

    pub fn members(&self, session: &str) -> Result<Vec<MemberInfo>> {
        let r: MembersResponse = self.call(&Members {
            session: session.into(),
        })?;
        Ok(r.members)
    }

    pub fn set_presence(&self, session: &str, presence: &[u8]) -> Result<()> {
        let _: Ack = self.call(&SetPresence {
            session: session.into(),
            presence: Bytes::copy_from_slice(presence),
        })?;
        Ok(())
    }

    /// Publishes `payload` on `topic`; `persistent` also records it in the activity feed.
    pub fn publish(
        &self,
        session: &str,
        topic: &str,
        payload: &[u8],
        persistent: bool,
    ) -> Result<Published> {
        self.call(&Publish {
            session: session.into(),
            topic: topic.into(),
            flags: u8::from(persistent),
            payload: Bytes::copy_from_slice(payload),
        })
    }

    /// Subscribes to topics matching `pattern` (exact, or a prefix ending in `*`); `queue` 0 = default.
    pub fn subscribe(&self, session: &str, pattern: &str, queue: u32) -> Result<u32> {
        let r: Subscribed = self.call(&Subscribe {
            session: session.into(),
            pattern: pattern.into(),
            queue,
        })?;
        Ok(r.subscription)
    }

    pub fn unsubscribe(&self, subscription: u32) -> Result<bool> {
        let a: Ack = self.call(&Unsubscribe { subscription })?;
        Ok(a.count > 0)
    }

    /// The value and version of `key`, if present.
    pub fn kv_get(&self, session: &str, key: &str) -> Result<Option<(u64, Bytes)>> {
        let r: KvValue = self.call(&KvGet {
            session: session.into(),
            key: key.into(),
        })?;
        Ok(r.found.then_some((r.version, r.value)))
    }

    fn kv_write(
        &self,
        session: &str,
        key: &str,
        flags: u8,
        expect: u64,
        value: &[u8],
    ) -> Result<KvWritten> {
        self.call(&KvPut {
            session: session.into(),
            key: key.into(),
            flags,
            expect_version: expect,
            value: Bytes::copy_from_slice(value),
        })
    }

    /// Writes `key` unconditionally; returns the new version.
    pub fn kv_put(&self, session: &str, key: &str, value: &[u8]) -> Result<u64> {
        Ok(self.kv_write(session, key, 0, 0, value)?.version)
    }

    /// Writes `key` only if its version is `expect` (0: only if absent). `Ok(Err(current))` when it was not.
    pub fn kv_cas(
        &self,
        session: &str,
        key: &str,
        expect: u64,
        value: &[u8],
    ) -> Result<std::result::Result<u64, u64>> {
        let w = self.kv_write(session, key, KV_CAS, expect, value)?;
        Ok(if w.ok { Ok(w.version) } else { Err(w.version) })
    }

    /// Deletes `key`; true when it existed.
    pub fn kv_delete(&self, session: &str, key: &str) -> Result<bool> {
        let w = self.kv_write(session, key, KV_DELETE, 0, &[])?;
        Ok(w.ok && w.version != 0)
    }

    /// Watches keys starting with `prefix`; changes come as [`CollabEvent::Kv`].
    pub fn kv_watch(&self, session: &str, prefix: &str, queue: u32) -> Result<u32> {
        let r: Subscribed = self.call(&KvWatch {
            session: session.into(),
            prefix: prefix.into(),
            queue,
        })?;
        Ok(r.subscription)
    }

    /// Locks every resource, or none and reports each contested one with its owner.
    pub fn lock(&self, session: &str, resources: &[&str], note: &str) -> Result<LockOutcome> {
        let r: LockResponse = self.call(&Lock {
            session: session.into(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            note: note.into(),
        })?;
        Ok(if r.acquired {
            LockOutcome::Acquired
        } else {
            LockOutcome::Contested(r.contested)
        })
    }

    /// Releases this member's locks on `resources`; returns how many were released.
    pub fn unlock(&self, session: &str, resources: &[&str]) -> Result<u32> {
        self.unlock_with(session, resources, false, "")
    }

    /// Releases `resources` whoever holds them; each owner gets a LockChanged with `reason`.
    pub fn force_unlock(&self, session: &str, resources: &[&str], reason: &str) -> Result<u32> {
        self.unlock_with(session, resources, true, reason)
    }

    fn unlock_with(
        &self,
        session: &str,
        resources: &[&str],
        force: bool,
        reason: &str,
    ) -> Result<u32> {
        let a: Ack = self.call(&Unlock {
            session: session.into(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            force,
            reason: reason.into(),
        })?;
        Ok(a.count)
    }

    /// Locks whose resource starts with `prefix` (empty: all).
    pub fn locks(&self, session: &str, prefix: &str) -> Result<Vec<LockInfo>> {
        let r: LocksResponse = self.call(&Locks {
            session: session.into(),
            prefix: prefix.into(),
        })?;
        Ok(r.locks)
    }

    /// Activity entries after `after` (0: from the oldest kept), at most `max` (0: all).
    pub fn activity(&self, session: &str, after: u64, max: u32) -> Result<ActivityResponse> {
        self.call(&Activity {
            session: session.into(),
            after,
            max,
        })
    }

    pub fn stats(&self) -> Result<CollabStats> {
        self.call(&Stats)
    }

    /// The next Collab event, waiting up to `wait`; other services' events are skipped.
    pub fn next_event(&self, wait: Duration) -> Result<Option<CollabEvent>> {
        // Events already queued first: a subscriber behind a busy publisher reads no clock per event.
        while let Some(e) = self.client.queued_event() {
            if let Some(c) = CollabEvent::from_event(&e)? {
                return Ok(Some(c));
            }
        }
        let deadline = std::time::Instant::now() + wait;
        let mut left = wait;
        loop {
            let Some(e) = self.client.next_event(left)? else {
                return Ok(None);
            };
            if let Some(c) = CollabEvent::from_event(&e)? {
                return Ok(Some(c));
            }
            if left.is_zero() {
                return Ok(None);
            }
            left = deadline.saturating_duration_since(std::time::Instant::now());
        }
    }
}
