//! The Control service (`0x0001`): handshake, liveness, version, shutdown, stats, sponsors, namespaces.
//!
//! Request types are odd, their responses the next even number. Every message is defined once, below, by
//! [`define_messages!`](crate::messages): see [`crate::messages`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Reader, put_str16};
use crate::messages::{MessageInfo, define_messages};
use crate::{Message, ProtoError};

pub const PING: u16 = 0x0001;
pub const PONG: u16 = 0x0002;
pub const VERSION: u16 = 0x0003;
pub const VERSION_RESPONSE: u16 = 0x0004;
pub const SHUTDOWN: u16 = 0x0005;
pub const SHUTDOWN_ACK: u16 = 0x0006;
pub const STATS: u16 = 0x0007;
pub const STATS_RESPONSE: u16 = 0x0008;
pub const HELLO: u16 = 0x0009;
pub const HELLO_RESPONSE: u16 = 0x000A;
pub const REGISTER_SPONSOR: u16 = 0x000B;
pub const REGISTER_SPONSOR_ACK: u16 = 0x000C;
pub const NAMESPACES: u16 = 0x000D;
pub const NAMESPACES_RESPONSE: u16 = 0x000E;
/// Event (Control): the daemon dropped events for this connection because its event queue was full.
pub const EVENTS_LOST: u16 = 0x8001;

/// Hello flag: register the client's pid as a sponsor (see `--exit-with-sponsors`).
pub const HELLO_FLAG_SPONSOR: u32 = 1;

define_messages! {
    service: "control";
    hand_written: [NamespacesResponse::INFO];

    /// Ping: an opaque payload (at most 1 KiB by convention) echoed back in [`Pong`].
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Ping = PING, exact {
        data: Bytes,
    }

    /// Pong: the Ping payload, unchanged.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Pong = PONG, exact {
        data: Bytes,
    }

    /// Asks for [`VersionResponse`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Version = VERSION, exact;

    /// `u16` protocol version, `str16` daemon version.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct VersionResponse = VERSION_RESPONSE, exact {
        protocol_version: u16,
        daemon_version: String,
    }

    /// Asks the daemon to finish in-flight requests and exit.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Shutdown = SHUTDOWN, exact;

    /// Sent before the daemon stops accepting work.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ShutdownAck = SHUTDOWN_ACK, exact;

    /// Asks for [`StatsResponse`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Stats = STATS, exact;

    /// Daemon-wide statistics. Later protocol revisions may append fields: decoders ignore trailing bytes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StatsResponse = STATS_RESPONSE, lenient {
        uptime_secs: u64,
        protocol_version: u16,
        /// Registered service ids, sorted ascending.
        services: Vec<u16>,
        current_connections: u32,
        total_connections: u64,
    }

    /// The handshake a client sends first (optional, but every shipped client sends it).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Hello = HELLO, exact {
        protocol_version: u16,
        /// Bit set: [`HELLO_FLAG_SPONSOR`]. Unknown bits are ignored.
        flags: u32,
        pid: u32,
        client_name: String,
    }

    /// The daemon's answer to [`Hello`]. Decoders ignore trailing bytes (room for later fields).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct HelloResponse = HELLO_RESPONSE, lenient {
        protocol_version: u16,
        daemon_version: String,
        daemon_pid: u32,
        /// Registered service ids, sorted ascending.
        services: Vec<u16>,
        /// Feature names, e.g. `stream`, `sponsor`; sorted ascending, no duplicates.
        capabilities: Vec<String>,
    }

    /// Registers a process id as a sponsor of the daemon.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RegisterSponsor = REGISTER_SPONSOR, exact {
        pid: u32,
    }

    /// The number of live sponsors after registration.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RegisterSponsorAck = REGISTER_SPONSOR_ACK, exact {
        sponsors: u32,
    }

    /// Asks for [`NamespacesResponse`]: every namespace the daemon serves, with its counters.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Namespaces = NAMESPACES, exact;

    /// EventsLost (event `0x8001` on Control): `u64` events dropped since the last EventsLost on this
    /// connection. Sent between replies once the connection's event queue has room again.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct EventsLost = EVENTS_LOST, exact {
        dropped: u64,
    }
}

/// One namespace (a named store: `shader`, `asset`, later `compile`, `http-cas`, …) and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceStats {
    pub name: String,
    /// The service that serves it on this protocol; 0 when it is reached another way (HTTP, internal).
    pub service: u16,
    /// Named counters in the daemon's order. Names are stable; new ones may be added anywhere.
    pub counters: Vec<(String, u64)>,
}

/// `u16` count, then per namespace: `str16` name, `u16` service, `u16` counter count, then per counter
/// `str16` name and `u64` value. Decoders ignore trailing bytes.
///
/// Hand-written: a list of records holding a list is more than the field macro's flat layouts express.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespacesResponse {
    pub namespaces: Vec<NamespaceStats>,
}
impl NamespacesResponse {
    /// This message's registry entry (see [`crate::messages::ALL`]).
    pub const INFO: MessageInfo = MessageInfo {
        service: "control",
        name: "NamespacesResponse",
        msg_type: NAMESPACES_RESPONSE,
        fields: &[(
            "namespaces",
            "u16 count, then per namespace: name str16, service u16, counters (u16 count, then per counter: name str16, value u64)",
        )],
        keyed: false,
        exact: false,
    };
}
impl Message for NamespacesResponse {
    const TYPE: u16 = NAMESPACES_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.namespaces.len() as u16);
        for ns in &self.namespaces {
            put_str16(out, &ns.name);
            out.put_u16_le(ns.service);
            out.put_u16_le(ns.counters.len() as u16);
            for (k, v) in &ns.counters {
                put_str16(out, k);
                out.put_u64_le(*v);
            }
        }
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let n = r.u16()? as usize;
        let mut namespaces = Vec::with_capacity(n.min(r.remaining() / 6));
        for _ in 0..n {
            let name = r.str16()?;
            let service = r.u16()?;
            let k = r.u16()? as usize;
            let mut counters = Vec::with_capacity(k.min(r.remaining() / 10));
            for _ in 0..k {
                let key = r.str16()?;
                counters.push((key, r.u64()?));
            }
            namespaces.push(NamespaceStats {
                name,
                service,
                counters,
            });
        }
        Ok(NamespacesResponse { namespaces })
    }
}
