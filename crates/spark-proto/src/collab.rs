//! The Collab service (`0x0005`): sessions with presence, pub/sub on topics, a versioned key-value state per
//! session, advisory locks on resource names, and an activity feed (protocol.md §14).
//!
//! A connection joins a session as a *member* (one member per connection and session). Members get events:
//! joins, leaves, presence changes, lock changes and the session's bridge status. Messages and state changes
//! reach only the connections that subscribed to them (a topic pattern, or a key prefix). Each subscription
//! has a bounded queue in the daemon; a subscriber that falls behind loses messages and gets one [`Lagged`]
//! event saying how many, never unbounded daemon memory and never a slower publisher.
//!
//! A member id is a `u64`: the high 32 bits name the daemon that admitted the member (random per daemon
//! start), the low 32 bits count members there, so ids stay unique across daemons bridged through NATS.

use bytes::{BufMut, Bytes, BytesMut};

use crate::ProtoError;
use crate::codec::{Reader, Record, put_bytes32, put_str16};
use crate::messages::define_messages;

pub const JOIN: u16 = 0x0001;
pub const JOINED: u16 = 0x0002;
pub const LEAVE: u16 = 0x0003;
pub const ACK: u16 = 0x0004;
pub const SESSIONS: u16 = 0x0005;
pub const SESSIONS_RESPONSE: u16 = 0x0006;
pub const MEMBERS: u16 = 0x0007;
pub const MEMBERS_RESPONSE: u16 = 0x0008;
pub const SET_PRESENCE: u16 = 0x0009;
pub const PUBLISH: u16 = 0x000B;
pub const PUBLISHED: u16 = 0x000C;
pub const SUBSCRIBE: u16 = 0x000D;
pub const SUBSCRIBED: u16 = 0x000E;
pub const UNSUBSCRIBE: u16 = 0x000F;
pub const KV_GET: u16 = 0x0011;
pub const KV_VALUE: u16 = 0x0012;
pub const KV_PUT: u16 = 0x0013;
pub const KV_WRITTEN: u16 = 0x0014;
pub const KV_WATCH: u16 = 0x0015;
pub const LOCK: u16 = 0x0017;
pub const LOCK_RESPONSE: u16 = 0x0018;
pub const UNLOCK: u16 = 0x0019;
pub const LOCKS: u16 = 0x001B;
pub const LOCKS_RESPONSE: u16 = 0x001C;
pub const ACTIVITY: u16 = 0x001D;
pub const ACTIVITY_RESPONSE: u16 = 0x001E;
pub const STATS: u16 = 0x001F;
pub const STATS_RESPONSE: u16 = 0x0020;
/// Event: a member joined a session this connection is a member of.
pub const MEMBER_JOINED: u16 = 0x8001;
/// Event: a member left (or its connection or daemon went away).
pub const MEMBER_LEFT: u16 = 0x8002;
/// Event: a member's presence blob changed.
pub const PRESENCE_CHANGED: u16 = 0x8003;
/// Event: a message published on a topic a subscription matches.
pub const MESSAGE: u16 = 0x8004;
/// Event: a subscription's queue overflowed; N messages were dropped.
pub const LAGGED: u16 = 0x8005;
/// Event: a key under a watched prefix changed.
pub const KV_CHANGED: u16 = 0x8006;
/// Event: a resource was locked or released.
pub const LOCK_CHANGED: u16 = 0x8007;
/// Event: a shared session's bridge went degraded or recovered.
pub const SESSION_STATUS: u16 = 0x8008;

/// Join flag: bridge the session through NATS (when the daemon has `--collab-nats`). Set by the creator.
pub const JOIN_SHARED: u8 = 1;
/// Join flag: fail with `NotFound` instead of creating the session.
pub const JOIN_EXISTING: u8 = 2;

/// Publish flag: keep the message in the session's activity feed.
pub const PUBLISH_PERSISTENT: u8 = 1;

/// KvPut flag: write only if the key's version is `expect_version` (0: only if the key does not exist).
pub const KV_CAS: u8 = 1;
/// KvPut flag: delete the key (the value is ignored).
pub const KV_DELETE: u8 = 2;

/// MemberLeft reason: the member sent Leave.
pub const LEFT_LEAVE: u8 = 1;
/// MemberLeft reason: the member's connection ended (process exit, crash, kill -9).
pub const LEFT_DISCONNECT: u8 = 2;
/// MemberLeft reason: the member's daemon stopped answering over the bridge.
pub const LEFT_DAEMON_LOST: u8 = 3;

/// LockChanged state: the resource is now locked by `owner`.
pub const LOCK_LOCKED: u8 = 1;
/// LockChanged state: the owner released it (or its connection ended).
pub const LOCK_RELEASED: u8 = 2;
/// LockChanged state: someone else force-unlocked it; `reason` says why.
pub const LOCK_FORCED: u8 = 3;
/// LockChanged state: a bridged lock expired (its daemon stopped refreshing it).
pub const LOCK_EXPIRED: u8 = 4;

/// Activity kinds (ActivityEntry.kind).
pub const ACT_JOIN: u8 = 1;
pub const ACT_LEAVE: u8 = 2;
pub const ACT_LOCK: u8 = 3;
pub const ACT_UNLOCK: u8 = 4;
pub const ACT_MESSAGE: u8 = 5;

/// Bridge state (Stats, SessionStatus): the session is local only.
pub const BRIDGE_LOCAL: u8 = 0;
/// Bridge state: connected to NATS.
pub const BRIDGE_UP: u8 = 1;
/// Bridge state: NATS unreachable; local members keep working, remote ones are not seen.
pub const BRIDGE_DEGRADED: u8 = 2;

define_messages! {
    service: "collab";
    hand_written: [];

    /// Join: `str16` session, `u8` flags ([`JOIN_SHARED`], [`JOIN_EXISTING`]), `str16` client name, `str16`
    /// user name, `u32` pid, then the presence blob (rest). Creates the session unless `JOIN_EXISTING`.
    /// Joining again on the same connection updates the member.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Join as "CollabJoin" = JOIN, exact {
        session: String,
        flags: u8,
        client: String,
        user: String,
        pid: u32,
        presence: Bytes,
    }

    /// Joined: `u64` member id, `bool` created (this join made the session), `bool` shared, `u8` bridge state.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Joined as "CollabJoined" = JOINED, lenient {
        member: u64,
        created: bool,
        shared: bool,
        bridge: u8,
    }

    /// Leave: `str16` session. Answered by [`Ack`] (count 1 if this connection was a member, else 0).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Leave as "CollabLeave" = LEAVE, exact {
        session: String,
    }

    /// Ack: `u32` count — what the request affected (see each request).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Ack as "CollabAck" = ACK, lenient {
        count: u32,
    }

    /// Asks for [`SessionsResponse`]: every session of this daemon (and every known shared one).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Sessions as "CollabSessions" = SESSIONS, exact;

    /// SessionsResponse: `list16 of SessionInfo`.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct SessionsResponse as "CollabSessionsResponse" = SESSIONS_RESPONSE, lenient {
        sessions: Vec<SessionInfo>,
    }

    /// Members: `str16` session.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Members as "CollabMembers" = MEMBERS, exact {
        session: String,
    }

    /// MembersResponse: `list16 of MemberInfo`, local members first.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct MembersResponse as "CollabMembersResponse" = MEMBERS_RESPONSE, lenient {
        members: Vec<MemberInfo>,
    }

    /// SetPresence: `str16` session, then the new presence blob (rest). Answered by [`Ack`] (count 1).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SetPresence as "CollabSetPresence" = SET_PRESENCE, exact {
        session: String,
        presence: Bytes,
    }

    /// Publish: `str16` session, `str16` topic, `u8` flags ([`PUBLISH_PERSISTENT`]), then the payload (rest).
    /// The publisher need not be a member. Messages of one connection reach each subscriber in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Publish as "CollabPublish" = PUBLISH, exact {
        session: String,
        topic: String,
        flags: u8,
        payload: Bytes,
    }

    /// Published: `u64` seq (the session's message counter), `u32` local subscriptions the message was
    /// queued for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Published as "CollabPublished" = PUBLISHED, lenient {
        seq: u64,
        queued: u32,
    }

    /// Subscribe: `str16` session, `str16` pattern (a topic, or a prefix ending in `*`; `*` alone = every
    /// topic), `u32` queue (messages buffered before lagging; 0 = the daemon's default).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Subscribe as "CollabSubscribe" = SUBSCRIBE, exact {
        session: String,
        pattern: String,
        queue: u32,
    }

    /// Subscribed: `u32` subscription id (answers Subscribe and KvWatch).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Subscribed as "CollabSubscribed" = SUBSCRIBED, lenient {
        subscription: u32,
    }

    /// Unsubscribe: `u32` subscription id (of this connection). Answered by [`Ack`] (1 if it existed).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Unsubscribe as "CollabUnsubscribe" = UNSUBSCRIBE, exact {
        subscription: u32,
    }

    /// KvGet: `str16` session, `str16` key.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct KvGet as "CollabKvGet" = KV_GET, exact {
        session: String,
        key: String,
    }

    /// KvValue: `bool` found, `u64` version (0 when not found), then the value (rest).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct KvValue as "CollabKvValue" = KV_VALUE, exact {
        found: bool,
        version: u64,
        value: Bytes,
    }

    /// KvPut: `str16` session, `str16` key, `u8` flags ([`KV_CAS`], [`KV_DELETE`]), `u64` expect_version,
    /// then the value (rest). Versions grow by one per write of a key, from 1.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct KvPut as "CollabKvPut" = KV_PUT, exact {
        session: String,
        key: String,
        flags: u8,
        expect_version: u64,
        value: Bytes,
    }

    /// KvWritten: `bool` ok, `u64` version — the new version when ok, else the current one (0: absent).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct KvWritten as "CollabKvWritten" = KV_WRITTEN, lenient {
        ok: bool,
        version: u64,
    }

    /// KvWatch: `str16` session, `str16` key prefix (empty: every key), `u32` queue (as Subscribe).
    /// Answered by [`Subscribed`]; changes come as [`KvChanged`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct KvWatch as "CollabKvWatch" = KV_WATCH, exact {
        session: String,
        prefix: String,
        queue: u32,
    }

    /// Lock: `str16` session, `list_str16` resources, `str16` note (shown to others). All or nothing: when
    /// any resource is held by another member, nothing is locked and the response names every owner.
    /// The connection must be a member of the session.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Lock as "CollabLock" = LOCK, exact {
        session: String,
        resources: Vec<String>,
        note: String,
    }

    /// LockResponse: `bool` acquired, then `list16 of LockInfo`: the contested resources and their owners
    /// (empty when acquired).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LockResponse as "CollabLockResponse" = LOCK_RESPONSE, lenient {
        acquired: bool,
        contested: Vec<LockInfo>,
    }

    /// Unlock: `str16` session, `list_str16` resources, `bool` force, `str16` reason. Without force, only
    /// the caller's own locks are released; with force, any, and each previous owner is told (LockChanged
    /// [`LOCK_FORCED`] with the reason). Answered by [`Ack`] (locks released).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Unlock as "CollabUnlock" = UNLOCK, exact {
        session: String,
        resources: Vec<String>,
        force: bool,
        reason: String,
    }

    /// Locks: `str16` session, `str16` resource prefix (empty: all). Answered by [`LocksResponse`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Locks as "CollabLocks" = LOCKS, exact {
        session: String,
        prefix: String,
    }

    /// LocksResponse: `list16 of LockInfo`, sorted by resource.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct LocksResponse as "CollabLocksResponse" = LOCKS_RESPONSE, lenient {
        locks: Vec<LockInfo>,
    }

    /// Activity: `str16` session, `u64` after (entries with a greater seq; 0 = from the oldest kept),
    /// `u32` max entries (0 = all kept).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Activity as "CollabActivity" = ACTIVITY, exact {
        session: String,
        after: u64,
        max: u32,
    }

    /// ActivityResponse: `u64` oldest seq kept, then `list16 of ActivityEntry`, oldest first.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct ActivityResponse as "CollabActivityResponse" = ACTIVITY_RESPONSE, lenient {
        oldest: u64,
        entries: Vec<ActivityEntry>,
    }

    /// Asks for [`CollabStats`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Stats as "CollabStatsRequest" = STATS, exact;

    /// CollabStats: counters (`u64` each, in this order); `bridge` is the NATS link ([`BRIDGE_LOCAL`]: no
    /// `--collab-nats`, [`BRIDGE_UP`], [`BRIDGE_DEGRADED`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct CollabStats = STATS_RESPONSE, lenient {
        sessions: u64,
        members: u64,
        subscriptions: u64,
        published: u64,
        delivered: u64,
        dropped: u64,
        locks: u64,
        bridge: u64,
        bridge_reconnects: u64,
        bridge_errors: u64,
    }

    /// MemberJoined (event): `str16` session, then `list16 of MemberInfo` holding the one member.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct MemberJoined as "CollabMemberJoined" = MEMBER_JOINED, exact {
        session: String,
        member: Vec<MemberInfo>,
    }

    /// MemberLeft (event): `str16` session, `u64` member, `u8` reason ([`LEFT_LEAVE`], [`LEFT_DISCONNECT`],
    /// [`LEFT_DAEMON_LOST`]).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct MemberLeft as "CollabMemberLeft" = MEMBER_LEFT, exact {
        session: String,
        member: u64,
        reason: u8,
    }

    /// PresenceChanged (event): `str16` session, `u64` member, then the presence blob (rest).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PresenceChanged as "CollabPresenceChanged" = PRESENCE_CHANGED, exact {
        session: String,
        member: u64,
        presence: Bytes,
    }

    /// Message (event): `u32` subscription, `str16` session, `str16` topic, `u64` publisher member (0 when
    /// the publisher was not a member), `u64` seq, then the payload (rest).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TopicMessage as "CollabMessage" = MESSAGE, exact {
        subscription: u32,
        session: String,
        topic: String,
        publisher: u64,
        seq: u64,
        payload: Bytes,
    }

    /// Lagged (event): `u32` subscription, `u64` dropped. The subscription's queue was full: this many
    /// messages (or key changes) were dropped at this point of the stream. One event per overflow.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Lagged as "CollabLagged" = LAGGED, exact {
        subscription: u32,
        dropped: u64,
    }

    /// KvChanged (event): `u32` subscription, `str16` session, `str16` key, `u64` version, `bool` deleted,
    /// then the value (rest; empty when deleted).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct KvChanged as "CollabKvChanged" = KV_CHANGED, exact {
        subscription: u32,
        session: String,
        key: String,
        version: u64,
        deleted: bool,
        value: Bytes,
    }

    /// LockChanged (event, to every member): `str16` session, `u8` state ([`LOCK_LOCKED`],
    /// [`LOCK_RELEASED`], [`LOCK_FORCED`], [`LOCK_EXPIRED`]), `str16` reason (force-unlock's), then
    /// `list16 of LockInfo` holding the one lock (its owner: the new one for locked, else the previous one).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LockChanged as "CollabLockChanged" = LOCK_CHANGED, exact {
        session: String,
        state: u8,
        reason: String,
        lock: Vec<LockInfo>,
    }

    /// SessionStatus (event, to every member of a shared session): `str16` session, `u8` bridge state
    /// ([`BRIDGE_UP`], [`BRIDGE_DEGRADED`]), `str16` detail.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SessionStatus as "CollabSessionStatus" = SESSION_STATUS, exact {
        session: String,
        bridge: u8,
        detail: String,
    }
}

/// One session as [`SessionsResponse`] lists it: `str16` name, `bool` shared, `u8` bridge state, `u32`
/// members (local and remote), `u32` locks, `u64` messages published.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionInfo {
    pub name: String,
    pub shared: bool,
    pub bridge: u8,
    pub members: u32,
    pub locks: u32,
    pub messages: u64,
}

impl Record for SessionInfo {
    const MIN_LEN: usize = 2 + 1 + 1 + 4 + 4 + 8;
    fn put(&self, out: &mut BytesMut) {
        put_str16(out, &self.name);
        out.put_u8(u8::from(self.shared));
        out.put_u8(self.bridge);
        out.put_u32_le(self.members);
        out.put_u32_le(self.locks);
        out.put_u64_le(self.messages);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(SessionInfo {
            name: r.str16()?,
            shared: r.u8()? != 0,
            bridge: r.u8()?,
            members: r.u32()?,
            locks: r.u32()?,
            messages: r.u64()?,
        })
    }
}

/// One member: `u64` member id, `str16` client name, `str16` user, `u32` pid, `str16` host (the daemon's
/// machine), `bytes32` presence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberInfo {
    pub member: u64,
    pub client: String,
    pub user: String,
    pub pid: u32,
    pub host: String,
    pub presence: Bytes,
}

impl Record for MemberInfo {
    const MIN_LEN: usize = 8 + 2 + 2 + 4 + 2 + 4;
    fn put(&self, out: &mut BytesMut) {
        out.put_u64_le(self.member);
        put_str16(out, &self.client);
        put_str16(out, &self.user);
        out.put_u32_le(self.pid);
        put_str16(out, &self.host);
        put_bytes32(out, &self.presence);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(MemberInfo {
            member: r.u64()?,
            client: r.str16()?,
            user: r.str16()?,
            pid: r.u32()?,
            host: r.str16()?,
            presence: r.bytes32()?,
        })
    }
}

impl MemberInfo {
    /// `client (user@host, pid N)`: how people see an owner.
    pub fn who(&self) -> String {
        format!(
            "{} ({}@{}, pid {})",
            self.client, self.user, self.host, self.pid
        )
    }
}

/// One lock: `str16` resource, `u64` owner member, `str16` owner (client and user, for people), `str16`
/// host, `str16` note, `u64` since (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockInfo {
    pub resource: String,
    pub owner: u64,
    pub who: String,
    pub host: String,
    pub note: String,
    pub since_ms: u64,
}

impl Record for LockInfo {
    const MIN_LEN: usize = 2 + 8 + 2 + 2 + 2 + 8;
    fn put(&self, out: &mut BytesMut) {
        put_str16(out, &self.resource);
        out.put_u64_le(self.owner);
        put_str16(out, &self.who);
        put_str16(out, &self.host);
        put_str16(out, &self.note);
        out.put_u64_le(self.since_ms);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(LockInfo {
            resource: r.str16()?,
            owner: r.u64()?,
            who: r.str16()?,
            host: r.str16()?,
            note: r.str16()?,
            since_ms: r.u64()?,
        })
    }
}

/// One activity entry: `u64` seq, `u64` time (Unix ms), `u8` kind (`ACT_*`), `u64` member, `str16` who,
/// `str16` subject (topic or resource), `bytes32` data (a persistent message's payload; else empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActivityEntry {
    pub seq: u64,
    pub time_ms: u64,
    pub kind: u8,
    pub member: u64,
    pub who: String,
    pub subject: String,
    pub data: Bytes,
}

impl Record for ActivityEntry {
    const MIN_LEN: usize = 8 + 8 + 1 + 8 + 2 + 2 + 4;
    fn put(&self, out: &mut BytesMut) {
        out.put_u64_le(self.seq);
        out.put_u64_le(self.time_ms);
        out.put_u8(self.kind);
        out.put_u64_le(self.member);
        put_str16(out, &self.who);
        put_str16(out, &self.subject);
        put_bytes32(out, &self.data);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(ActivityEntry {
            seq: r.u64()?,
            time_ms: r.u64()?,
            kind: r.u8()?,
            member: r.u64()?,
            who: r.str16()?,
            subject: r.str16()?,
            data: r.bytes32()?,
        })
    }
}

/// An activity kind's name, for people.
pub fn activity_name(kind: u8) -> &'static str {
    match kind {
        ACT_JOIN => "join",
        ACT_LEAVE => "leave",
        ACT_LOCK => "lock",
        ACT_UNLOCK => "unlock",
        ACT_MESSAGE => "message",
        _ => "unknown",
    }
}

/// True when `topic` matches a subscription pattern: equal, or `pattern` ends in `*` and `topic` starts with
/// what precedes it.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}
