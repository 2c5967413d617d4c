//! What daemons tell each other over NATS (protocol.md §14.6): one subject per session,
//! `spark.collab.v1.<hex session>`, carrying envelopes: `u8` version (1), `u32` origin daemon, `u8` kind,
//! `str16` session, then the kind's body. Locks and state are not messages: they live in JetStream KV buckets
//! ([`LOCK_BUCKET`], [`STATE_BUCKET`]) under [`kv_key`] keys, values being a [`LockInfo`] record or raw bytes.

use bytes::{BufMut, Bytes, BytesMut};
use spark_proto::ProtoError;
use spark_proto::codec::{Reader, Record, put_records, put_str16};
use spark_proto::collab::{LockInfo, MemberInfo};

pub const VERSION: u8 = 1;
pub const LOCK_BUCKET: &str = "spark_collab_locks";
pub const STATE_BUCKET: &str = "spark_collab_state";
/// Every daemon subscribes to this.
pub const SUBJECTS: &str = "spark.collab.v1.>";

/// One envelope's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A member joined (kind 1): the member record.
    Join(MemberInfo),
    /// A member left (kind 2): `u64` member, `u8` reason.
    Leave { member: u64, reason: u8 },
    /// Presence changed (kind 3): `u64` member, presence (rest).
    Presence { member: u64, presence: Bytes },
    /// A published message (kind 4): `u64` publisher, `str16` who, `u8` flags, `str16` topic, payload (rest).
    Msg {
        publisher: u64,
        who: String,
        flags: u8,
        topic: String,
        payload: Bytes,
    },
    /// A daemon started sharing the session (kind 5): everyone answers with a Roster now.
    Hello,
    /// A key changed (kind 6): `str16` key, `u64` version, `u8` deleted, value (rest).
    Kv {
        key: String,
        version: u64,
        deleted: bool,
        value: Bytes,
    },
    /// The origin's local members (kind 7), sent every refresh period: absence for three periods means the
    /// daemon is gone.
    Roster(Vec<MemberInfo>),
    /// A lock changed (kind 8): `u8` state, `str16` reason, the lock record.
    Lock {
        state: u8,
        reason: String,
        lock: LockInfo,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub origin: u32,
    pub session: String,
    pub body: Body,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The subject of `session`'s envelopes.
pub fn subject(session: &str) -> String {
    format!("spark.collab.v1.{}", hex(session))
}

/// A KV key for `name` in `session`: both hex-encoded, since KV keys allow only `[-/_=.a-zA-Z0-9]`.
pub fn kv_key(session: &str, name: &str) -> String {
    format!("{}.{}", hex(session), hex(name))
}

/// The key prefix of `session`'s entries.
pub fn kv_prefix(session: &str) -> String {
    format!("{}.", hex(session))
}

/// The name part of a [`kv_key`] (None when not hex).
pub fn kv_name(key: &str) -> Option<String> {
    let h = key.rsplit_once('.')?.1;
    if h.len() % 2 != 0 {
        return None;
    }
    let b: Option<Vec<u8>> = (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(b?).ok()
}

pub fn lock_value(l: &LockInfo) -> Bytes {
    let mut out = BytesMut::new();
    l.put(&mut out);
    out.freeze()
}

pub fn parse_lock(v: &Bytes) -> Result<LockInfo, ProtoError> {
    let mut r = Reader::new(v);
    let l = LockInfo::get(&mut r)?;
    r.finish()?;
    Ok(l)
}

impl Envelope {
    pub fn encode(&self) -> Bytes {
        let mut o = BytesMut::new();
        o.put_u8(VERSION);
        o.put_u32_le(self.origin);
        let kind = match &self.body {
            Body::Join(_) => 1,
            Body::Leave { .. } => 2,
            Body::Presence { .. } => 3,
            Body::Msg { .. } => 4,
            Body::Hello => 5,
            Body::Kv { .. } => 6,
            Body::Roster(_) => 7,
            Body::Lock { .. } => 8,
        };
        o.put_u8(kind);
        put_str16(&mut o, &self.session);
        match &self.body {
            Body::Join(m) => m.put(&mut o),
            Body::Leave { member, reason } => {
                o.put_u64_le(*member);
                o.put_u8(*reason);
            }
            Body::Presence { member, presence } => {
                o.put_u64_le(*member);
                o.put_slice(presence);
            }
            Body::Msg {
                publisher,
                who,
                flags,
                topic,
                payload,
            } => {
                o.put_u64_le(*publisher);
                put_str16(&mut o, who);
                o.put_u8(*flags);
                put_str16(&mut o, topic);
                o.put_slice(payload);
            }
            Body::Hello => {}
            Body::Kv {
                key,
                version,
                deleted,
                value,
            } => {
                put_str16(&mut o, key);
                o.put_u64_le(*version);
                o.put_u8(u8::from(*deleted));
                o.put_slice(value);
            }
            Body::Roster(v) => put_records(&mut o, v),
            Body::Lock {
                state,
                reason,
                lock,
            } => {
                o.put_u8(*state);
                put_str16(&mut o, reason);
                lock.put(&mut o);
            }
        }
        o.freeze()
    }

    pub fn decode(p: &Bytes) -> Result<Envelope, ProtoError> {
        let mut r = Reader::new(p);
        if r.u8()? != VERSION {
            return Err(ProtoError::InvalidValue("unknown collab envelope version"));
        }
        let origin = r.u32()?;
        let kind = r.u8()?;
        let session = r.str16()?;
        let body = match kind {
            1 => Body::Join(MemberInfo::get(&mut r)?),
            2 => Body::Leave {
                member: r.u64()?,
                reason: r.u8()?,
            },
            3 => Body::Presence {
                member: r.u64()?,
                presence: r.rest(),
            },
            4 => Body::Msg {
                publisher: r.u64()?,
                who: r.str16()?,
                flags: r.u8()?,
                topic: r.str16()?,
                payload: r.rest(),
            },
            5 => Body::Hello,
            6 => Body::Kv {
                key: r.str16()?,
                version: r.u64()?,
                deleted: r.u8()? != 0,
                value: r.rest(),
            },
            7 => Body::Roster(r.records()?),
            8 => Body::Lock {
                state: r.u8()?,
                reason: r.str16()?,
                lock: LockInfo::get(&mut r)?,
            },
            _ => return Err(ProtoError::InvalidValue("unknown collab envelope kind")),
        };
        r.finish()?;
        Ok(Envelope {
            origin,
            session,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_keys_are_valid_kv_keys() {
        let lock = LockInfo {
            resource: "maps/a b.umap".into(),
            owner: 7,
            ..Default::default()
        };
        for body in [
            Body::Hello,
            Body::Leave {
                member: 9,
                reason: 2,
            },
            Body::Msg {
                publisher: 1,
                who: "e/a".into(),
                flags: 1,
                topic: "t".into(),
                payload: Bytes::from_static(b"x"),
            },
            Body::Roster(vec![MemberInfo::default()]),
            Body::Lock {
                state: 3,
                reason: "r".into(),
                lock: lock.clone(),
            },
        ] {
            let e = Envelope {
                origin: 5,
                session: "s".into(),
                body,
            };
            assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        }
        let k = kv_key("level 1", "maps/a b.umap");
        assert!(k.chars().all(|c| c.is_ascii_hexdigit() || c == '.'));
        assert_eq!(kv_name(&k).unwrap(), "maps/a b.umap");
        assert!(k.starts_with(&kv_prefix("level 1")));
        assert_eq!(parse_lock(&lock_value(&lock)).unwrap(), lock);
        assert!(Envelope::decode(&Bytes::from_static(&[2, 0, 0, 0, 0, 1])).is_err());
    }
}
