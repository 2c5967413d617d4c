//! One session's state: members, subscriptions, key-value state, locks and activity feed. Pure data and
//! rules; the hub ([`super::hub`]) holds the table of sessions and sends the events these functions return.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use spark_proto::collab::{
    ACT_LOCK, ACT_UNLOCK, ActivityEntry, BRIDGE_LOCAL, LOCK_FORCED, LOCK_LOCKED, LOCK_RELEASED,
    LockInfo, MemberInfo, SessionInfo,
};

use super::queue::SubQueue;
use crate::events::EventSender;

/// A member of a session: local (with its connection) or seen through the bridge.
pub struct Member {
    pub info: MemberInfo,
    /// The member's connection; `None` for a member of another daemon.
    pub conn: Option<(u64, EventSender)>,
}

/// A key's value and version.
#[derive(Clone)]
pub struct Entry {
    pub version: u64,
    pub value: Bytes,
}

/// What a lock change did, for the hub to announce.
pub struct LockChange {
    pub state: u8,
    pub reason: String,
    pub lock: LockInfo,
}

pub struct Session {
    pub name: String,
    pub shared: bool,
    pub bridge: u8,
    pub members: BTreeMap<u64, Member>,
    pub subs: HashMap<u32, Arc<SubQueue>>,
    pub kv: BTreeMap<String, Entry>,
    /// The session's revision: every key write takes the next one as its version, so a deleted then
    /// recreated key never repeats a version a compare-and-set could confuse.
    pub revision: u64,
    pub locks: BTreeMap<String, LockInfo>,
    pub activity: VecDeque<ActivityEntry>,
    pub activity_cap: usize,
    pub next_activity: u64,
    pub messages: u64,
    /// Shared sessions: the NATS revision of each lock a local member holds (refreshed, released by us).
    pub own_revs: HashMap<String, u64>,
    /// Shared sessions: when each other daemon was last heard from.
    pub remote_seen: HashMap<u32, std::time::Instant>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Session {
    pub fn new(name: String, shared: bool, activity_cap: usize) -> Self {
        Session {
            name,
            shared,
            bridge: BRIDGE_LOCAL,
            members: BTreeMap::new(),
            subs: HashMap::new(),
            kv: BTreeMap::new(),
            revision: 0,
            locks: BTreeMap::new(),
            activity: VecDeque::new(),
            activity_cap: activity_cap.max(1),
            next_activity: 1,
            messages: 0,
            own_revs: HashMap::new(),
            remote_seen: HashMap::new(),
        }
    }

    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            name: self.name.clone(),
            shared: self.shared,
            bridge: self.bridge,
            members: self.members.len() as u32,
            locks: self.locks.len() as u32,
            messages: self.messages,
        }
    }

    /// True when nothing keeps the session alive.
    pub fn is_idle(&self) -> bool {
        self.subs.is_empty() && !self.members.values().any(|m| m.conn.is_some())
    }

    /// Appends to the activity feed, dropping the oldest entry beyond the cap.
    pub fn record(&mut self, kind: u8, member: u64, who: &str, subject: &str, data: Bytes) {
        let e = ActivityEntry {
            seq: self.next_activity,
            time_ms: now_ms(),
            kind,
            member,
            who: who.to_string(),
            subject: subject.to_string(),
            data,
        };
        self.next_activity += 1;
        if self.activity.len() >= self.activity_cap {
            self.activity.pop_front();
        }
        self.activity.push_back(e);
    }

    /// Entries after `after`, at most `max` (0: all), oldest first; and the oldest seq kept.
    pub fn activity_after(&self, after: u64, max: u32) -> (u64, Vec<ActivityEntry>) {
        let oldest = self.activity.front().map_or(self.next_activity, |e| e.seq);
        let it = self.activity.iter().filter(|e| e.seq > after).cloned();
        let v = if max == 0 {
            it.collect()
        } else {
            it.take(max as usize).collect()
        };
        (oldest, v)
    }

    /// The local member of connection `conn`, if any.
    pub fn member_of(&self, conn: u64) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.conn.as_ref().is_some_and(|(c, _)| *c == conn))
    }

    /// Every local member's event sender (to announce a change).
    pub fn local_senders(&self) -> Vec<EventSender> {
        self.members
            .values()
            .filter_map(|m| m.conn.as_ref().map(|(_, e)| e.clone()))
            .collect()
    }

    /// The contested resources (held by another member), or `None` when `owner` may take them all.
    pub fn contested(&self, owner: u64, resources: &[String]) -> Vec<LockInfo> {
        resources
            .iter()
            .filter_map(|r| self.locks.get(r))
            .filter(|l| l.owner != owner)
            .cloned()
            .collect()
    }

    /// Takes every resource for `owner` (the caller checked [`Session::contested`]); returns the new locks.
    pub fn take_locks(
        &mut self,
        owner: &MemberInfo,
        resources: &[String],
        note: &str,
    ) -> Vec<LockChange> {
        let mut out = Vec::new();
        for r in resources {
            if self.locks.get(r).is_some_and(|l| l.owner == owner.member) {
                continue;
            }
            let l = LockInfo {
                resource: r.clone(),
                owner: owner.member,
                who: format!("{}/{}", owner.client, owner.user),
                host: owner.host.clone(),
                note: note.to_string(),
                since_ms: now_ms(),
            };
            self.locks.insert(r.clone(), l.clone());
            self.record(ACT_LOCK, owner.member, &l.who, r, Bytes::new());
            out.push(LockChange {
                state: LOCK_LOCKED,
                reason: String::new(),
                lock: l,
            });
        }
        out
    }

    /// Releases `resources` held by `by` (any holder when `force`); returns what was released.
    pub fn release(
        &mut self,
        by: u64,
        who: &str,
        resources: &[String],
        force: bool,
        reason: &str,
    ) -> Vec<LockChange> {
        let mut out = Vec::new();
        for r in resources {
            let Some(l) = self.locks.get(r) else { continue };
            let forced = l.owner != by;
            if forced && !force {
                continue;
            }
            let l = self.locks.remove(r).expect("present");
            let subject = if forced {
                format!("{r} (forced: {reason})")
            } else {
                r.clone()
            };
            self.record(ACT_UNLOCK, by, who, &subject, Bytes::new());
            out.push(LockChange {
                state: if forced { LOCK_FORCED } else { LOCK_RELEASED },
                reason: if forced {
                    reason.to_string()
                } else {
                    String::new()
                },
                lock: l,
            });
        }
        out
    }

    /// Releases every lock `member` holds (it left).
    pub fn release_all_of(&mut self, member: u64, who: &str) -> Vec<LockChange> {
        let held: Vec<String> = self
            .locks
            .values()
            .filter(|l| l.owner == member)
            .map(|l| l.resource.clone())
            .collect();
        self.release(member, who, &held, false, "")
    }
}
