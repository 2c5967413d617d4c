//! What a blob looks like on an upstream: a small header carrying the body's checksum, so a blob read back
//! from a store we do not control is verified before it is served or kept (never trust a remote byte).
//!
//! Format version 1 (documented in docs/storage.md, "Team tier"): `SPKU` magic, `u8` version = 1, `u8` flags
//! = 0, `u16` reserved = 0, `u64` body length (LE), `u128` XXH3-128 of the body (LE), then the body. The
//! version is also part of every upstream key (see [`super::upstream_key`]), so two releases with different
//! envelope versions never read each other's blobs.

use bytes::{BufMut, Bytes, BytesMut};
use xxhash_rust::xxh3::xxh3_128;

pub const MAGIC: &[u8; 4] = b"SPKU";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 8 + 16;

/// Why a blob from the upstream was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a SparkDaemon upstream blob (bad magic or shorter than its header)")]
    NotOurs,
    #[error("upstream blob format version {0}; this sparkd reads version {VERSION}")]
    Version(u8),
    #[error("upstream blob length {got} does not match its header's {want}")]
    Length { got: u64, want: u64 },
    #[error("upstream blob failed its checksum")]
    Checksum,
}

pub fn seal(body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
    out.put_u8(0);
    out.put_u16_le(0);
    out.put_u64_le(body.len() as u64);
    out.put_u128_le(xxh3_128(body));
    out.put_slice(body);
    out.freeze()
}

/// The verified body of an upstream blob.
pub fn open(blob: Bytes) -> Result<Bytes, EnvelopeError> {
    if blob.len() < HEADER_LEN || &blob[..4] != MAGIC {
        return Err(EnvelopeError::NotOurs);
    }
    if blob[4] != VERSION {
        return Err(EnvelopeError::Version(blob[4]));
    }
    let want = u64::from_le_bytes(blob[8..16].try_into().expect("8 bytes"));
    let sum = u128::from_le_bytes(blob[16..32].try_into().expect("16 bytes"));
    let body = blob.slice(HEADER_LEN..);
    if body.len() as u64 != want {
        return Err(EnvelopeError::Length {
            got: body.len() as u64,
            want,
        });
    }
    if xxh3_128(&body) != sum {
        return Err(EnvelopeError::Checksum);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_blob_opens_and_any_damage_is_refused() {
        let sealed = seal(b"compiled shader bytes");
        assert_eq!(open(sealed.clone()).unwrap(), &b"compiled shader bytes"[..]);
        for i in 0..sealed.len() {
            let mut bad = sealed.to_vec();
            bad[i] ^= 0x01;
            // Reserved/flags bytes are not checked; every other byte is.
            if (5..8).contains(&i) {
                continue;
            }
            assert!(open(Bytes::from(bad)).is_err(), "flip at byte {i} accepted");
        }
        assert_eq!(
            open(sealed.slice(..sealed.len() - 1)),
            Err(EnvelopeError::Length { got: 20, want: 21 })
        );
        assert_eq!(
            open(Bytes::from_static(b"SPK")),
            Err(EnvelopeError::NotOurs)
        );
        assert!(open(seal(b"")).unwrap().is_empty());
    }
}
