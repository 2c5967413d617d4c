//! On-disk formats: blob files (v1, unchanged in v2), index-log records (v2: v1's kinds plus the pack kinds)
//! and pack files ([`pack`], v2). Pure byte codecs (fuzzed directly); the layout is specified in
//! `docs/storage.md`.

pub mod pack;
mod view;

pub use view::RecordRef;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// First 8 bytes of every blob file; the trailing `1` is the format version.
pub const BLOB_MAGIC: &[u8; 8] = b"SPKBLOB1";
/// Blob header: magic, `u32` key length, `u64` body length.
pub const BLOB_HEADER_LEN: usize = 8 + 4 + 8;
/// Blob trailer: XXH3-128 over header, key and body.
pub const BLOB_TRAILER_LEN: usize = 16;

/// First 8 bytes of the index log; the trailing `2` is the format version. A v2 log may hold every record
/// kind; a v1 log (magic [`INDEX_MAGIC_V1`]) is read as is and rewritten as v2 before anything is appended,
/// so a v1 sparkd refuses a v2 log ("written by a newer sparkd") instead of taking pack records for damage.
pub const INDEX_MAGIC: &[u8; 8] = b"SPKIDX02";
/// The magic of a v1 index log, which v2 reads.
pub const INDEX_MAGIC_V1: &[u8; 8] = b"SPKIDX01";
/// Prefix of index files written by any version, to tell "newer format" from "not an index".
pub const INDEX_MAGIC_PREFIX: &[u8; 6] = b"SPKIDX";

/// Largest key a record may carry (asset paths are at most 4 KiB plus a platform byte).
pub const MAX_KEY_LEN: usize = 64 * 1024;

/// Largest body a blob header or index record may describe: far beyond any disk, and small enough that file
/// lengths and byte totals computed from it cannot overflow.
pub const MAX_BODY_LEN: u64 = 1 << 48;

/// Blob file ids start at 1: 0 means "no file" and is never written. (Id arithmetic saturates, so even a
/// crafted id near `u64::MAX` cannot overflow it.)
fn valid_file_id(id: u64) -> bool {
    id != 0
}

/// Errors parsing on-disk bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("bad magic")]
    BadMagic,
    #[error("record truncated")]
    Truncated,
    #[error("checksum mismatch")]
    Checksum,
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// A parsed blob header. Layout: `[0, 8)` magic, `[8, 12)` key length, `[12, 20)` body length; then the key,
/// the body, and the 16-byte trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    pub key_len: u32,
    pub body_len: u64,
}

impl BlobHeader {
    pub fn encode(&self) -> [u8; BLOB_HEADER_LEN] {
        let mut b = [0u8; BLOB_HEADER_LEN];
        b[..8].copy_from_slice(BLOB_MAGIC);
        b[8..12].copy_from_slice(&self.key_len.to_le_bytes());
        b[12..20].copy_from_slice(&self.body_len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < BLOB_HEADER_LEN {
            return Err(FormatError::Truncated);
        }
        if &b[..8] != BLOB_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let key_len = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if key_len as usize > MAX_KEY_LEN {
            return Err(FormatError::Invalid("key length"));
        }
        let body_len = u64::from_le_bytes(b[12..20].try_into().expect("8 bytes"));
        if body_len > MAX_BODY_LEN {
            return Err(FormatError::Invalid("body length"));
        }
        Ok(BlobHeader { key_len, body_len })
    }

    /// Size of the whole file this header describes.
    pub fn file_len(&self) -> u64 {
        file_len(self.key_len as usize, self.body_len)
    }
}

/// Size of a blob file for a key and body length.
pub fn file_len(key_len: usize, body_len: u64) -> u64 {
    // Saturating: a size that large is refused elsewhere, never wrapped into a small one here.
    ((BLOB_HEADER_LEN + key_len + BLOB_TRAILER_LEN) as u64).saturating_add(body_len)
}

/// Starts the checksum of a blob file: header and key.
pub fn blob_hasher(header: &[u8; BLOB_HEADER_LEN], key: &[u8]) -> Xxh3 {
    let mut h = Xxh3::new();
    h.update(header);
    h.update(key);
    h
}

/// The framing of a blob file around its key and body: the header before them and the checksum trailer
/// after. The one encoder of blob files: whole-blob writes, tests and tools all go through it (a streamed
/// write produces the same bytes from [`BlobHeader::encode`] and [`blob_hasher`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobFrame {
    pub header: [u8; BLOB_HEADER_LEN],
    /// XXH3-128 over header, key and body, little-endian.
    pub trailer: [u8; BLOB_TRAILER_LEN],
}

impl BlobFrame {
    pub fn new(key: &[u8], body: &[u8]) -> Self {
        let header = BlobHeader {
            key_len: key.len() as u32,
            body_len: body.len() as u64,
        }
        .encode();
        let mut h = blob_hasher(&header, key);
        h.update(body);
        BlobFrame {
            header,
            trailer: h.digest128().to_le_bytes(),
        }
    }

    /// The file checksum, which the index records.
    pub fn checksum(&self) -> u128 {
        u128::from_le_bytes(self.trailer)
    }

    /// The file's bytes in order: header, key, body, trailer (for writing piecewise: a large body is not
    /// copied).
    pub fn parts<'a>(&'a self, key: &'a [u8], body: &'a [u8]) -> [&'a [u8]; 4] {
        [&self.header, key, body, &self.trailer]
    }
}

/// A whole blob file for `key` and `body`, and its checksum: the inverse of [`parse_blob`].
pub fn encode_blob(key: &[u8], body: &[u8]) -> (Vec<u8>, u128) {
    let frame = BlobFrame::new(key, body);
    (frame.parts(key, body).concat(), frame.checksum())
}

/// Parses a whole small blob file held in memory; returns the key and body ranges after verifying the
/// checksum. Used by tests, the fuzzer and recovery.
pub fn parse_blob(file: &[u8]) -> Result<(BlobHeader, &[u8], &[u8]), FormatError> {
    let h = BlobHeader::decode(file)?;
    if file.len() as u64 != h.file_len() {
        return Err(FormatError::Truncated);
    }
    let k_end = BLOB_HEADER_LEN + h.key_len as usize;
    let b_end = file.len() - BLOB_TRAILER_LEN;
    let stored = u128::from_le_bytes(file[b_end..].try_into().expect("16 bytes"));
    let mut hasher = Xxh3::new();
    hasher.update(&file[..b_end]);
    if hasher.digest128() != stored {
        return Err(FormatError::Checksum);
    }
    Ok((h, &file[BLOB_HEADER_LEN..k_end], &file[k_end..b_end]))
}

/// One index-log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `key` now lives in blob file `file_id`, `body_len` bytes, with this file checksum.
    Put {
        key: Vec<u8>,
        file_id: u64,
        body_len: u64,
        checksum: u128,
    },
    /// `key` was removed, if it still maps to `file_id`.
    Del { key: Vec<u8>, file_id: u64 },
    /// Blob file ids below `up_to` may be in use: a later run starts above it, so it can tell files of
    /// earlier runs (the sweep's business) from its own.
    Reserve { up_to: u64 },
    /// v2: `key` now lives in the record at `offset` of pack `pack`, `body_len` bytes, with this record
    /// checksum.
    PutPack {
        key: Vec<u8>,
        pack: u64,
        offset: u32,
        body_len: u64,
        checksum: u128,
    },
    /// v2: `key` was removed, if it still maps to the record at `offset` of pack `pack`, which is `len`
    /// bytes long (so replay knows where the record ends).
    DelPack {
        key: Vec<u8>,
        pack: u64,
        offset: u32,
        len: u32,
    },
    /// v2: every record of pack `pack` before byte `end` is accounted for by the log (indexed, removed or
    /// dead); recovery scans a pack for unindexed records only past the highest such end. Written when
    /// the log is rewritten, which drops the records that used to say so.
    PackEnd { pack: u64, end: u32 },
}

const KIND_PUT: u8 = 1;
const KIND_DEL: u8 = 2;
/// "Clear: every earlier record is void". Format v1 defines it but no sparkd ever wrote it (the store
/// rewrites the log instead), so it has no [`Record`] variant; it still decodes, as a record with nothing to
/// apply, so a log holding one is not mistaken for damage.
const KIND_CLEAR: u8 = 3;
const KIND_RESERVE: u8 = 4;
const KIND_PUT_PACK: u8 = 5;
const KIND_DEL_PACK: u8 = 6;
const KIND_PACK_END: u8 = 7;

/// Record framing: `u32` length of what follows the checksum, `u64` XXH3-64 of it, then the body.
pub const RECORD_PREFIX: usize = 4 + 8;
/// Longest encoded record: its prefix and a body of at most a key's length plus 64 bytes (decoding reads no
/// further, so a reader may hand it a window of this many bytes instead of the whole log).
pub const MAX_RECORD_LEN: usize = RECORD_PREFIX + MAX_KEY_LEN + 64;

/// Body of a Put record without its key: kind, file id, body length, checksum, key length.
const PUT_FIXED: usize = 1 + 8 + 8 + 16 + 4;
/// Body of a Del record without its key: kind, file id, key length.
const DEL_FIXED: usize = 1 + 8 + 4;
const RESERVE_LEN: usize = 1 + 8;
/// Body of a PutPack record without its key: kind, pack, offset, body length, checksum, key length.
const PUT_PACK_FIXED: usize = 1 + 8 + 4 + 8 + 16 + 4;
/// Body of a DelPack record without its key: kind, pack, offset, record length, key length.
const DEL_PACK_FIXED: usize = 1 + 8 + 4 + 4 + 4;
const PACK_END_LEN: usize = 1 + 8 + 4;

/// Encoded size of a Put record for a key of `key_len` bytes (the index counts its live records by it).
pub fn put_record_len(key_len: usize) -> u64 {
    (RECORD_PREFIX + PUT_FIXED + key_len) as u64
}

/// Encoded size of a PutPack record for a key of `key_len` bytes.
pub fn put_pack_record_len(key_len: usize) -> u64 {
    (RECORD_PREFIX + PUT_PACK_FIXED + key_len) as u64
}

impl Record {
    /// Size of this record encoded.
    pub fn encoded_len(&self) -> usize {
        RECORD_PREFIX
            + match self {
                Record::Put { key, .. } => PUT_FIXED + key.len(),
                Record::Del { key, .. } => DEL_FIXED + key.len(),
                Record::Reserve { .. } => RESERVE_LEN,
                Record::PutPack { key, .. } => PUT_PACK_FIXED + key.len(),
                Record::DelPack { key, .. } => DEL_PACK_FIXED + key.len(),
                Record::PackEnd { .. } => PACK_END_LEN,
            }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(self.encoded_len());
        out.extend_from_slice(&[0u8; RECORD_PREFIX]);
        match self {
            Record::Put {
                key,
                file_id,
                body_len,
                checksum,
            } => {
                out.push(KIND_PUT);
                out.extend_from_slice(&file_id.to_le_bytes());
                out.extend_from_slice(&body_len.to_le_bytes());
                out.extend_from_slice(&checksum.to_le_bytes());
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
            Record::Del { key, file_id } => {
                out.push(KIND_DEL);
                out.extend_from_slice(&file_id.to_le_bytes());
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
            Record::Reserve { up_to } => {
                out.push(KIND_RESERVE);
                out.extend_from_slice(&up_to.to_le_bytes());
            }
            Record::PutPack {
                key,
                pack,
                offset,
                body_len,
                checksum,
            } => {
                out.push(KIND_PUT_PACK);
                out.extend_from_slice(&pack.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&body_len.to_le_bytes());
                out.extend_from_slice(&checksum.to_le_bytes());
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
            Record::DelPack {
                key,
                pack,
                offset,
                len,
            } => {
                out.push(KIND_DEL_PACK);
                out.extend_from_slice(&pack.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
            Record::PackEnd { pack, end } => {
                out.push(KIND_PACK_END);
                out.extend_from_slice(&pack.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
            }
        }
        debug_assert_eq!(out.len() - start, self.encoded_len());
        let body_len = (out.len() - start - RECORD_PREFIX) as u32;
        let sum = xxh3_64(&out[start + RECORD_PREFIX..]);
        out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
        out[start + 4..start + 12].copy_from_slice(&sum.to_le_bytes());
    }

    /// Parses the record at the start of `b`; returns it and its encoded length. `None`: a valid record
    /// with nothing to apply (a v1 Clear, which no sparkd writes; replay skips it).
    pub fn decode(b: &[u8]) -> Result<(Option<Record>, usize), FormatError> {
        let (rec, n) = RecordRef::decode(b)?;
        Ok((rec.map(RecordRef::to_owned), n))
    }
}

/// Blob file name for an id: 16 lowercase hex digits and `.blob`.
pub fn blob_file_name(id: u64) -> String {
    format!("{id:016x}.blob")
}

/// Parses a blob file name strictly: exactly 16 lowercase hex digits then `.blob`; anything else is `None`.
pub fn parse_blob_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".blob")?;
    if hex.len() != 16
        || !hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    u64::from_str_radix(hex, 16)
        .ok()
        .filter(|id| valid_file_id(*id))
}

/// The fan-out directory of a blob id: two hex digits.
pub fn blob_dir_name(id: u64) -> String {
    format!("{:02x}", id & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_detect_damage() {
        let recs = vec![
            Record::Put {
                key: b"k".to_vec(),
                file_id: 7,
                body_len: 9,
                checksum: 1 << 100,
            },
            Record::Del {
                key: vec![0; 300],
                file_id: 7,
            },
            Record::Reserve { up_to: 1 << 40 },
            Record::PutPack {
                key: b"pk".to_vec(),
                pack: 9,
                offset: 4096,
                body_len: 5000,
                checksum: 3 << 90,
            },
            Record::DelPack {
                key: b"pk".to_vec(),
                pack: 9,
                offset: 4096,
                len: pack::record_len(2, 5000) as u32,
            },
            Record::PackEnd {
                pack: 9,
                end: 1 << 26,
            },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            let before = buf.len();
            r.encode(&mut buf);
            assert_eq!(buf.len() - before, r.encoded_len());
        }
        assert_eq!(recs[0].encoded_len() as u64, put_record_len(1));
        assert_eq!(recs[3].encoded_len() as u64, put_pack_record_len(2));
        let mut off = 0;
        for r in &recs {
            let (got, n) = Record::decode(&buf[off..]).unwrap();
            assert_eq!(got.as_ref(), Some(r));
            off += n;
        }
        assert_eq!(off, buf.len());
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            // Any single flipped byte either breaks the first record or a later one; never a wrong record.
            if let Ok((r, _)) = Record::decode(&b) {
                assert_eq!(r.as_ref(), Some(&recs[0]));
            }
        }
        assert_eq!(Record::decode(&buf[..5]), Err(FormatError::Truncated));
    }

    #[test]
    fn a_v1_clear_record_decodes_to_nothing() {
        // As an old log would hold it: length 1, XXH3-64 of the body, the kind byte.
        let mut b = vec![1, 0, 0, 0];
        b.extend_from_slice(&xxh3_64(&[KIND_CLEAR]).to_le_bytes());
        b.push(KIND_CLEAR);
        assert_eq!(Record::decode(&b), Ok((None, b.len())));
    }

    #[test]
    fn names_are_parsed_strictly() {
        assert_eq!(parse_blob_file_name(&blob_file_name(0xabc)), Some(0xabc));
        for bad in [
            "00000000000000ab.tmp",
            "0000000000000ab.blob",
            "00000000000000AB.blob",
            "00000000000000a+.blob",
            "000000000000000g.blob",
            "x00000000000000a.blob",
            ".blob",
            "00000000000000ab.blob.tmp",
        ] {
            assert_eq!(parse_blob_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn blob_parse_checks_everything() {
        let key = b"key";
        let body = b"body bytes";
        let h = BlobHeader {
            key_len: 3,
            body_len: body.len() as u64,
        };
        let (file, _) = encode_blob(key, body);
        let (ph, k, b) = parse_blob(&file).unwrap();
        assert_eq!((ph, k, b), (h, &key[..], &body[..]));
        for i in 0..file.len() {
            let mut f = file.clone();
            f[i] ^= 1;
            assert!(parse_blob(&f).is_err(), "flip at {i} detected");
        }
        assert!(parse_blob(&file[..file.len() - 1]).is_err());
    }
}
