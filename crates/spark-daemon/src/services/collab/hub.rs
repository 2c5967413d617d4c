//! The table of sessions and every operation on it. One mutex guards the table: operations are short and
//! never wait (fan-out only appends to bounded queues), so a slow client cannot hold it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytes::Bytes;
use spark_proto::collab::{
    ACT_JOIN, ACT_LEAVE, ACT_MESSAGE, CollabStats, KvChanged, LockChanged, LockInfo, MemberInfo,
    MemberJoined, MemberLeft, PUBLISH_PERSISTENT, PresenceChanged, SessionInfo, TopicMessage,
    topic_matches,
};
use spark_proto::{ErrorCode, service};

use super::bridge::Bridge;
use super::bridge::wire::Body;
use super::queue::{Filter, SharedMessage, SubQueue};
use super::session::{Entry, LockChange, Member, Session};
use super::{CollabConfig, lock};
use crate::events::EventSender;
use crate::registry::HandlerError;

/// Subscriptions one connection may hold (each has a queue and a task).
const MAX_SUBS_PER_CONN: usize = 4096;

#[derive(Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: Arc<AtomicU64>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    /// Connection → the sessions it is a member of (session → member id) and its subscriptions.
    conns: HashMap<u64, ConnState>,
}

#[derive(Default)]
struct ConnState {
    sessions: HashMap<String, u64>,
    subs: HashSet<u32>,
}

pub struct Hub {
    pub config: CollabConfig,
    /// High half of every member id this daemon gives out.
    pub daemon_id: u32,
    pub host: String,
    next_member: AtomicU32,
    next_sub: AtomicU32,
    inner: std::sync::Mutex<Inner>,
    pub counters: Counters,
    /// The NATS bridge (`--collab-nats`).
    pub bridge: Option<Arc<Bridge>>,
}

/// What Join did.
pub struct JoinOutcome {
    pub member: u64,
    pub created: bool,
    pub shared: bool,
    pub bridge: u8,
}

/// A join's request fields.
pub struct JoinSpec {
    pub session: String,
    pub shared: bool,
    pub must_exist: bool,
    pub client: String,
    pub user: String,
    pub pid: u32,
    pub presence: Bytes,
}

fn bad(code: ErrorCode, msg: impl Into<String>) -> HandlerError {
    HandlerError::reply(code, msg)
}

fn no_session(name: &str) -> HandlerError {
    bad(
        ErrorCode::InvalidKey,
        format!("no collab session {name:?}: join it first (sparkctl collab sessions lists them)"),
    )
}

/// Announces lock changes to every local member of `s`.
pub(super) fn announce_locks(s: &Session, changes: Vec<LockChange>) {
    if changes.is_empty() {
        return;
    }
    let to = s.local_senders();
    for c in changes {
        let ev = LockChanged {
            session: s.name.clone(),
            state: c.state,
            reason: c.reason,
            lock: vec![c.lock],
        };
        for e in &to {
            e.send_msg(service::COLLAB, &ev);
        }
    }
}

fn random_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(super::session::now_ms() as u128);
    (h.finish() as u32).max(1)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Hub {
    pub fn new(config: CollabConfig) -> Hub {
        Hub {
            bridge: config.nats.clone().map(|c| Arc::new(Bridge::new(c))),
            host: config.host.clone().unwrap_or_else(hostname),
            config,
            daemon_id: random_id(),
            next_member: AtomicU32::new(1),
            next_sub: AtomicU32::new(1),
            inner: std::sync::Mutex::new(Inner::default()),
            counters: Counters::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Runs `f` on every shared session (none without a bridge).
    pub fn each_shared(&self, mut f: impl FnMut(&mut Session)) {
        if self.bridge.is_none() {
            return;
        }
        for s in self.inner().sessions.values_mut().filter(|s| s.shared) {
            f(s);
        }
    }

    /// Hands `body` to the bridge when `s` is shared.
    fn forward(&self, s: &Session, body: Body) {
        if let Some(b) = self.bridge.as_ref().filter(|_| s.shared) {
            b.forward(self.daemon_id, &s.name, body);
        }
    }

    /// Runs `f` on session `name` (error when there is none).
    pub fn with_session<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Session) -> T,
    ) -> Result<T, HandlerError> {
        let mut g = self.inner();
        let s = g.sessions.get_mut(name).ok_or_else(|| no_session(name))?;
        Ok(f(s))
    }

    pub fn join(
        &self,
        conn: u64,
        events: &EventSender,
        j: JoinSpec,
    ) -> Result<JoinOutcome, HandlerError> {
        let mut g = self.inner();
        let created = !g.sessions.contains_key(&j.session);
        if created {
            if j.must_exist {
                return Err(no_session(&j.session));
            }
            if g.sessions.len() >= self.config.max_sessions {
                return Err(bad(
                    ErrorCode::TooLarge,
                    format!(
                        "too many collab sessions ({}): leave some first",
                        g.sessions.len()
                    ),
                ));
            }
            let mut s = Session::new(j.session.clone(), j.shared, self.config.activity);
            if let Some(b) = self.bridge.as_ref().filter(|_| j.shared) {
                s.bridge = b.state();
                self.forward(&s, Body::Hello);
            }
            g.sessions.insert(j.session.clone(), s);
        }
        let existing = g
            .conns
            .get(&conn)
            .and_then(|c| c.sessions.get(&j.session))
            .copied();
        let s = g.sessions.get_mut(&j.session).expect("inserted above");
        let member = match existing {
            Some(id) => {
                let m = s.members.get_mut(&id).expect("conn table matches members");
                m.info.client = j.client;
                m.info.user = j.user;
                m.info.pid = j.pid;
                if m.info.presence != j.presence {
                    self.presence_changed(s, id, j.presence);
                }
                id
            }
            None => {
                let id = (u64::from(self.daemon_id) << 32)
                    | u64::from(self.next_member.fetch_add(1, Ordering::Relaxed));
                let info = MemberInfo {
                    member: id,
                    client: j.client,
                    user: j.user,
                    pid: j.pid,
                    host: self.host.clone(),
                    presence: j.presence,
                };
                self.forward(s, Body::Join(info.clone()));
                self.admit(s, info.clone(), Some((conn, events.clone())));
                id
            }
        };
        let out = JoinOutcome {
            member,
            created,
            shared: s.shared,
            bridge: s.bridge,
        };
        g.conns
            .entry(conn)
            .or_default()
            .sessions
            .insert(j.session, member);
        Ok(out)
    }

    /// Adds a member (local or remote) and tells the others.
    pub fn admit(&self, s: &mut Session, info: MemberInfo, conn: Option<(u64, EventSender)>) {
        let ev = MemberJoined {
            session: s.name.clone(),
            member: vec![info.clone()],
        };
        for e in s.local_senders() {
            e.send_msg(service::COLLAB, &ev);
        }
        let who = format!("{}/{}", info.client, info.user);
        s.record(ACT_JOIN, info.member, &who, &info.host, Bytes::new());
        s.members.insert(info.member, Member { info, conn });
    }

    /// Removes a member and tells the others; a local member's locks are released (in NATS too for a shared
    /// session), a remote member's are left to NATS (released by its daemon, or expired). Returns the locks
    /// released here.
    pub fn remove_member(&self, s: &mut Session, member: u64, reason: u8) -> Vec<LockInfo> {
        let Some(m) = s.members.remove(&member) else {
            return Vec::new();
        };
        if m.conn.is_some() {
            self.forward(s, Body::Leave { member, reason });
        }
        let who = format!("{}/{}", m.info.client, m.info.user);
        s.record(ACT_LEAVE, member, &who, &m.info.host, Bytes::new());
        let ev = MemberLeft {
            session: s.name.clone(),
            member,
            reason,
        };
        for e in s.local_senders() {
            e.send_msg(service::COLLAB, &ev);
        }
        if m.conn.is_none() {
            return Vec::new();
        }
        let bridged = self.bridge.as_ref().filter(|_| s.shared).cloned();
        let revs: Vec<(String, u64)> = s.own_revs.iter().map(|(r, v)| (r.clone(), *v)).collect();
        let changes = s.release_all_of(member, &who);
        if let Some(b) = bridged {
            for c in &changes {
                if let Some((_, rev)) = revs.iter().find(|(r, _)| *r == c.lock.resource) {
                    s.own_revs.remove(&c.lock.resource);
                    b.send(super::bridge::Outgoing::Release {
                        session: s.name.clone(),
                        resource: c.lock.resource.clone(),
                        revision: *rev,
                        lock: c.lock.clone(),
                    });
                }
            }
        }
        let released = changes.iter().map(|c| c.lock.clone()).collect();
        announce_locks(s, changes);
        released
    }

    /// Connection `conn` leaves `session`; true when it was a member.
    pub fn leave(&self, conn: u64, session: &str, reason: u8) -> bool {
        let mut g = self.inner();
        let Some(member) = g
            .conns
            .get_mut(&conn)
            .and_then(|c| c.sessions.remove(session))
        else {
            return false;
        };
        if let Some(s) = g.sessions.get_mut(session) {
            self.remove_member(s, member, reason);
            if s.is_idle() {
                g.sessions.remove(session);
            }
        }
        true
    }

    pub fn set_presence(
        &self,
        conn: u64,
        session: &str,
        presence: Bytes,
    ) -> Result<(), HandlerError> {
        let mut g = self.inner();
        let s = g
            .sessions
            .get_mut(session)
            .ok_or_else(|| no_session(session))?;
        let id = s
            .member_of(conn)
            .map(|m| m.info.member)
            .ok_or_else(|| not_member(session))?;
        self.presence_changed(s, id, presence);
        Ok(())
    }

    /// Sets a local member's presence, tells the other daemons and the local members.
    fn presence_changed(&self, s: &mut Session, id: u64, presence: Bytes) {
        if let Some(m) = s.members.get_mut(&id) {
            m.info.presence = presence.clone();
        }
        self.forward(
            s,
            Body::Presence {
                member: id,
                presence: presence.clone(),
            },
        );
        let ev = PresenceChanged {
            session: s.name.clone(),
            member: id,
            presence,
        };
        for e in s.local_senders() {
            e.send_msg(service::COLLAB, &ev);
        }
    }

    /// Fans a message out to the matching subscriptions; returns (seq, queued).
    pub fn publish(
        &self,
        conn: u64,
        session: &str,
        topic: &str,
        flags: u8,
        payload: Bytes,
    ) -> Result<(u64, u32), HandlerError> {
        let mut g = self.inner();
        let s = g
            .sessions
            .get_mut(session)
            .ok_or_else(|| no_session(session))?;
        let member = s.member_of(conn);
        let publisher = member.map_or(0, |m| m.info.member);
        let bridged = self.bridge.is_some() && s.shared;
        // Who published is only kept by a persistent message and sent along by the bridge: no string per
        // message otherwise.
        let who = match member {
            Some(m) if bridged || flags & PUBLISH_PERSISTENT != 0 => {
                format!("{}/{}", m.info.client, m.info.user)
            }
            _ => String::new(),
        };
        if bridged {
            self.forward(
                s,
                Body::Msg {
                    publisher,
                    who: who.clone(),
                    flags,
                    topic: topic.to_string(),
                    payload: payload.clone(),
                },
            );
        }
        Ok(self.deliver(s, publisher, &who, topic, flags, payload))
    }

    /// Delivers one message (local or from the bridge) in `s`.
    pub fn deliver(
        &self,
        s: &mut Session,
        publisher: u64,
        who: &str,
        topic: &str,
        flags: u8,
        payload: Bytes,
    ) -> (u64, u32) {
        s.messages += 1;
        let seq = s.messages;
        if flags & PUBLISH_PERSISTENT != 0 {
            s.record(ACT_MESSAGE, publisher, who, topic, payload.clone());
        }
        let mut queued = 0;
        // Encoded on the first match, once for every subscription.
        let mut shared = None;
        for q in s.subs.values() {
            let Filter::Topic(p) = &q.filter else {
                continue;
            };
            if !topic_matches(p, topic) {
                continue;
            }
            let m = shared.get_or_insert_with(|| {
                let m = TopicMessage {
                    subscription: 0,
                    session: s.name.clone(),
                    topic: topic.to_string(),
                    publisher,
                    seq,
                    payload: payload.clone(),
                };
                SharedMessage::encode(&m, 40 + s.name.len() + topic.len() + payload.len())
            });
            if q.offer(m) {
                queued += 1;
            }
        }
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        self.counters
            .delivered
            .fetch_add(u64::from(queued), Ordering::Relaxed);
        (seq, queued)
    }

    /// A subscription on `session` (the session must exist).
    pub fn subscribe(
        &self,
        conn: u64,
        events: &EventSender,
        session: &str,
        filter: Filter,
        queue: u32,
    ) -> Result<u32, HandlerError> {
        let mut g = self.inner();
        let held = g.conns.get(&conn).map_or(0, |c| c.subs.len());
        if held >= MAX_SUBS_PER_CONN {
            return Err(bad(
                ErrorCode::TooLarge,
                format!(
                    "this connection has {held} collab subscriptions, the limit: unsubscribe some first"
                ),
            ));
        }
        // A subscription may come first: it creates (and keeps alive) a local session.
        let s = g
            .sessions
            .entry(session.to_string())
            .or_insert_with(|| Session::new(session.to_string(), false, self.config.activity));
        let id = self.next_sub.fetch_add(1, Ordering::Relaxed);
        let cap = if queue == 0 {
            self.config.queue
        } else {
            (queue as usize).min(self.config.max_queue)
        };
        let q = SubQueue::start(
            id,
            conn,
            session.to_string(),
            filter,
            cap,
            events.clone(),
            self.counters.dropped.clone(),
        );
        s.subs.insert(id, q);
        g.conns.entry(conn).or_default().subs.insert(id);
        Ok(id)
    }

    /// Ends subscription `id` of `conn`; true when it existed.
    pub fn unsubscribe(&self, conn: u64, id: u32) -> bool {
        let mut g = self.inner();
        if !g.conns.get_mut(&conn).is_some_and(|c| c.subs.remove(&id)) {
            return false;
        }
        let mut idle = None;
        for s in g.sessions.values_mut() {
            if let Some(q) = s.subs.remove(&id) {
                q.close();
                if s.is_idle() {
                    idle = Some(s.name.clone());
                }
                break;
            }
        }
        if let Some(n) = idle {
            g.sessions.remove(&n);
        }
        true
    }

    /// Writes (or deletes) a key; returns (ok, version).
    pub fn kv_put(
        &self,
        session: &str,
        key: &str,
        cas: Option<u64>,
        delete: bool,
        value: Bytes,
    ) -> Result<(bool, u64), HandlerError> {
        let mut g = self.inner();
        let s = g
            .sessions
            .get_mut(session)
            .ok_or_else(|| no_session(session))?;
        let current = s.kv.get(key).map_or(0, |e| e.version);
        if cas.is_some_and(|v| v != current) {
            return Ok((false, current));
        }
        if delete && current == 0 {
            return Ok((cas.is_none(), 0));
        }
        if !delete && !s.kv.contains_key(key) && s.kv.len() >= self.config.max_keys {
            return Err(bad(
                ErrorCode::TooLarge,
                format!(
                    "session {session:?} holds {} keys, the limit: delete some first",
                    s.kv.len()
                ),
            ));
        }
        s.revision += 1;
        let version = s.revision;
        if delete {
            s.kv.remove(key);
        } else {
            s.kv.insert(
                key.to_string(),
                Entry {
                    version,
                    value: value.clone(),
                },
            );
        }
        self.kv_changed(
            s,
            key,
            version,
            delete,
            if delete { Bytes::new() } else { value },
        );
        Ok((true, version))
    }

    /// Tells the key watchers of `s` about a change.
    pub fn kv_changed(&self, s: &Session, key: &str, version: u64, deleted: bool, value: Bytes) {
        let mut shared = None;
        for q in s.subs.values() {
            let Filter::Kv(p) = &q.filter else { continue };
            if !key.starts_with(p.as_str()) {
                continue;
            }
            let m = shared.get_or_insert_with(|| {
                let m = KvChanged {
                    subscription: 0,
                    session: s.name.clone(),
                    key: key.to_string(),
                    version,
                    deleted,
                    value: value.clone(),
                };
                SharedMessage::encode(&m, 40 + s.name.len() + key.len() + value.len())
            });
            q.offer(m);
        }
    }

    /// Locks all of `resources` for the caller's member, or returns the contested ones.
    pub fn lock(
        &self,
        conn: u64,
        session: &str,
        resources: &[String],
        note: &str,
    ) -> Result<Vec<LockInfo>, HandlerError> {
        let mut g = self.inner();
        let s = g
            .sessions
            .get_mut(session)
            .ok_or_else(|| no_session(session))?;
        let me = s
            .member_of(conn)
            .map(|m| m.info.clone())
            .ok_or_else(|| not_member(session))?;
        let contested = s.contested(me.member, resources);
        if !contested.is_empty() {
            return Ok(contested);
        }
        let changes = s.take_locks(&me, resources, note);
        announce_locks(s, changes);
        Ok(Vec::new())
    }

    /// Releases locks; returns how many.
    pub fn unlock(
        &self,
        conn: u64,
        session: &str,
        resources: &[String],
        force: bool,
        reason: &str,
    ) -> Result<u32, HandlerError> {
        let mut g = self.inner();
        let s = g
            .sessions
            .get_mut(session)
            .ok_or_else(|| no_session(session))?;
        let (me, who) = match s.member_of(conn) {
            Some(m) => (m.info.member, format!("{}/{}", m.info.client, m.info.user)),
            None if force => (0, "sparkctl".to_string()),
            None => return Err(not_member(session)),
        };
        let changes = s.release(me, &who, resources, force, reason);
        let n = changes.len() as u32;
        announce_locks(s, changes);
        Ok(n)
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        let g = self.inner();
        let mut v: Vec<SessionInfo> = g.sessions.values().map(Session::info).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn stats(&self, bridge: u64, reconnects: u64, errors: u64) -> CollabStats {
        let g = self.inner();
        CollabStats {
            sessions: g.sessions.len() as u64,
            members: g.sessions.values().map(|s| s.members.len() as u64).sum(),
            subscriptions: g.sessions.values().map(|s| s.subs.len() as u64).sum(),
            published: self.counters.published.load(Ordering::Relaxed),
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            locks: g.sessions.values().map(|s| s.locks.len() as u64).sum(),
            bridge,
            bridge_reconnects: reconnects,
            bridge_errors: errors,
        }
    }

    /// A connection ended: its memberships end (leave events, lock releases) and its subscriptions close.
    pub fn disconnect(&self, conn: u64, reason: u8) {
        let mut g = self.inner();
        let Some(c) = g.conns.remove(&conn) else {
            return;
        };
        for (session, member) in c.sessions {
            if let Some(s) = g.sessions.get_mut(&session) {
                self.remove_member(s, member, reason);
            }
        }
        for s in g.sessions.values_mut() {
            s.subs.retain(|id, q| {
                let mine = c.subs.contains(id);
                if mine {
                    q.close();
                }
                !mine
            });
        }
        g.sessions.retain(|_, s| !s.is_idle());
    }
}

pub fn not_member(session: &str) -> HandlerError {
    bad(
        ErrorCode::PermissionDenied,
        format!("this connection is not a member of collab session {session:?}: join it first"),
    )
}
