//! The Control service (`0x0001`): handshake, liveness, version, shutdown, stats, sponsors.
//!
//! Request types are odd, their responses the next even number.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Reader, put_list_str16, put_list_u16, put_str16};
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

/// Hello flag: register the client's pid as a sponsor (see `--exit-with-sponsors`).
pub const HELLO_FLAG_SPONSOR: u32 = 1;

/// Declares a message with an empty payload.
macro_rules! empty_message {
    ($(#[$m:meta])* $name:ident = $ty:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;
        impl Message for $name {
            const TYPE: u16 = $ty;
            fn encode(&self, _out: &mut BytesMut) {}
            fn decode(p: &Bytes) -> Result<Self, ProtoError> {
                if p.is_empty() { Ok($name) } else { Err(ProtoError::TrailingBytes) }
            }
        }
    };
}
pub(crate) use empty_message;

/// Ping: an opaque payload (at most 1 KiB by convention) echoed back in [`Pong`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ping {
    pub data: Bytes,
}
impl Message for Ping {
    const TYPE: u16 = PING;
    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.data);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        Ok(Ping { data: p.clone() })
    }
}

/// Pong: the Ping payload, unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pong {
    pub data: Bytes,
}
impl Message for Pong {
    const TYPE: u16 = PONG;
    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.data);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        Ok(Pong { data: p.clone() })
    }
}

empty_message!(
    /// Asks for [`VersionResponse`].
    Version = VERSION
);
empty_message!(
    /// Asks the daemon to finish in-flight requests and exit.
    Shutdown = SHUTDOWN
);
empty_message!(
    /// Sent before the daemon stops accepting work.
    ShutdownAck = SHUTDOWN_ACK
);
empty_message!(
    /// Asks for [`StatsResponse`].
    Stats = STATS
);

/// `u16` protocol version, `str16` daemon version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionResponse {
    pub protocol_version: u16,
    pub daemon_version: String,
}
impl Message for VersionResponse {
    const TYPE: u16 = VERSION_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.protocol_version);
        put_str16(out, &self.daemon_version);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let m = VersionResponse {
            protocol_version: r.u16()?,
            daemon_version: r.str16()?,
        };
        r.finish()?;
        Ok(m)
    }
}

/// Daemon-wide statistics. Later protocol revisions may append fields: decoders ignore trailing bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsResponse {
    pub uptime_secs: u64,
    pub protocol_version: u16,
    /// Registered service ids, sorted ascending.
    pub services: Vec<u16>,
    pub current_connections: u32,
    pub total_connections: u64,
}
impl Message for StatsResponse {
    const TYPE: u16 = STATS_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.uptime_secs);
        out.put_u16_le(self.protocol_version);
        put_list_u16(out, &self.services);
        out.put_u32_le(self.current_connections);
        out.put_u64_le(self.total_connections);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        Ok(StatsResponse {
            uptime_secs: r.u64()?,
            protocol_version: r.u16()?,
            services: r.list_u16()?,
            current_connections: r.u32()?,
            total_connections: r.u64()?,
        })
    }
}

/// The handshake a client sends first (optional, but every shipped client sends it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u16,
    /// Bit set: [`HELLO_FLAG_SPONSOR`]. Unknown bits are ignored.
    pub flags: u32,
    pub pid: u32,
    pub client_name: String,
}
impl Message for Hello {
    const TYPE: u16 = HELLO;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.protocol_version);
        out.put_u32_le(self.flags);
        out.put_u32_le(self.pid);
        put_str16(out, &self.client_name);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let m = Hello {
            protocol_version: r.u16()?,
            flags: r.u32()?,
            pid: r.u32()?,
            client_name: r.str16()?,
        };
        r.finish()?;
        Ok(m)
    }
}

/// The daemon's answer to [`Hello`]. Decoders ignore trailing bytes (room for later fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloResponse {
    pub protocol_version: u16,
    pub daemon_version: String,
    pub daemon_pid: u32,
    /// Registered service ids, sorted ascending.
    pub services: Vec<u16>,
    /// Feature names, e.g. `stream`, `sponsor`.
    pub capabilities: Vec<String>,
}
impl Message for HelloResponse {
    const TYPE: u16 = HELLO_RESPONSE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.protocol_version);
        put_str16(out, &self.daemon_version);
        out.put_u32_le(self.daemon_pid);
        put_list_u16(out, &self.services);
        put_list_str16(out, &self.capabilities);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        Ok(HelloResponse {
            protocol_version: r.u16()?,
            daemon_version: r.str16()?,
            daemon_pid: r.u32()?,
            services: r.list_u16()?,
            capabilities: r.list_str16()?,
        })
    }
}

/// Registers a process id as a sponsor of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterSponsor {
    pub pid: u32,
}
impl Message for RegisterSponsor {
    const TYPE: u16 = REGISTER_SPONSOR;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.pid);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let m = RegisterSponsor { pid: r.u32()? };
        r.finish()?;
        Ok(m)
    }
}

/// The number of live sponsors after registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterSponsorAck {
    pub sponsors: u32,
}
impl Message for RegisterSponsorAck {
    const TYPE: u16 = REGISTER_SPONSOR_ACK;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.sponsors);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let m = RegisterSponsorAck { sponsors: r.u32()? };
        r.finish()?;
        Ok(m)
    }
}

pub const NAMESPACES: u16 = 0x000D;
pub const NAMESPACES_RESPONSE: u16 = 0x000E;
/// Event (Control): the daemon dropped events for this connection because its event queue was full.
pub const EVENTS_LOST: u16 = 0x8001;

empty_message!(
    /// Asks for [`NamespacesResponse`]: every namespace the daemon serves, with its counters.
    Namespaces = NAMESPACES
);

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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespacesResponse {
    pub namespaces: Vec<NamespaceStats>,
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

/// EventsLost (event `0x8001` on Control): `u64` events dropped since the last EventsLost on this connection.
/// Sent between replies once the connection's event queue has room again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsLost {
    pub dropped: u64,
}
impl Message for EventsLost {
    const TYPE: u16 = EVENTS_LOST;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.dropped);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let m = EventsLost { dropped: r.u64()? };
        r.finish()?;
        Ok(m)
    }
}
