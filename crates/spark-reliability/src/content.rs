//! Self-describing test blobs: the content is derived from (key id, version, length), and the first bytes say
//! which, so any blob a daemon returns can be checked on its own, without remembering what was sent.

/// Bytes at the front of every test blob: magic, key id, version, total length.
pub const BLOB_HEAD: usize = 4 + 8 + 8 + 8;
const MAGIC: &[u8; 4] = b"SPKT";

/// The blob for `key` at `version`, `len` bytes long (at least [`BLOB_HEAD`]).
pub fn make_blob(key: u64, version: u64, len: usize) -> Vec<u8> {
    let len = len.max(BLOB_HEAD);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    fill(&mut out, key, version, len);
    out
}

/// Appends the deterministic body after the head (a cheap xorshift stream seeded by key and version).
fn fill(out: &mut Vec<u8>, key: u64, version: u64, len: usize) {
    let mut x =
        key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version.wrapping_add(0xD1B5_4A32_D192_ED03) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (len - out.len()).min(8);
        out.extend_from_slice(&x.to_le_bytes()[..n]);
    }
}

/// What a blob claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobId {
    pub key: u64,
    pub version: u64,
    pub len: u64,
}

/// Checks that `data` is exactly a blob made by [`make_blob`] and says which; `Err` explains the damage.
pub fn verify_blob(data: &[u8]) -> Result<BlobId, String> {
    if data.len() < BLOB_HEAD || &data[..4] != MAGIC {
        return Err(format!("{} bytes without a test-blob head", data.len()));
    }
    let u = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().expect("8 bytes"));
    let id = BlobId {
        key: u(4),
        version: u(12),
        len: u(20),
    };
    if id.len != data.len() as u64 {
        return Err(format!("head says {} bytes, got {}", id.len, data.len()));
    }
    let want = make_blob(id.key, id.version, data.len());
    if want != data {
        let at = want.iter().zip(data).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!(
            "blob {id:?} differs from its expected contents at byte {at}"
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_verify_and_damage_is_caught() {
        for len in [0, BLOB_HEAD, 100, 4097] {
            let b = make_blob(7, 3, len);
            assert_eq!(
                verify_blob(&b),
                Ok(BlobId {
                    key: 7,
                    version: 3,
                    len: b.len() as u64
                })
            );
            let mut bad = b.clone();
            let i = bad.len() - 1;
            bad[i] ^= 1;
            assert!(verify_blob(&bad).is_err());
            assert!(verify_blob(&b[..b.len() - 1]).is_err());
        }
        assert_ne!(make_blob(1, 1, 64), make_blob(1, 2, 64));
    }
}
