//! Pack files (format v2): many small blobs appended to one file, `packs/<id>.pack`.
//!
//! ```text
//! pack   = "SPKPACK2" | u64 pack id | record*
//! record = magic | u32 key length K | u32 body length N | key[K] | body[N] | u128 XXH3-128 over the rest
//! magic  = "SPR2" (a put) | "SPC2" (a copy made by compaction)
//! ```
//!
//! A copy is never adopted by recovery on its own: it only holds a value the index already named elsewhere,
//! and a copy whose index record never made it may be older than the key's current value.
//!
//! A record is self-describing: its magic, both lengths, the full key, the body and a checksum over all of
//! them, so a pack can be read without its index and a torn tail is detected (recovery adopts whole records
//! whose checksums verify and cuts the pack at the first one that does not). Little-endian throughout.

use xxhash_rust::xxh3::Xxh3;

use super::{FormatError, MAX_KEY_LEN};

/// First 8 bytes of every pack file; the trailing `2` is the format version.
pub const PACK_MAGIC: &[u8; 8] = b"SPKPACK2";
/// Pack header: magic and the pack id (which is also in its file name).
pub const PACK_HEADER_LEN: usize = 8 + 8;
/// First 4 bytes of a record written by a put.
pub const RECORD_MAGIC: &[u8; 4] = b"SPR2";
/// First 4 bytes of a record that compaction copied from another pack.
pub const COPY_MAGIC: &[u8; 4] = b"SPC2";
/// Record header: magic, `u32` key length, `u32` body length.
pub const RECORD_HEADER_LEN: usize = 4 + 4 + 4;
/// Record trailer: XXH3-128 over header, key and body.
pub const RECORD_TRAILER_LEN: usize = 16;
/// Largest body a record may hold: packs are for small blobs (the store's threshold is far below it).
pub const MAX_PACKED_BODY: u64 = 16 << 20;

/// The header of pack `id`.
pub fn encode_pack_header(id: u64) -> [u8; PACK_HEADER_LEN] {
    let mut b = [0u8; PACK_HEADER_LEN];
    b[..8].copy_from_slice(PACK_MAGIC);
    b[8..].copy_from_slice(&id.to_le_bytes());
    b
}

/// The pack id in a pack header.
pub fn decode_pack_header(b: &[u8]) -> Result<u64, FormatError> {
    if b.len() < PACK_HEADER_LEN {
        return Err(FormatError::Truncated);
    }
    if &b[..8] != PACK_MAGIC {
        return Err(FormatError::BadMagic);
    }
    Ok(u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")))
}

/// Bytes a record of this key and body length occupies in a pack.
pub fn record_len(key_len: usize, body_len: u64) -> u64 {
    ((RECORD_HEADER_LEN + key_len + RECORD_TRAILER_LEN) as u64).saturating_add(body_len)
}

/// Appends the record of a put of `key` and `body` to `out`; returns its checksum (which the index records).
pub fn encode_record(key: &[u8], body: &[u8], out: &mut Vec<u8>) -> u128 {
    encode_record_as(key, body, false, out)
}

/// As [`encode_record`]; `copy`: a record compaction copied (magic [`COPY_MAGIC`]).
pub fn encode_record_as(key: &[u8], body: &[u8], copy: bool, out: &mut Vec<u8>) -> u128 {
    let start = out.len();
    out.extend_from_slice(if copy { COPY_MAGIC } else { RECORD_MAGIC });
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(body);
    let mut h = Xxh3::new();
    h.update(&out[start..]);
    let sum = h.digest128();
    out.extend_from_slice(&sum.to_le_bytes());
    sum
}

/// A record parsed from pack bytes, its checksum verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackRecord<'a> {
    pub key: &'a [u8],
    pub body: &'a [u8],
    pub checksum: u128,
    /// Written by compaction (a copy of a record in another pack), not by a put.
    pub copy: bool,
}

/// Parses the record at the start of `b` (more bytes may follow); returns it and its length.
pub fn parse_record(b: &[u8]) -> Result<(PackRecord<'_>, usize), FormatError> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(FormatError::Truncated);
    }
    let copy = match &b[..4] {
        m if m == RECORD_MAGIC => false,
        m if m == COPY_MAGIC => true,
        _ => return Err(FormatError::BadMagic),
    };
    let key_len = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")) as usize;
    let body_len = u64::from(u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")));
    if key_len > MAX_KEY_LEN {
        return Err(FormatError::Invalid("key length"));
    }
    if body_len > MAX_PACKED_BODY {
        return Err(FormatError::Invalid("body length"));
    }
    let total = record_len(key_len, body_len) as usize;
    if b.len() < total {
        return Err(FormatError::Truncated);
    }
    let sum_at = total - RECORD_TRAILER_LEN;
    let stored = u128::from_le_bytes(b[sum_at..total].try_into().expect("16 bytes"));
    let mut h = Xxh3::new();
    h.update(&b[..sum_at]);
    if h.digest128() != stored {
        return Err(FormatError::Checksum);
    }
    let k_end = RECORD_HEADER_LEN + key_len;
    Ok((
        PackRecord {
            key: &b[RECORD_HEADER_LEN..k_end],
            body: &b[k_end..sum_at],
            checksum: stored,
            copy,
        },
        total,
    ))
}

/// Reads whole records from `data[from..]` in order, stopping at the first that does not parse (a torn
/// tail, damage, or the end). Returns each record with its offset in `data`, and where the last whole
/// record ends: recovery cuts the pack there.
pub fn scan_records(data: &[u8], from: usize) -> (Vec<(usize, PackRecord<'_>)>, usize) {
    let mut out = Vec::new();
    let mut off = from;
    while off < data.len() {
        match parse_record(&data[off..]) {
            Ok((rec, n)) => {
                out.push((off, rec));
                off += n;
            }
            Err(_) => break,
        }
    }
    (out, off.min(data.len()))
}

/// Every whole record in `data[from..]`, skipping damage: after a record that does not parse, the scan
/// goes on at the next offset where one does (recovery from a damaged index, which cannot tell where the
/// records it lost are). Returns each record with its offset in `data`.
pub fn scan_records_resync(data: &[u8], from: usize) -> Vec<(usize, PackRecord<'_>)> {
    let mut out = Vec::new();
    let mut off = from;
    while off < data.len() {
        match parse_record(&data[off..]) {
            Ok((rec, n)) => {
                out.push((off, rec));
                off += n;
            }
            Err(_) => off += 1,
        }
    }
    out
}

/// Pack file name for an id: 16 lowercase hex digits and `.pack`.
pub fn pack_file_name(id: u64) -> String {
    format!("{id:016x}.pack")
}

/// Parses a pack file name strictly: exactly 16 lowercase hex digits then `.pack`, and not id 0.
pub fn parse_pack_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".pack")?;
    if hex.len() != 16
        || !hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().filter(|id| *id != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_every_flip_is_caught() {
        let mut buf = encode_pack_header(5).to_vec();
        let s1 = encode_record(b"alpha", b"first body", &mut buf);
        let second_at = buf.len();
        let s2 = encode_record_as(b"beta", &[7u8; 300], true, &mut buf);
        assert_eq!(decode_pack_header(&buf), Ok(5));
        let (recs, end) = scan_records(&buf, PACK_HEADER_LEN);
        assert_eq!(end, buf.len());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].1.key, b"alpha");
        assert_eq!(recs[0].1.checksum, s1);
        assert_eq!((recs[1].0, recs[1].1.checksum), (second_at, s2));
        assert_eq!(recs[1].1.body, &[7u8; 300][..]);
        assert!(!recs[0].1.copy && recs[1].1.copy);
        assert_eq!(
            (second_at - PACK_HEADER_LEN) as u64,
            record_len(5, b"first body".len() as u64)
        );
        for i in PACK_HEADER_LEN..second_at {
            let mut b = buf.clone();
            b[i] ^= 0x20;
            let (recs, end) = scan_records(&b, PACK_HEADER_LEN);
            assert!(recs.is_empty(), "flip at {i} adopted");
            assert_eq!(end, PACK_HEADER_LEN);
        }
        // A torn tail: the first record survives, the cut one is not adopted.
        let (recs, end) = scan_records(&buf[..buf.len() - 1], PACK_HEADER_LEN);
        assert_eq!((recs.len(), end), (1, second_at));
    }

    #[test]
    fn pack_names_are_parsed_strictly() {
        assert_eq!(parse_pack_file_name(&pack_file_name(0x1f)), Some(0x1f));
        for bad in [
            "000000000000001F.pack",
            "00000000000001f.pack",
            "0000000000000000.pack",
            "000000000000001f.pack.tmp",
        ] {
            assert_eq!(parse_pack_file_name(bad), None, "{bad}");
        }
    }
}
