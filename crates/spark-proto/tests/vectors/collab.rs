//! The Collab service's vectors (protocol.md §14): the table entries, and building/round-tripping each
//! message from its JSON fields. Byte strings are hex; record lists are arrays of objects.

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};
use spark_proto::collab as c;
use spark_proto::{Message, ProtoError, service};

type Entry = (&'static str, u16, &'static str, Value);

pub fn table() -> Vec<Entry> {
    let s = service::COLLAB;
    let member = json!({"member": 8589934594u64, "client": "editor",
        "user": "ana", "pid": 4242, "host": "ws-07", "presence": "7b7d"});
    let lock = json!({"resource": "maps/castle.umap", "owner": 8589934593u64, "who": "editor/ana",
        "host": "ws-07", "note": "lighting", "since_ms": 1764547200000u64});
    vec![
        (
            "collab.join",
            s,
            "CollabJoin",
            json!({"session": "level1", "flags": 1, "client": "editor",
            "user": "ana", "pid": 4242, "presence": "7b7d"}),
        ),
        (
            "collab.joined",
            s,
            "CollabJoined",
            json!({"member": 8589934593u64, "created": 1, "shared": 1,
            "bridge": 1}),
        ),
        (
            "collab.leave",
            s,
            "CollabLeave",
            json!({"session": "level1"}),
        ),
        ("collab.ack", s, "CollabAck", json!({"count": 1})),
        ("collab.sessions", s, "CollabSessions", json!({})),
        (
            "collab.sessions_response",
            s,
            "CollabSessionsResponse",
            json!({"sessions": [{"name": "level1",
            "shared": 0, "bridge": 0, "members": 2, "locks": 1, "messages": 42}]}),
        ),
        (
            "collab.members",
            s,
            "CollabMembers",
            json!({"session": "level1"}),
        ),
        (
            "collab.members_response",
            s,
            "CollabMembersResponse",
            json!({"members": [member.clone()]}),
        ),
        (
            "collab.set_presence",
            s,
            "CollabSetPresence",
            json!({"session": "level1", "presence": "01"}),
        ),
        (
            "collab.publish",
            s,
            "CollabPublish",
            json!({"session": "level1", "topic": "selection/mesh",
            "flags": 1, "payload": "6869"}),
        ),
        (
            "collab.published",
            s,
            "CollabPublished",
            json!({"seq": 7, "queued": 3}),
        ),
        (
            "collab.subscribe",
            s,
            "CollabSubscribe",
            json!({"session": "level1", "pattern": "selection/*",
            "queue": 0}),
        ),
        (
            "collab.subscribed",
            s,
            "CollabSubscribed",
            json!({"subscription": 5}),
        ),
        (
            "collab.unsubscribe",
            s,
            "CollabUnsubscribe",
            json!({"subscription": 5}),
        ),
        (
            "collab.kv_get",
            s,
            "CollabKvGet",
            json!({"session": "level1", "key": "build/rev"}),
        ),
        (
            "collab.kv_value",
            s,
            "CollabKvValue",
            json!({"found": 1, "version": 9, "value": "3132"}),
        ),
        (
            "collab.kv_put_cas",
            s,
            "CollabKvPut",
            json!({"session": "level1", "key": "build/rev", "flags": 1,
            "expect_version": 9, "value": "3133"}),
        ),
        (
            "collab.kv_written",
            s,
            "CollabKvWritten",
            json!({"ok": 0, "version": 10}),
        ),
        (
            "collab.kv_watch",
            s,
            "CollabKvWatch",
            json!({"session": "level1", "prefix": "build/", "queue": 64}),
        ),
        (
            "collab.lock",
            s,
            "CollabLock",
            json!({"session": "level1",
            "resources": ["maps/castle.umap", "textures/rock.png"], "note": "lighting"}),
        ),
        (
            "collab.lock_response",
            s,
            "CollabLockResponse",
            json!({"acquired": 0, "contested": [lock.clone()]}),
        ),
        (
            "collab.unlock_force",
            s,
            "CollabUnlock",
            json!({"session": "level1",
            "resources": ["maps/castle.umap"], "force": 1, "reason": "ana went home"}),
        ),
        (
            "collab.locks",
            s,
            "CollabLocks",
            json!({"session": "level1", "prefix": "maps/"}),
        ),
        (
            "collab.locks_response",
            s,
            "CollabLocksResponse",
            json!({"locks": [lock.clone()]}),
        ),
        (
            "collab.activity",
            s,
            "CollabActivity",
            json!({"session": "level1", "after": 0, "max": 100}),
        ),
        (
            "collab.activity_response",
            s,
            "CollabActivityResponse",
            json!({"oldest": 1, "entries": [
            {"seq": 3, "time_ms": 1764547200000u64, "kind": 5, "member": 8589934593u64, "who": "editor/ana",
                "subject": "level/saved", "data": "7632"}]}),
        ),
        ("collab.stats", s, "CollabStatsRequest", json!({})),
        (
            "collab.stats_response",
            s,
            "CollabStats",
            json!({"sessions": 2, "members": 5, "subscriptions": 4,
            "published": 1000, "delivered": 3000, "dropped": 12, "locks": 3, "bridge": 1,
            "bridge_reconnects": 1, "bridge_errors": 2}),
        ),
        (
            "collab.member_joined",
            s,
            "CollabMemberJoined",
            json!({"session": "level1", "member": [member]}),
        ),
        (
            "collab.member_left",
            s,
            "CollabMemberLeft",
            json!({"session": "level1", "member": 8589934593u64,
            "reason": 2}),
        ),
        (
            "collab.presence_changed",
            s,
            "CollabPresenceChanged",
            json!({"session": "level1",
            "member": 8589934593u64, "presence": "02"}),
        ),
        (
            "collab.message",
            s,
            "CollabMessage",
            json!({"subscription": 5, "session": "level1",
            "topic": "selection/mesh", "publisher": 8589934593u64, "seq": 7, "payload": "6869"}),
        ),
        (
            "collab.lagged",
            s,
            "CollabLagged",
            json!({"subscription": 5, "dropped": 1200}),
        ),
        (
            "collab.kv_changed",
            s,
            "CollabKvChanged",
            json!({"subscription": 6, "session": "level1",
            "key": "build/rev", "version": 10, "deleted": 0, "value": "3133"}),
        ),
        (
            "collab.lock_changed_forced",
            s,
            "CollabLockChanged",
            json!({"session": "level1", "state": 3,
            "reason": "ana went home", "lock": [lock]}),
        ),
        (
            "collab.session_status",
            s,
            "CollabSessionStatus",
            json!({"session": "level1", "bridge": 2,
            "detail": "NATS unreachable: reconnecting"}),
        ),
    ]
}

fn u(f: &Value, k: &str) -> u64 {
    f[k].as_u64().unwrap_or_else(|| panic!("field {k}"))
}
fn s(f: &Value, k: &str) -> String {
    f[k].as_str()
        .unwrap_or_else(|| panic!("field {k}"))
        .to_string()
}
fn b(f: &Value, k: &str) -> Bytes {
    let h = s(f, k);
    Bytes::from(
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect::<Vec<_>>(),
    )
}
fn strs(f: &Value, k: &str) -> Vec<String> {
    f[k].as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}
fn list<T>(f: &Value, k: &str, g: impl Fn(&Value) -> T) -> Vec<T> {
    f[k].as_array().unwrap().iter().map(g).collect()
}
fn member(m: &Value) -> c::MemberInfo {
    c::MemberInfo {
        member: u(m, "member"),
        client: s(m, "client"),
        user: s(m, "user"),
        pid: u(m, "pid") as u32,
        host: s(m, "host"),
        presence: b(m, "presence"),
    }
}
fn lock(l: &Value) -> c::LockInfo {
    c::LockInfo {
        resource: s(l, "resource"),
        owner: u(l, "owner"),
        who: s(l, "who"),
        host: s(l, "host"),
        note: s(l, "note"),
        since_ms: u(l, "since_ms"),
    }
}
fn enc<M: Message>(m: &M) -> Bytes {
    let mut out = BytesMut::new();
    m.encode(&mut out);
    out.freeze()
}

/// Encodes a Collab message from its fields; `None` when `message` is not a Collab message.
pub fn build(message: &str, f: &Value) -> Option<Bytes> {
    Some(match message {
        "CollabJoin" => enc(&c::Join {
            session: s(f, "session"),
            flags: u(f, "flags") as u8,
            client: s(f, "client"),
            user: s(f, "user"),
            pid: u(f, "pid") as u32,
            presence: b(f, "presence"),
        }),
        "CollabJoined" => enc(&c::Joined {
            member: u(f, "member"),
            created: u(f, "created") != 0,
            shared: u(f, "shared") != 0,
            bridge: u(f, "bridge") as u8,
        }),
        "CollabLeave" => enc(&c::Leave {
            session: s(f, "session"),
        }),
        "CollabAck" => enc(&c::Ack {
            count: u(f, "count") as u32,
        }),
        "CollabSessions" => enc(&c::Sessions),
        "CollabSessionsResponse" => enc(&c::SessionsResponse {
            sessions: list(f, "sessions", |x| c::SessionInfo {
                name: s(x, "name"),
                shared: u(x, "shared") != 0,
                bridge: u(x, "bridge") as u8,
                members: u(x, "members") as u32,
                locks: u(x, "locks") as u32,
                messages: u(x, "messages"),
            }),
        }),
        "CollabMembers" => enc(&c::Members {
            session: s(f, "session"),
        }),
        "CollabMembersResponse" => enc(&c::MembersResponse {
            members: list(f, "members", member),
        }),
        "CollabSetPresence" => enc(&c::SetPresence {
            session: s(f, "session"),
            presence: b(f, "presence"),
        }),
        "CollabPublish" => enc(&c::Publish {
            session: s(f, "session"),
            topic: s(f, "topic"),
            flags: u(f, "flags") as u8,
            payload: b(f, "payload"),
        }),
        "CollabPublished" => enc(&c::Published {
            seq: u(f, "seq"),
            queued: u(f, "queued") as u32,
        }),
        "CollabSubscribe" => enc(&c::Subscribe {
            session: s(f, "session"),
            pattern: s(f, "pattern"),
            queue: u(f, "queue") as u32,
        }),
        "CollabSubscribed" => enc(&c::Subscribed {
            subscription: u(f, "subscription") as u32,
        }),
        "CollabUnsubscribe" => enc(&c::Unsubscribe {
            subscription: u(f, "subscription") as u32,
        }),
        "CollabKvGet" => enc(&c::KvGet {
            session: s(f, "session"),
            key: s(f, "key"),
        }),
        "CollabKvValue" => enc(&c::KvValue {
            found: u(f, "found") != 0,
            version: u(f, "version"),
            value: b(f, "value"),
        }),
        "CollabKvPut" => enc(&c::KvPut {
            session: s(f, "session"),
            key: s(f, "key"),
            flags: u(f, "flags") as u8,
            expect_version: u(f, "expect_version"),
            value: b(f, "value"),
        }),
        "CollabKvWritten" => enc(&c::KvWritten {
            ok: u(f, "ok") != 0,
            version: u(f, "version"),
        }),
        "CollabKvWatch" => enc(&c::KvWatch {
            session: s(f, "session"),
            prefix: s(f, "prefix"),
            queue: u(f, "queue") as u32,
        }),
        "CollabLock" => enc(&c::Lock {
            session: s(f, "session"),
            resources: strs(f, "resources"),
            note: s(f, "note"),
        }),
        "CollabLockResponse" => enc(&c::LockResponse {
            acquired: u(f, "acquired") != 0,
            contested: list(f, "contested", lock),
        }),
        "CollabUnlock" => enc(&c::Unlock {
            session: s(f, "session"),
            resources: strs(f, "resources"),
            force: u(f, "force") != 0,
            reason: s(f, "reason"),
        }),
        "CollabLocks" => enc(&c::Locks {
            session: s(f, "session"),
            prefix: s(f, "prefix"),
        }),
        "CollabLocksResponse" => enc(&c::LocksResponse {
            locks: list(f, "locks", lock),
        }),
        "CollabActivity" => enc(&c::Activity {
            session: s(f, "session"),
            after: u(f, "after"),
            max: u(f, "max") as u32,
        }),
        "CollabActivityResponse" => enc(&c::ActivityResponse {
            oldest: u(f, "oldest"),
            entries: list(f, "entries", |e| c::ActivityEntry {
                seq: u(e, "seq"),
                time_ms: u(e, "time_ms"),
                kind: u(e, "kind") as u8,
                member: u(e, "member"),
                who: s(e, "who"),
                subject: s(e, "subject"),
                data: b(e, "data"),
            }),
        }),
        "CollabStatsRequest" => enc(&c::Stats),
        "CollabStats" => enc(&c::CollabStats {
            sessions: u(f, "sessions"),
            members: u(f, "members"),
            subscriptions: u(f, "subscriptions"),
            published: u(f, "published"),
            delivered: u(f, "delivered"),
            dropped: u(f, "dropped"),
            locks: u(f, "locks"),
            bridge: u(f, "bridge"),
            bridge_reconnects: u(f, "bridge_reconnects"),
            bridge_errors: u(f, "bridge_errors"),
        }),
        "CollabMemberJoined" => enc(&c::MemberJoined {
            session: s(f, "session"),
            member: list(f, "member", member),
        }),
        "CollabMemberLeft" => enc(&c::MemberLeft {
            session: s(f, "session"),
            member: u(f, "member"),
            reason: u(f, "reason") as u8,
        }),
        "CollabPresenceChanged" => enc(&c::PresenceChanged {
            session: s(f, "session"),
            member: u(f, "member"),
            presence: b(f, "presence"),
        }),
        "CollabMessage" => enc(&c::TopicMessage {
            subscription: u(f, "subscription") as u32,
            session: s(f, "session"),
            topic: s(f, "topic"),
            publisher: u(f, "publisher"),
            seq: u(f, "seq"),
            payload: b(f, "payload"),
        }),
        "CollabLagged" => enc(&c::Lagged {
            subscription: u(f, "subscription") as u32,
            dropped: u(f, "dropped"),
        }),
        "CollabKvChanged" => enc(&c::KvChanged {
            subscription: u(f, "subscription") as u32,
            session: s(f, "session"),
            key: s(f, "key"),
            version: u(f, "version"),
            deleted: u(f, "deleted") != 0,
            value: b(f, "value"),
        }),
        "CollabLockChanged" => enc(&c::LockChanged {
            session: s(f, "session"),
            state: u(f, "state") as u8,
            reason: s(f, "reason"),
            lock: list(f, "lock", lock),
        }),
        "CollabSessionStatus" => enc(&c::SessionStatus {
            session: s(f, "session"),
            bridge: u(f, "bridge") as u8,
            detail: s(f, "detail"),
        }),
        _ => return None,
    })
}

/// Decodes then re-encodes a Collab message; `None` when `message` is not one.
pub fn roundtrip(message: &str, p: &Bytes) -> Option<Result<(Bytes, u16), ProtoError>> {
    fn rt<M: Message>(p: &Bytes) -> Result<(Bytes, u16), ProtoError> {
        Ok((enc(&M::decode(p)?), M::TYPE))
    }
    Some(match message {
        "CollabJoin" => rt::<c::Join>(p),
        "CollabJoined" => rt::<c::Joined>(p),
        "CollabLeave" => rt::<c::Leave>(p),
        "CollabAck" => rt::<c::Ack>(p),
        "CollabSessions" => rt::<c::Sessions>(p),
        "CollabSessionsResponse" => rt::<c::SessionsResponse>(p),
        "CollabMembers" => rt::<c::Members>(p),
        "CollabMembersResponse" => rt::<c::MembersResponse>(p),
        "CollabSetPresence" => rt::<c::SetPresence>(p),
        "CollabPublish" => rt::<c::Publish>(p),
        "CollabPublished" => rt::<c::Published>(p),
        "CollabSubscribe" => rt::<c::Subscribe>(p),
        "CollabSubscribed" => rt::<c::Subscribed>(p),
        "CollabUnsubscribe" => rt::<c::Unsubscribe>(p),
        "CollabKvGet" => rt::<c::KvGet>(p),
        "CollabKvValue" => rt::<c::KvValue>(p),
        "CollabKvPut" => rt::<c::KvPut>(p),
        "CollabKvWritten" => rt::<c::KvWritten>(p),
        "CollabKvWatch" => rt::<c::KvWatch>(p),
        "CollabLock" => rt::<c::Lock>(p),
        "CollabLockResponse" => rt::<c::LockResponse>(p),
        "CollabUnlock" => rt::<c::Unlock>(p),
        "CollabLocks" => rt::<c::Locks>(p),
        "CollabLocksResponse" => rt::<c::LocksResponse>(p),
        "CollabActivity" => rt::<c::Activity>(p),
        "CollabActivityResponse" => rt::<c::ActivityResponse>(p),
        "CollabStatsRequest" => rt::<c::Stats>(p),
        "CollabStats" => rt::<c::CollabStats>(p),
        "CollabMemberJoined" => rt::<c::MemberJoined>(p),
        "CollabMemberLeft" => rt::<c::MemberLeft>(p),
        "CollabPresenceChanged" => rt::<c::PresenceChanged>(p),
        "CollabMessage" => rt::<c::TopicMessage>(p),
        "CollabLagged" => rt::<c::Lagged>(p),
        "CollabKvChanged" => rt::<c::KvChanged>(p),
        "CollabLockChanged" => rt::<c::LockChanged>(p),
        "CollabSessionStatus" => rt::<c::SessionStatus>(p),
        _ => return None,
    })
}
