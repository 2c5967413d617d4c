//! The SparkDaemon wire protocol, with no I/O in it.
//!
//! Every message travels in a [`Frame`]: an 8-byte little-endian header (payload length `u32`, service id
//! `u16`, message type `u16`) followed by at most [`MAX_PAYLOAD`] bytes of payload. The byte-level
//! specification, with test vectors, is `docs/protocol.md`; `docs/protocol-vectors.json` holds the same vectors
//! for every client implementation to check.
//!
//! Layout of this crate:
//! - [`frame`]: the header, incremental frame decoding from a buffer, and frame encoding;
//! - [`codec`]: the primitive field reader/writer every message uses;
//! - [`error`]: [`ErrorCode`], the `ErrorResponse` message and the decoder's [`ProtoError`];
//! - [`control`]: the Control service's messages (Hello, Ping, Version, Shutdown, Stats, sponsors, namespaces,
//!   the EventsLost event);
//! - [`cache`]: the messages shared by the blob caches (Shader, Asset): get, put, streaming, stats;
//! - [`watch`]: the Watch service's messages (subscriptions, clocks, change events, queries);
//! - [`compile`]: the Compile service's request, streamed per-permutation results and stats;
//! - [`collab`]: the Collab service's sessions, pub/sub, state, locks and their events;
//! - [`messages`]: the registry of every message ([`messages::ALL`]) and the macro that defines them.
//!
//! Design rules the daemon and every client rely on:
//! - replies on one connection come in request order, one logical reply per request, so clients may pipeline;
//! - message type [`msg::ERROR`] is an ErrorResponse on every service;
//! - message types at or above [`msg::EVENT_MIN`] are server-initiated events, never replies;
//! - blobs larger than one frame travel as a stream of [`msg::STREAM_CHUNK`] frames closed by a
//!   [`msg::STREAM_END`] frame carrying the XXH3-128 of the whole blob.

pub mod cache;
pub mod codec;
pub mod collab;
pub mod compile;
pub mod control;
pub mod error;
pub mod frame;
pub mod messages;
pub mod operator;
pub mod watch;

pub use error::{ErrorCode, ErrorResponse, ProtoError};
pub use frame::{Frame, FrameHeader, HEADER_LEN, MAX_PAYLOAD};

/// The protocol version this crate speaks. Bumped on any incompatible change to framing or a message layout.
pub const PROTOCOL_VERSION: u16 = 1;

/// The oldest protocol version a daemon built from this crate still accepts in Hello.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Stable service ids. Never renumber one: clients in the field depend on them.
pub mod service {
    pub const CONTROL: u16 = 0x0001;
    pub const SHADER: u16 = 0x0002;
    pub const ASSET: u16 = 0x0003;
    /// In-daemon shader compilation ([`crate::compile`]).
    pub const COMPILE: u16 = 0x0004;
    /// Collaboration broker: sessions, presence, pub/sub, session state, locks ([`crate::collab`]).
    pub const COLLAB: u16 = 0x0005;
    /// Reserved: build state.
    pub const BUILD: u16 = 0x0006;
    /// File-system watches: subscriptions, clocks, queries (`crate::watch`).
    pub const WATCH: u16 = 0x0007;

    /// A human name for a service id, for logs and `sparkctl`.
    pub fn name(id: u16) -> &'static str {
        match id {
            CONTROL => "control",
            SHADER => "shader",
            ASSET => "asset",
            COMPILE => "compile",
            COLLAB => "collab",
            BUILD => "build",
            WATCH => "watch",
            _ => "unknown",
        }
    }
}

/// Message types reserved on every service.
pub mod msg {
    /// One chunk of a streamed blob (either direction).
    pub const STREAM_CHUNK: u16 = 0x00F0;
    /// The end of a streamed blob: 16 bytes, the XXH3-128 of the whole blob, little-endian.
    pub const STREAM_END: u16 = 0x00F1;
    /// ErrorResponse, on every service.
    pub const ERROR: u16 = 0x00FF;
    /// Message types from here up are server-initiated events, never replies to a request.
    pub const EVENT_MIN: u16 = 0x8000;

    /// True when `msg_type` is a server-initiated event rather than a reply.
    pub fn is_event(msg_type: u16) -> bool {
        msg_type >= EVENT_MIN
    }
}

/// The checksum carried by [`msg::STREAM_END`] and stored with every blob on disk.
pub fn blob_checksum(data: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(data)
}

/// Incremental form of [`blob_checksum`], for streamed blobs.
pub type BlobHasher = xxhash_rust::xxh3::Xxh3;

/// A message with a fixed message type and a payload codec.
pub trait Message: Sized {
    /// The message type in the frame header.
    const TYPE: u16;
    /// Appends the payload (not the header) to `out`.
    fn encode(&self, out: &mut bytes::BytesMut);
    /// Parses a whole payload. Trailing bytes are an error unless the message says otherwise.
    fn decode(payload: &bytes::Bytes) -> Result<Self, ProtoError>;

    /// Encodes the whole frame (header and payload) for `service`.
    fn to_frame(&self, service: u16) -> Result<Frame, ProtoError> {
        let mut out = bytes::BytesMut::new();
        self.encode(&mut out);
        Frame::new(service, Self::TYPE, out.freeze())
    }
}

/// Where the daemon listens when no path is given: `$XDG_RUNTIME_DIR/spark/sparkd.sock`, else
/// `/tmp/spark-<uid>/sparkd.sock`. Pure: the caller passes the environment value and the uid.
pub fn default_socket_path(
    xdg_runtime_dir: Option<&std::ffi::OsStr>,
    uid: u32,
) -> std::path::PathBuf {
    match xdg_runtime_dir {
        Some(d) if !d.is_empty() => std::path::Path::new(d).join("spark").join("sparkd.sock"),
        _ => std::path::PathBuf::from(format!("/tmp/spark-{uid}")).join("sparkd.sock"),
    }
}
