//! Error codes on the wire and decoding errors.

use crate::messages::define_messages;

/// Why a payload or frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("frame payload of {len} bytes exceeds the 16 MiB frame limit")]
    FrameTooLarge { len: u64 },
    #[error("payload ended before the message did")]
    Truncated,
    #[error("payload has bytes after the end of the message")]
    TrailingBytes,
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    #[error("invalid field value: {0}")]
    InvalidValue(&'static str),
}

/// Machine-readable error codes carried by ErrorResponse. Stable: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// A code this build does not know (a newer daemon); the message still explains it.
    Unknown = 0,
    UnknownService = 1,
    UnknownMessage = 2,
    /// The payload did not decode.
    Malformed = 3,
    /// Hello asked for a protocol version the daemon cannot speak.
    UnsupportedVersion = 4,
    /// A frame or blob is over a configured limit.
    TooLarge = 5,
    /// The disk is full; nothing was stored.
    NoSpace = 6,
    /// Any other storage I/O failure.
    Io = 7,
    /// The daemon is shutting down and accepts no new work.
    ShuttingDown = 8,
    /// A stored blob failed its checksum; it was dropped and nothing was served.
    Corrupt = 9,
    /// A key is not acceptable (e.g. an empty or over-long asset path).
    InvalidKey = 10,
    /// A streamed blob did not match its announced length or checksum.
    StreamMismatch = 11,
    /// The peer is not allowed (e.g. another user).
    PermissionDenied = 12,
    Internal = 13,
}

impl ErrorCode {
    pub fn from_u16(v: u16) -> ErrorCode {
        use ErrorCode::*;
        match v {
            1 => UnknownService,
            2 => UnknownMessage,
            3 => Malformed,
            4 => UnsupportedVersion,
            5 => TooLarge,
            6 => NoSpace,
            7 => Io,
            8 => ShuttingDown,
            9 => Corrupt,
            10 => InvalidKey,
            11 => StreamMismatch,
            12 => PermissionDenied,
            13 => Internal,
            _ => Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            Unknown => "unknown",
            UnknownService => "unknown-service",
            UnknownMessage => "unknown-message",
            Malformed => "malformed",
            UnsupportedVersion => "unsupported-version",
            TooLarge => "too-large",
            NoSpace => "no-space",
            Io => "io",
            ShuttingDown => "shutting-down",
            Corrupt => "corrupt",
            InvalidKey => "invalid-key",
            StreamMismatch => "stream-mismatch",
            PermissionDenied => "permission-denied",
            Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

define_messages! {
    service: "any";
    hand_written: [];

    /// ErrorResponse (`0x00FF` on every service): `u16` code, `str16` message.
    ///
    /// The raw code is kept so a client can report codes newer than itself.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ErrorResponse = crate::msg::ERROR, exact {
        code: u16,
        message: String,
    }
}

impl ErrorResponse {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorResponse {
            code: code as u16,
            message: message.into(),
        }
    }
    pub fn kind(&self) -> ErrorCode {
        ErrorCode::from_u16(self.code)
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.kind(), self.code, self.message)
    }
}
