//! The hub's side of the NATS bridge: applying what other daemons say, the lock mirror of shared sessions,
//! rosters and the bridge's status as members see it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spark_proto::collab::{
    ACT_LOCK, ACT_UNLOCK, LEFT_DAEMON_LOST, LEFT_LEAVE, LOCK_LOCKED, LockInfo, MemberInfo,
    PresenceChanged, SessionStatus,
};
use spark_proto::service;

use super::bridge::Bridge;
use super::bridge::wire::{Body, Envelope};
use super::hub::{Hub, announce_locks};
use super::session::{LockChange, Session};

impl Hub {
    /// The bridge, when `session` exists and is shared.
    pub fn bridge_of(&self, session: &str) -> Option<Arc<Bridge>> {
        let b = self.bridge.as_ref()?;
        self.with_session(session, |s| s.shared)
            .ok()?
            .then(|| b.clone())
    }

    /// The member record of connection `conn` in `session`.
    pub fn member_info(&self, conn: u64, session: &str) -> Option<MemberInfo> {
        self.with_session(session, |s| s.member_of(conn).map(|m| m.info.clone()))
            .ok()
            .flatten()
    }

    /// Tells the members of every shared session that the link went up or down.
    pub fn bridge_state(&self, state: u8, detail: &str) {
        self.each_shared(|s| {
            s.bridge = state;
            let ev = SessionStatus {
                session: s.name.clone(),
                bridge: state,
                detail: detail.to_string(),
            };
            for e in s.local_senders() {
                e.send_msg(service::COLLAB, &ev);
            }
        });
    }

    /// After (re)connecting: ask the others for their rosters and send ours.
    pub fn announce_all(&self) {
        let Some(b) = &self.bridge else { return };
        for (session, roster) in self.rosters() {
            b.forward(self.daemon_id, &session, Body::Hello);
            b.forward(self.daemon_id, &session, Body::Roster(roster));
        }
    }

    /// Every shared session's local members.
    pub fn rosters(&self) -> Vec<(String, Vec<MemberInfo>)> {
        let mut out = Vec::new();
        self.each_shared(|s| {
            let local = s
                .members
                .values()
                .filter(|m| m.conn.is_some())
                .map(|m| m.info.clone())
                .collect();
            out.push((s.name.clone(), local));
        });
        out
    }

    /// Drops the members of daemons not heard from for `max_age` (their daemon died or lost NATS).
    pub fn expire_remote(&self, max_age: Duration) {
        self.each_shared(|s| {
            let gone: Vec<u32> = s
                .remote_seen
                .iter()
                .filter(|(_, t)| t.elapsed() > max_age)
                .map(|(d, _)| *d)
                .collect();
            for d in gone {
                s.remote_seen.remove(&d);
                let members: Vec<u64> = s
                    .members
                    .keys()
                    .copied()
                    .filter(|m| (m >> 32) as u32 == d)
                    .collect();
                for m in members {
                    self.remove_member(s, m, LEFT_DAEMON_LOST);
                }
            }
        });
    }

    /// Locks local members hold through NATS, with the revision to refresh.
    pub fn own_locks(&self) -> Vec<(String, LockInfo, u64)> {
        let mut out = Vec::new();
        self.each_shared(|s| {
            for (r, rev) in &s.own_revs {
                if let Some(l) = s.locks.get(r) {
                    out.push((s.name.clone(), l.clone(), *rev));
                }
            }
        });
        out
    }

    pub fn set_own_rev(&self, session: &str, resource: &str, rev: u64) {
        let _ = self.with_session(session, |s| {
            if let Some(r) = s.own_revs.get_mut(resource) {
                *r = rev;
            }
        });
    }

    /// The mirrored locks of other daemons' members, per shared session.
    pub fn mirrors(&self) -> Vec<(String, Vec<LockInfo>)> {
        let mut out = Vec::new();
        self.each_shared(|s| {
            let v = s
                .locks
                .values()
                .filter(|l| !s.own_revs.contains_key(&l.resource))
                .cloned()
                .collect();
            out.push((s.name.clone(), v));
        });
        out
    }

    /// Records a lock change decided in NATS and announces it to local members (once: a change the mirror
    /// already reflects is not announced again). `rev` is set for a lock a local member now holds.
    pub fn mirror_lock(
        &self,
        session: &str,
        lock: LockInfo,
        rev: Option<u64>,
        state: u8,
        reason: &str,
    ) {
        let _ = self.with_session(session, |s| {
            let changed = if state == LOCK_LOCKED {
                let same = s
                    .locks
                    .get(&lock.resource)
                    .is_some_and(|l| l.owner == lock.owner);
                s.locks.insert(lock.resource.clone(), lock.clone());
                if let Some(r) = rev {
                    s.own_revs.insert(lock.resource.clone(), r);
                }
                if !same {
                    s.record(
                        ACT_LOCK,
                        lock.owner,
                        &lock.who,
                        &lock.resource,
                        Bytes::new(),
                    );
                }
                !same
            } else {
                s.own_revs.remove(&lock.resource);
                let held = s
                    .locks
                    .get(&lock.resource)
                    .is_some_and(|l| l.owner == lock.owner);
                if held {
                    s.locks.remove(&lock.resource);
                    let subject = if reason.is_empty() {
                        lock.resource.clone()
                    } else {
                        format!("{} ({reason})", lock.resource)
                    };
                    s.record(ACT_UNLOCK, lock.owner, &lock.who, &subject, Bytes::new());
                }
                held
            };
            if changed {
                announce_locks(
                    s,
                    vec![LockChange {
                        state,
                        reason: reason.to_string(),
                        lock,
                    }],
                );
            }
        });
    }

    /// A key of a shared session changed (here or elsewhere): tell local watchers.
    pub fn kv_remote_changed(
        &self,
        session: &str,
        key: &str,
        version: u64,
        deleted: bool,
        value: Bytes,
    ) {
        let _ = self.with_session(session, |s| {
            self.kv_changed(s, key, version, deleted, value)
        });
    }

    fn heard(&self, s: &mut Session, origin: u32) {
        s.remote_seen.insert(origin, Instant::now());
    }

    /// Applies another daemon's envelope to the shared session it names (unknown sessions are ignored).
    pub fn apply_remote(&self, b: &Bridge, env: Envelope) {
        let origin = env.origin;
        if let Body::Lock {
            state,
            reason,
            lock,
        } = env.body
        {
            if self
                .with_session(&env.session, |s| s.shared)
                .unwrap_or(false)
            {
                self.mirror_lock(&env.session, lock, None, state, &reason);
            }
            return;
        }
        let _ = self.with_session(&env.session, |s| {
            if !s.shared {
                return;
            }
            self.heard(s, origin);
            match env.body {
                Body::Join(m) => {
                    if !s.members.contains_key(&m.member) {
                        self.admit(s, m, None);
                    }
                }
                Body::Leave { member, reason } => {
                    if s.members.get(&member).is_some_and(|m| m.conn.is_none()) {
                        self.remove_member(s, member, reason);
                    }
                }
                Body::Presence { member, presence } => {
                    if let Some(m) = s.members.get_mut(&member).filter(|m| m.conn.is_none()) {
                        m.info.presence = presence.clone();
                        let ev = PresenceChanged {
                            session: s.name.clone(),
                            member,
                            presence,
                        };
                        for e in s.local_senders() {
                            e.send_msg(service::COLLAB, &ev);
                        }
                    }
                }
                Body::Msg {
                    publisher,
                    who,
                    flags,
                    topic,
                    payload,
                } => {
                    self.deliver(s, publisher, &who, &topic, flags, payload);
                }
                Body::Hello => {
                    let local = s
                        .members
                        .values()
                        .filter(|m| m.conn.is_some())
                        .map(|m| m.info.clone())
                        .collect();
                    b.forward(self.daemon_id, &s.name, Body::Roster(local));
                }
                Body::Kv {
                    key,
                    version,
                    deleted,
                    value,
                } => self.kv_changed(s, &key, version, deleted, value),
                Body::Roster(list) => self.apply_roster(s, origin, list),
                Body::Lock { .. } => {}
            }
        });
    }

    /// A daemon's full list of members: admit the new ones, drop the ones it no longer has.
    fn apply_roster(&self, s: &mut Session, origin: u32, list: Vec<MemberInfo>) {
        let theirs: Vec<u64> = s
            .members
            .keys()
            .copied()
            .filter(|m| (m >> 32) as u32 == origin)
            .collect();
        for m in theirs {
            if !list.iter().any(|x| x.member == m) {
                self.remove_member(s, m, LEFT_LEAVE);
            }
        }
        for m in list {
            if (m.member >> 32) as u32 == origin && !s.members.contains_key(&m.member) {
                self.admit(s, m, None);
            }
        }
    }
}
