//! The fuzz properties. Every function accepts any bytes; it panics only on a real defect.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use spark_proto::cache::{self, AssetKey, ShaderKey};
use spark_proto::control;
use spark_proto::{
    ErrorResponse, Frame, FrameHeader, HEADER_LEN, MAX_PAYLOAD, Message, ProtoError,
};
use spark_store::format::{self, BLOB_HEADER_LEN, BlobHeader, Record};
use spark_store::{Durability, Store, StoreConfig};

/// Frame decoding: the header codec, whole-buffer decoding and incremental decoding of a byte stream that
/// arrives in pieces. Every frame taken off the stream must re-encode to exactly the bytes it came from, and
/// the only error is an oversize header.
pub fn check_frames(data: &[u8]) {
    if data.len() >= HEADER_LEN {
        let hb: [u8; HEADER_LEN] = data[..HEADER_LEN].try_into().expect("8 bytes");
        match FrameHeader::decode(&hb) {
            Ok(h) => {
                assert!(h.len as usize <= MAX_PAYLOAD);
                assert_eq!(h.encode(), hb, "header re-encodes to its bytes");
            }
            Err(ProtoError::FrameTooLarge { len }) => assert!(len as usize > MAX_PAYLOAD),
            Err(e) => panic!("unexpected header error {e:?}"),
        }
    }
    // The piece sizes come from the data itself so the fuzzer controls where reads split frames.
    let step = data.first().map(|b| (*b as usize % 13) + 1).unwrap_or(1);
    let mut buf = BytesMut::new();
    let mut rebuilt = Vec::with_capacity(data.len());
    let mut fed = 0;
    'feed: while fed < data.len() {
        let n = step.min(data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        loop {
            match Frame::decode_from(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.payload.len() <= MAX_PAYLOAD);
                    rebuilt.extend_from_slice(&f.to_bytes());
                }
                Ok(None) => break,
                Err(ProtoError::FrameTooLarge { len }) => {
                    assert!(len as usize > MAX_PAYLOAD);
                    assert!(buf.len() >= HEADER_LEN, "an error needs a whole header");
                    break 'feed;
                }
                Err(e) => panic!("unexpected frame error {e:?}"),
            }
        }
    }
    assert_eq!(
        &rebuilt[..],
        &data[..rebuilt.len()],
        "frames re-encode to the stream they came from"
    );
    assert!(buf.len() <= data.len() - rebuilt.len());
    match Frame::decode_exact(data) {
        Ok(f) => assert_eq!(&f.to_bytes()[..], data),
        Err(
            ProtoError::FrameTooLarge { .. } | ProtoError::Truncated | ProtoError::TrailingBytes,
        ) => {}
        Err(e) => panic!("unexpected decode_exact error {e:?}"),
    }
}

/// How strictly a message's encoding must reproduce the payload it was decoded from.
#[derive(Clone, Copy)]
enum Layout {
    /// Byte for byte.
    Exact,
    /// Same length (booleans are normalised to 0/1).
    SameLen,
    /// The encoding is a prefix (the decoder ignores trailing bytes, for later fields).
    Prefix,
}

fn roundtrip<M: Message + PartialEq + Debug>(p: &Bytes, layout: Layout) {
    let Ok(m) = M::decode(p) else { return };
    let mut out = BytesMut::new();
    m.encode(&mut out);
    match layout {
        Layout::Exact => assert_eq!(&out[..], &p[..], "{m:?} re-encodes to its payload"),
        Layout::SameLen => assert_eq!(out.len(), p.len(), "{m:?} re-encodes to the same length"),
        Layout::Prefix => assert_eq!(
            &out[..],
            &p[..out.len()],
            "{m:?} re-encodes to a prefix of its payload"
        ),
    }
    let again = M::decode(&out.freeze())
        .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"));
    assert_eq!(again, m, "decode(encode(m)) == m");
}

/// Every payload decoder of every service (Control, Shader, Asset, and ErrorResponse on all of them) on the
/// same bytes: none may panic, and whatever decodes must survive an encode/decode round trip.
pub fn check_payloads(data: &[u8]) {
    use Layout::*;
    let p = Bytes::copy_from_slice(data);
    // Control.
    roundtrip::<control::Ping>(&p, Exact);
    roundtrip::<control::Pong>(&p, Exact);
    roundtrip::<control::Version>(&p, Exact);
    roundtrip::<control::Shutdown>(&p, Exact);
    roundtrip::<control::ShutdownAck>(&p, Exact);
    roundtrip::<control::Stats>(&p, Exact);
    roundtrip::<control::VersionResponse>(&p, Exact);
    roundtrip::<control::StatsResponse>(&p, Prefix);
    roundtrip::<control::Hello>(&p, Exact);
    roundtrip::<control::HelloResponse>(&p, Prefix);
    roundtrip::<control::RegisterSponsor>(&p, Exact);
    roundtrip::<control::RegisterSponsorAck>(&p, Exact);
    roundtrip::<ErrorResponse>(&p, Exact);
    // The blob caches, with both key types.
    roundtrip::<cache::Get<ShaderKey>>(&p, Exact);
    roundtrip::<cache::Get<AssetKey>>(&p, Exact);
    roundtrip::<cache::Put<ShaderKey>>(&p, Exact);
    roundtrip::<cache::Put<AssetKey>>(&p, Exact);
    roundtrip::<cache::PutStream<ShaderKey>>(&p, Exact);
    roundtrip::<cache::PutStream<AssetKey>>(&p, Exact);
    roundtrip::<cache::Exists<ShaderKey>>(&p, Exact);
    roundtrip::<cache::Exists<AssetKey>>(&p, Exact);
    roundtrip::<cache::GetResponse>(&p, Exact);
    roundtrip::<cache::PutResponse>(&p, SameLen);
    roundtrip::<cache::StreamChunk>(&p, Exact);
    roundtrip::<cache::StreamEnd>(&p, Exact);
    roundtrip::<cache::ExistsResponse>(&p, SameLen);
    roundtrip::<cache::Clear>(&p, Exact);
    roundtrip::<cache::Stats>(&p, Exact);
    roundtrip::<cache::ClearResponse>(&p, Exact);
    roundtrip::<cache::CacheStats>(&p, Prefix);
    roundtrip::<cache::Invalidate>(&p, Exact);
    roundtrip::<cache::InvalidateResponse>(&p, Exact);
}

/// A v1 "Clear" record (kind 3): format v1 defines it and no sparkd writes it, so the store has no encoder
/// for it. It decodes as a record with nothing to apply; the fuzz inputs keep it so that stays tested.
pub fn legacy_clear_record(out: &mut Vec<u8>) {
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&[3]).to_le_bytes());
    out.push(3);
}

/// Index-log records: decoding from every offset (as replay's resync does). A decoded record re-encodes to
/// exactly the bytes it was read from, and its length stays inside the input.
pub fn check_records(data: &[u8]) {
    for off in 0..data.len() {
        if let Ok((rec, n)) = Record::decode(&data[off..]) {
            assert!(n > format::RECORD_PREFIX && off + n <= data.len());
            let mut out = Vec::new();
            match rec {
                Some(rec) => rec.encode(&mut out),
                None => legacy_clear_record(&mut out),
            }
            assert_eq!(
                &out[..],
                &data[off..off + n],
                "the record at {off} re-encodes to its bytes"
            );
        }
    }
}

/// Blob files: the header codec and the whole-file parser. A parsed file is rebuilt from its parts and must
/// equal the input.
pub fn check_blob(data: &[u8]) {
    if let Ok(h) = BlobHeader::decode(data) {
        assert_eq!(&h.encode()[..], &data[..BLOB_HEADER_LEN]);
        let _ = h.file_len();
    }
    if let Ok((h, key, body)) = format::parse_blob(data) {
        let hb = h.encode();
        let mut hasher = format::blob_hasher(&hb, key);
        hasher.update(body);
        let mut file = hb.to_vec();
        file.extend_from_slice(key);
        file.extend_from_slice(body);
        file.extend_from_slice(&hasher.digest128().to_le_bytes());
        assert_eq!(&file[..], data, "a parsed blob file rebuilds to itself");
    }
}

/// A little reader over the fuzz input; past its end it yields zeros.
struct Input<'a>(&'a [u8]);
impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The body written for (key, file id): derived from both, so a body served under the wrong key or from
/// the wrong file is recognised.
fn body_for(key: u8, id: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 ^ id.wrapping_mul(31) ^ (key as u64) << 3) as u8)
        .collect()
}

/// Opens a store on a cache directory built from the input: an index log of (mostly well-formed) records
/// mixed with garbage, and blob files that are valid, damaged, or missing. The store must open (or refuse
/// with an error), never serve a body that was not validly written for that key, and stay usable.
pub fn check_index_replay(data: &[u8]) {
    // In memory where available: the fuzzer runs this thousands of times a second.
    let tmp = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::tempdir_in(shm),
        _ => tempfile::tempdir(),
    }
    .expect("tempdir");
    let dir = tmp.path();
    let mut inp = Input(data);
    let flags = inp.u8();
    let mut log = Vec::new();
    if flags & 1 == 0 {
        log.extend_from_slice(format::INDEX_MAGIC);
    }
    let mut files: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut steps = 0;
    while !inp.is_empty() && steps < 64 {
        steps += 1;
        let op = inp.u8();
        let key = [op >> 4 & 7];
        match op % 7 {
            0 | 1 => {
                let id = if op & 0x80 != 0 {
                    inp.u64()
                } else {
                    inp.u8() as u64
                };
                let len = (inp.u8() % 64) as usize;
                let body = body_for(key[0], id, len);
                let (file, sum) = format::encode_blob(&key, &body);
                let body_len = if op % 7 == 1 { inp.u64() } else { len as u64 };
                let checksum = if inp.u8() & 1 == 0 { sum } else { sum ^ 1 };
                Record::Put {
                    key: key.to_vec(),
                    file_id: id,
                    body_len,
                    checksum,
                }
                .encode(&mut log);
                if inp.u8() & 3 != 0 {
                    files.push((id, file));
                }
            }
            2 => Record::Del {
                key: key.to_vec(),
                file_id: inp.u8() as u64,
            }
            .encode(&mut log),
            3 => legacy_clear_record(&mut log),
            4 => Record::Reserve { up_to: inp.u64() }.encode(&mut log),
            5 => {
                let n = (inp.u8() % 32) as usize;
                log.extend_from_slice(inp.bytes(n));
            }
            _ => {
                // Damage a blob file already planned: flip one byte, or cut it short.
                if !files.is_empty() {
                    let which = inp.u8() as usize % files.len();
                    let at = inp.u8() as usize;
                    let (_, f) = &mut files[which];
                    if op & 0x80 != 0 {
                        f.truncate(at % (f.len() + 1));
                    } else if !f.is_empty() {
                        let i = at % f.len();
                        f[i] ^= 1 << (op >> 4 & 7);
                    }
                }
            }
        }
    }
    if flags & 2 != 0 && !log.is_empty() {
        // A torn tail.
        let cut = (flags as usize >> 2) % log.len();
        log.truncate(log.len() - cut);
    }
    std::fs::create_dir_all(dir.join("blobs")).expect("mkdir");
    std::fs::create_dir_all(dir.join("tmp")).expect("mkdir");
    std::fs::write(dir.join("index.log"), &log).expect("write index");
    // Per key, the bodies validly on disk after the damage: any of them may be served, nothing else may.
    let mut valid_files: HashMap<u8, HashSet<Vec<u8>>> = HashMap::new();
    // Later files with the same id replace earlier ones, as on disk.
    let files: HashMap<u64, Vec<u8>> = files.into_iter().collect();
    for (id, f) in &files {
        let fan = dir.join("blobs").join(format::blob_dir_name(*id));
        std::fs::create_dir_all(&fan).expect("mkdir");
        std::fs::write(fan.join(format::blob_file_name(*id)), f).expect("write blob");
        if let Ok((_, k, b)) = format::parse_blob(f)
            && k.len() == 1
        {
            valid_files.entry(k[0]).or_default().insert(b.to_vec());
        }
    }
    let mut cfg = StoreConfig::on_disk("fuzz", dir, 1 << 20);
    cfg.disk_budget = if flags & 0x80 != 0 { 512 } else { 0 };
    cfg.durability = Durability::Fast;
    let served_ok = |k: u8, b: &Bytes| {
        assert!(
            valid_files.get(&k).is_some_and(|s| s.contains(&b[..])),
            "key {k}: served {} bytes that were never validly written for it",
            b.len()
        );
    };
    let store = match Store::open(cfg.clone()) {
        Ok((s, _)) => s,
        Err(spark_store::StoreError::NewerFormat { .. }) => return,
        Err(e) => panic!("store failed to open: {e}"),
    };
    for k in 0..8u8 {
        if let Ok(Some(b)) = store.get(&[k]) {
            served_ok(k, &b);
        }
    }
    store.sweep();
    for k in 0..8u8 {
        if let Ok(Some(b)) = store.get(&[k]) {
            served_ok(k, &b);
        }
    }
    // Still usable: a new value is stored, served, and survives a reopen.
    let fresh = Bytes::from_static(b"fresh value after replay");
    assert!(store.put(b"new", fresh.clone()).expect("put after replay"));
    assert_eq!(
        store.get(b"new").expect("get after replay"),
        Some(fresh.clone())
    );
    drop(store);
    let (store, _) = Store::open(cfg).expect("reopen");
    assert_eq!(store.get(b"new").expect("get after reopen"), Some(fresh));
    for k in 0..8u8 {
        if let Ok(Some(b)) = store.get(&[k]) {
            served_ok(k, &b);
        }
    }
}

/// Pack records (format v2): parsing from every offset, and the recovery scan. A parsed record re-encodes
/// to exactly the bytes it was read from; the scan returns back-to-back records and stops inside the input.
pub fn check_pack_records(data: &[u8]) {
    use spark_store::format::pack;
    let _ = pack::decode_pack_header(data);
    for off in 0..data.len() {
        if let Ok((r, n)) = pack::parse_record(&data[off..]) {
            assert!(off + n <= data.len());
            assert_eq!(n as u64, pack::record_len(r.key.len(), r.body.len() as u64));
            let mut out = Vec::new();
            let sum = pack::encode_record(r.key, r.body, &mut out);
            assert_eq!(sum, r.checksum);
            assert_eq!(&out[..], &data[off..off + n], "record at {off} re-encodes");
        }
    }
    let from = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let (recs, end) = pack::scan_records(data, from);
    let mut at = from;
    for (off, r) in &recs {
        assert_eq!(*off, at, "scanned records are back to back");
        at += pack::record_len(r.key.len(), r.body.len() as u64) as usize;
    }
    assert_eq!(end, at.max(from).min(data.len()));
    // The resyncing scan finds at least what the plain one did, in order and without overlaps.
    let all = pack::scan_records_resync(data, from);
    assert!(all.len() >= recs.len());
    let mut next = from;
    for (off, r) in &all {
        assert!(*off >= next, "resynced records do not overlap");
        next = off + pack::record_len(r.key.len(), r.body.len() as u64) as usize;
        assert!(next <= data.len());
    }
}

/// The body written for key `key` in pack record number `n`: derived from both, so a body served under the
/// wrong key is recognised.
fn packed_body(key: u8, n: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 ^ n.wrapping_mul(77) ^ (key as u64) << 2) as u8)
        .collect()
}

/// Pack recovery: a cache directory with one pack built from the input (valid records, flipped bytes,
/// garbage, a torn tail) and an index log of pack records pointing into it (right, wrong, or past its
/// end), plus marks. The store must open, never serve a body that was not validly written for that key,
/// and stay usable across a reopen.
pub fn check_pack_recovery(data: &[u8]) {
    use spark_store::format::pack;
    let tmp = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::tempdir_in(shm),
        _ => tempfile::tempdir(),
    }
    .expect("tempdir");
    let dir = tmp.path();
    let mut inp = Input(data);
    const PACK: u64 = 5;
    let mut packf = pack::encode_pack_header(PACK).to_vec();
    let mut log = format::INDEX_MAGIC.to_vec();
    let mut written: Vec<(usize, Vec<u8>, usize, u128)> = Vec::new();
    let mut steps = 0u64;
    while !inp.is_empty() && steps < 48 {
        steps += 1;
        let op = inp.u8();
        let key = op >> 4 & 7;
        match op % 6 {
            0 | 1 => {
                let len = inp.u8() as usize % 80;
                let body = packed_body(key, steps, len);
                let at = packf.len();
                let sum = pack::encode_record(&[key], &body, &mut packf);
                written.push((at, vec![key], len, sum));
                if op % 6 == 0 {
                    index_put(&mut log, key, at, len as u64, sum);
                }
            }
            2 => {
                // An index record that may not match what is there.
                if let Some((at, k, len, sum)) =
                    written.get(inp.u8() as usize % written.len().max(1))
                {
                    let len = if op & 0x80 != 0 {
                        *len as u64 + 1
                    } else {
                        *len as u64
                    };
                    index_put(&mut log, k[0], *at, len, *sum ^ u128::from(op & 1));
                }
            }
            3 => {
                if let Some((at, k, len, _)) = written.get(inp.u8() as usize % written.len().max(1))
                {
                    Record::DelPack {
                        key: k.clone(),
                        pack: PACK,
                        offset: *at as u32,
                        len: pack::record_len(1, *len as u64) as u32,
                    }
                    .encode(&mut log);
                }
            }
            4 => {
                let n = (inp.u8() % 24) as usize;
                let junk = inp.bytes(n).to_vec();
                if op & 0x80 != 0 {
                    packf.extend_from_slice(&junk);
                } else {
                    log.extend_from_slice(&junk);
                }
            }
            _ => {
                if packf.len() > pack::PACK_HEADER_LEN {
                    let i = pack::PACK_HEADER_LEN
                        + inp.u8() as usize % (packf.len() - pack::PACK_HEADER_LEN);
                    packf[i] ^= 1 << (op >> 4 & 7);
                }
            }
        }
    }
    if op_torn(data) && packf.len() > pack::PACK_HEADER_LEN {
        packf.truncate(packf.len() - 1);
    }
    // Validly written = a whole record that verifies, wherever it is (junk from the input may hold one).
    let mut valid: HashMap<u8, HashSet<Vec<u8>>> = HashMap::new();
    for off in 0..packf.len() {
        if let Ok((r, _)) = pack::parse_record(&packf[off..])
            && r.key.len() == 1
        {
            valid.entry(r.key[0]).or_default().insert(r.body.to_vec());
        }
    }
    std::fs::create_dir_all(dir.join("packs")).expect("mkdir");
    std::fs::write(dir.join("packs").join(pack::pack_file_name(PACK)), &packf).expect("write pack");
    std::fs::write(dir.join("index.log"), &log).expect("write index");
    let cfg = StoreConfig::on_disk("fuzz", dir, 1 << 20);
    let served_ok = |store: &Store| {
        for k in 0..8u8 {
            if let Ok(Some(b)) = store.get(&[k]) {
                assert!(
                    valid.get(&k).is_some_and(|s| s.contains(&b[..])),
                    "key {k}: served {} bytes never validly written for it",
                    b.len()
                );
            }
        }
    };
    let (store, _) = Store::open(cfg.clone()).expect("store opens");
    served_ok(&store);
    let fresh = Bytes::from_static(b"fresh value after pack recovery");
    assert!(
        store
            .put(b"new", fresh.clone())
            .expect("put after recovery")
    );
    assert_eq!(store.get(b"new").expect("get"), Some(fresh.clone()));
    drop(store);
    let (store, _) = Store::open(cfg).expect("reopen");
    assert_eq!(store.get(b"new").expect("get after reopen"), Some(fresh));
    served_ok(&store);
}

/// Whether the input asks for a torn pack tail (its last byte's low bit).
fn op_torn(data: &[u8]) -> bool {
    data.last().is_some_and(|b| b & 1 == 1)
}

fn index_put(log: &mut Vec<u8>, key: u8, at: usize, body_len: u64, checksum: u128) {
    Record::PutPack {
        key: vec![key],
        pack: 5,
        offset: at as u32,
        body_len,
        checksum,
    }
    .encode(log);
}
