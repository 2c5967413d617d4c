//! The operator's Control messages (service `0x0001`, types `0x0010..`): verify a namespace's checksums and
//! trim a namespace to a size, for `sparkctl verify` and `sparkctl trim`. `sparkctl top` needs nothing new: it
//! polls [`crate::control::Namespaces`] and [`crate::control::Stats`].
//!
//! A verify can take minutes on a large cache, so while it runs the daemon pushes [`VerifyProgress`] events
//! (at most about ten a second) on the asking connection before the final [`VerifyResponse`].

use crate::messages::define_messages;

pub const VERIFY: u16 = 0x0010;
pub const VERIFY_RESPONSE: u16 = 0x0011;
pub const TRIM: u16 = 0x0012;
pub const TRIM_RESPONSE: u16 = 0x0013;
/// Event: how far a running verify has got.
pub const VERIFY_PROGRESS: u16 = 0x8010;

define_messages! {
    service: "control";
    hand_written: [];

    /// Verify: `str16` namespace. Reads every entry of the namespace, checks every checksum, drops the
    /// corrupt entries. An unknown namespace is an `InvalidKey` error naming the namespaces.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Verify = VERIFY, exact {
        namespace: String,
    }

    /// The verify's result: entries checked, body bytes read, corrupt entries dropped, and memory-only entries
    /// (nothing on disk to check). Decoders ignore trailing bytes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct VerifyResponse = VERIFY_RESPONSE, lenient {
        checked: u64,
        bytes: u64,
        corrupt: u64,
        memory_only: u64,
    }

    /// VerifyProgress (event `0x8010` on Control): `str16` namespace, entries `checked` of `total`, `corrupt`
    /// so far. Decoders ignore trailing bytes.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct VerifyProgress = VERIFY_PROGRESS, lenient {
        namespace: String,
        checked: u64,
        total: u64,
        corrupt: u64,
    }

    /// Trim: `str16` namespace, `u64` target bytes. Evicts least recently used entries until the namespace
    /// holds at most that many bytes (on disk; in memory for a memory-only daemon).
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Trim = TRIM, exact {
        namespace: String,
        target_bytes: u64,
    }

    /// What the trim did: entries evicted, bytes before and after. Decoders ignore trailing bytes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct TrimResponse = TRIM_RESPONSE, lenient {
        evicted: u64,
        bytes_before: u64,
        bytes_after: u64,
    }
}
