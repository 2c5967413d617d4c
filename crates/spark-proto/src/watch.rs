//! The Watch service (`0x0007`): file-system watches shared by every client of the daemon.
//!
//! A client subscribes to a root directory (with include and exclude globs); the daemon pushes
//! [`Changes`] events after a settle time, each carrying a clock. A clock is two `u64`: `instance`, unique to
//! one incarnation of a watched root (a daemon restart or a released root gives a new one), and `seq`, which
//! grows with every batch. Asking for changes "since" a clock answers with the changes or with the
//! `fresh_instance` flag, never with a silent gap. Overflow becomes one [`Rescan`] event per root; a root
//! that disappears or cannot be watched ends its subscriptions with [`Ended`].
//!
//! Paths in messages are relative to the root, `/`-separated, UTF-8. Every message is defined once, below,
//! by [`define_messages!`](crate::messages), except the ones holding a list of changes or roots.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Reader, put_str16};
use crate::messages::{MessageInfo, define_messages};
use crate::{Message, ProtoError};

pub const SUBSCRIBE: u16 = 0x0001;
pub const SUBSCRIBE_RESPONSE: u16 = 0x0002;
pub const UNSUBSCRIBE: u16 = 0x0003;
pub const UNSUBSCRIBE_RESPONSE: u16 = 0x0004;
pub const QUERY: u16 = 0x0005;
pub const QUERY_RESPONSE: u16 = 0x0006;
pub const LIST: u16 = 0x0007;
pub const LIST_RESPONSE: u16 = 0x0008;
/// Event: a settled batch of changes for one subscription.
pub const CHANGES: u16 = 0x8001;
/// Event: the root overflowed (events were missed); rescan it.
pub const RESCAN: u16 = 0x8002;
/// Event: the subscription ended (root deleted, watch limit reached, watch failed).
pub const ENDED: u16 = 0x8003;

/// Subscribe/Query flag: do not honour `.gitignore`, `.ignore` and the global excludes file.
pub const FLAG_NO_IGNORE_FILES: u8 = 1;

/// Changes flag: the daemon has no history back to the asked clock; the client must rescan.
pub const CHANGES_FRESH_INSTANCE: u8 = 1;
/// Changes flag: more events with the same clock follow (a batch too large for one event).
pub const CHANGES_MORE: u8 = 2;

/// Ended reason: the root directory was deleted or moved away.
pub const ENDED_ROOT_DELETED: u8 = 1;
/// Ended reason: the OS ran out of watches (`fs.inotify.max_user_watches` on Linux).
pub const ENDED_WATCH_LIMIT: u8 = 2;
/// Ended reason: another watch error (in the message).
pub const ENDED_ERROR: u8 = 3;

define_messages! {
    service: "watch";
    hand_written: [QueryResponse::INFO, ListResponse::INFO, Changes::INFO];

    /// Subscribe: `str16` root (absolute), `u8` flags ([`FLAG_NO_IGNORE_FILES`]), include and exclude globs
    /// (`list_str16`, matched against root-relative paths; no include glob = everything), and a clock
    /// (`since_instance`, `since_seq`; instance 0 = no since). With a clock, the first [`Changes`] event holds
    /// what changed since it, or has [`CHANGES_FRESH_INSTANCE`] set.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Subscribe as "WatchSubscribe" = SUBSCRIBE, exact {
        root: String,
        flags: u8,
        include: Vec<String>,
        exclude: Vec<String>,
        since_instance: u64,
        since_seq: u64,
    }

    /// SubscribeResponse: `u32` subscription id, the root's clock now, and how much of the tree is watched.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct SubscribeResponse as "WatchSubscribeResponse" = SUBSCRIBE_RESPONSE, lenient {
        subscription: u32,
        instance: u64,
        seq: u64,
        watched_dirs: u32,
        watched_files: u64,
    }

    /// Unsubscribe: `u32` subscription id (of this connection).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Unsubscribe as "WatchUnsubscribe" = UNSUBSCRIBE, exact {
        subscription: u32,
    }

    /// UnsubscribeResponse: `u8` whether the subscription existed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct UnsubscribeResponse as "WatchUnsubscribeResponse" = UNSUBSCRIBE_RESPONSE, exact {
        existed: bool,
    }

    /// Query: files under `root` matching the globs that changed since the clock, without a subscription.
    /// Same fields as [`Subscribe`]. An unwatched root starts being watched (and is released after the grace
    /// period) and answers `fresh_instance`.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Query as "WatchQuery" = QUERY, exact {
        root: String,
        flags: u8,
        include: Vec<String>,
        exclude: Vec<String>,
        since_instance: u64,
        since_seq: u64,
    }

    /// Asks for [`ListResponse`]: every watched root.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct List as "WatchList" = LIST, exact;

    /// Rescan (event): `u32` subscription, `str16` root, the clock after the overflow, `str16` reason. Events
    /// were missed under the root: the client rescans it. One per overflow, never a flood of file events.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Rescan as "WatchRescan" = RESCAN, exact {
        subscription: u32,
        root: String,
        instance: u64,
        seq: u64,
        reason: String,
    }

    /// Ended (event): `u32` subscription, `str16` root, `u8` reason ([`ENDED_ROOT_DELETED`],
    /// [`ENDED_WATCH_LIMIT`], [`ENDED_ERROR`]), `str16` message. No event follows for this subscription.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Ended as "WatchEnded" = ENDED, exact {
        subscription: u32,
        root: String,
        reason: u8,
        message: String,
    }
}

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Created = 1,
    Modified = 2,
    Removed = 3,
    /// `path` was renamed to `to`.
    Renamed = 4,
}

impl ChangeKind {
    pub fn from_u8(v: u8) -> Result<Self, ProtoError> {
        Ok(match v {
            1 => ChangeKind::Created,
            2 => ChangeKind::Modified,
            3 => ChangeKind::Removed,
            4 => ChangeKind::Renamed,
            _ => return Err(ProtoError::InvalidValue("unknown change kind")),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Modified => "modified",
            ChangeKind::Removed => "removed",
            ChangeKind::Renamed => "renamed",
        }
    }
}

/// One change: a kind and a root-relative path (and, for a rename, the new path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: String,
    /// The rename's destination; empty for other kinds.
    pub to: String,
}

impl Change {
    pub fn new(kind: ChangeKind, path: impl Into<String>) -> Self {
        Change {
            kind,
            path: path.into(),
            to: String::new(),
        }
    }
    pub fn renamed(from: impl Into<String>, to: impl Into<String>) -> Self {
        Change {
            kind: ChangeKind::Renamed,
            path: from.into(),
            to: to.into(),
        }
    }
    /// Bytes this change takes on the wire.
    pub fn wire_len(&self) -> usize {
        1 + 2
            + self.path.len()
            + if self.kind == ChangeKind::Renamed {
                2 + self.to.len()
            } else {
                0
            }
    }
}

const CHANGES_LAYOUT: &str = "u32 count, then per change: kind u8 (1 created, 2 modified, 3 removed, 4 renamed), path str16, and for renamed: to str16";

fn put_changes(out: &mut BytesMut, changes: &[Change]) {
    out.put_u32_le(changes.len() as u32);
    for c in changes {
        out.put_u8(c.kind as u8);
        put_str16(out, &c.path);
        if c.kind == ChangeKind::Renamed {
            put_str16(out, &c.to);
        }
    }
}

fn get_changes(r: &mut Reader<'_>) -> Result<Vec<Change>, ProtoError> {
    let n = r.u32()? as usize;
    // Each change takes at least 3 bytes: a hostile count cannot make us allocate more than the payload.
    if n > r.remaining() / 3 {
        return Err(ProtoError::Truncated);
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = ChangeKind::from_u8(r.u8()?)?;
        let path = r.str16()?;
        let to = if kind == ChangeKind::Renamed {
            r.str16()?
        } else {
            String::new()
        };
        v.push(Change { kind, path, to });
    }
    Ok(v)
}

/// Changes (event): `u32` subscription, the clock (`u64` instance, `u64` seq), `u8` flags
/// ([`CHANGES_FRESH_INSTANCE`], [`CHANGES_MORE`]), then the changes in the order they settled.
///
/// Hand-written: a list of records with an optional field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub subscription: u32,
    pub instance: u64,
    pub seq: u64,
    pub flags: u8,
    pub changes: Vec<Change>,
}

impl Changes {
    /// This message's registry entry (see [`crate::messages::ALL`]).
    pub const INFO: MessageInfo = MessageInfo {
        service: "watch",
        name: "WatchChanges",
        msg_type: CHANGES,
        fields: &[
            ("subscription", "u32"),
            ("instance", "u64"),
            ("seq", "u64"),
            ("flags", "u8"),
            ("changes", CHANGES_LAYOUT),
        ],
        keyed: false,
        exact: true,
    };
    pub fn fresh_instance(&self) -> bool {
        self.flags & CHANGES_FRESH_INSTANCE != 0
    }
    pub fn more(&self) -> bool {
        self.flags & CHANGES_MORE != 0
    }
}

impl Message for Changes {
    const TYPE: u16 = CHANGES;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.subscription);
        out.put_u64_le(self.instance);
        out.put_u64_le(self.seq);
        out.put_u8(self.flags);
        put_changes(out, &self.changes);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let m = Changes {
            subscription: r.u32()?,
            instance: r.u64()?,
            seq: r.u64()?,
            flags: r.u8()?,
            changes: get_changes(&mut r)?,
        };
        r.finish()?;
        Ok(m)
    }
}

/// QueryResponse: the root's clock now (`u64` instance, `u64` seq), `u8` fresh_instance (no history back to
/// the asked clock: rescan; the list is then empty), then the changes, at most one per path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryResponse {
    pub instance: u64,
    pub seq: u64,
    pub fresh_instance: bool,
    pub changes: Vec<Change>,
}

impl QueryResponse {
    /// This message's registry entry (see [`crate::messages::ALL`]).
    pub const INFO: MessageInfo = MessageInfo {
        service: "watch",
        name: "WatchQueryResponse",
        msg_type: QUERY_RESPONSE,
        fields: &[
            ("instance", "u64"),
            ("seq", "u64"),
            ("fresh_instance", "bool"),
            ("changes", CHANGES_LAYOUT),
        ],
        keyed: false,
        exact: true,
    };
}

impl Message for QueryResponse {
    const TYPE: u16 = QUERY_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.instance);
        out.put_u64_le(self.seq);
        out.put_u8(u8::from(self.fresh_instance));
        put_changes(out, &self.changes);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let m = QueryResponse {
            instance: r.u64()?,
            seq: r.u64()?,
            fresh_instance: r.u8()? != 0,
            changes: get_changes(&mut r)?,
        };
        r.finish()?;
        Ok(m)
    }
}

/// One watched root, as [`ListResponse`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RootInfo {
    pub root: String,
    pub flags: u8,
    pub subscribers: u32,
    /// OS watches held (directories watched).
    pub watches: u32,
    /// Files and directories known under the root.
    pub files: u64,
    pub seq: u64,
    /// Overflows turned into rescans so far.
    pub rescans: u64,
}

/// ListResponse: `u16` count, then per root: `str16` root, `u8` flags, `u32` subscribers, `u32` watches,
/// `u64` files, `u64` seq, `u64` rescans. Decoders ignore trailing bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListResponse {
    pub roots: Vec<RootInfo>,
}

impl ListResponse {
    /// This message's registry entry (see [`crate::messages::ALL`]).
    pub const INFO: MessageInfo = MessageInfo {
        service: "watch",
        name: "WatchListResponse",
        msg_type: LIST_RESPONSE,
        fields: &[(
            "roots",
            "u16 count, then per root: root str16, flags u8, subscribers u32, watches u32, files u64, seq u64, rescans u64",
        )],
        keyed: false,
        exact: false,
    };
}

impl Message for ListResponse {
    const TYPE: u16 = LIST_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.roots.len() as u16);
        for r in &self.roots {
            put_str16(out, &r.root);
            out.put_u8(r.flags);
            out.put_u32_le(r.subscribers);
            out.put_u32_le(r.watches);
            out.put_u64_le(r.files);
            out.put_u64_le(r.seq);
            out.put_u64_le(r.rescans);
        }
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let n = r.u16()? as usize;
        let mut roots = Vec::with_capacity(n.min(r.remaining() / 35));
        for _ in 0..n {
            roots.push(RootInfo {
                root: r.str16()?,
                flags: r.u8()?,
                subscribers: r.u32()?,
                watches: r.u32()?,
                files: r.u64()?,
                seq: r.u64()?,
                rescans: r.u64()?,
            });
        }
        Ok(ListResponse { roots })
    }
}

/// A clock as people read and type it: `c:<instance hex>:<seq>`.
pub fn format_clock(instance: u64, seq: u64) -> String {
    format!("c:{instance:x}:{seq}")
}

/// Parses [`format_clock`]'s form.
pub fn parse_clock(s: &str) -> Option<(u64, u64)> {
    let rest = s.strip_prefix("c:")?;
    let (i, q) = rest.split_once(':')?;
    Some((u64::from_str_radix(i, 16).ok()?, q.parse().ok()?))
}
