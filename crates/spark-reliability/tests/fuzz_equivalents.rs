//! The fuzz properties on stable `cargo test`: every input a fuzzer ever crashed on (kept in
//! `fuzz/regressions/<target>/`), plus proptest-generated inputs — random bytes and mutated valid encodings —
//! for each target. This is what runs where cargo-fuzz cannot (see docs/reliability.md).

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use spark_proto::Message;
use spark_proto::cache::{AssetKey, Put, ShaderKey};
use spark_reliability::checks;
use spark_store::format::Record;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 7] = [
    ("frame", checks::check_frames),
    ("payloads", checks::check_payloads),
    ("record", checks::check_records),
    ("blob", checks::check_blob),
    ("index_replay", checks::check_index_replay),
    ("pack_record", checks::check_pack_records),
    ("pack_recovery", checks::check_pack_recovery),
];

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions")
}

/// Every saved crashing input still passes its target's check.
#[test]
fn fuzz_regressions_stay_fixed() {
    let mut ran = 0;
    for (name, check) in TARGETS {
        let Ok(rd) = std::fs::read_dir(regressions_dir().join(name)) else {
            continue;
        };
        let mut paths: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let data = std::fs::read(&p).unwrap();
            eprintln!("regression {name}: {}", p.display());
            check(&data);
            ran += 1;
        }
    }
    eprintln!("{ran} fuzz regression input(s) replayed");
}

/// A few valid frames back to back, for mutation.
fn valid_stream() -> Vec<u8> {
    let mut out = BytesMut::new();
    let put = Put {
        key: AssetKey {
            path: "textures/rock.png".into(),
            platform: 2,
        },
        data: Bytes::from_static(b"compiled bytes"),
    };
    put.to_frame(3).unwrap().encode_into(&mut out);
    let put = Put {
        key: ShaderKey {
            source_hash: 0x0123_4567_89ab_cdef,
            target: 1,
            stage: 0,
        },
        data: Bytes::new(),
    };
    put.to_frame(2).unwrap().encode_into(&mut out);
    out.to_vec()
}

fn valid_records() -> Vec<u8> {
    let mut out = Vec::new();
    for r in [
        Record::Reserve { up_to: 65536 },
        Record::Put {
            key: b"key".to_vec(),
            file_id: 3,
            body_len: 100,
            checksum: 7,
        },
        Record::Del {
            key: b"key".to_vec(),
            file_id: 3,
        },
    ] {
        r.encode(&mut out);
    }
    checks::legacy_clear_record(&mut out);
    out
}

/// A pack header and two records, for mutation.
fn valid_pack() -> Vec<u8> {
    use spark_store::format::pack;
    let mut out = pack::encode_pack_header(5).to_vec();
    pack::encode_record(b"\x01shaders/a.spv", b"spir-v bytes", &mut out);
    pack::encode_record(b"k", &[9u8; 40], &mut out);
    out
}

/// A pack_recovery input: two records (one indexed), a mismatching index record, a Del, and a flip.
const PACK_RECOVERY_SEED: &[u8] = &[0x10, 20, 0x21, 30, 0x02, 0, 0x33, 1, 0x00, 12, 0x15, 3, 0];

fn mutate(mut base: Vec<u8>, flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for (at, x) in flips {
        if !base.is_empty() {
            let i = at % base.len();
            base[i] ^= x;
        }
    }
    let keep = base.len() - cut % (base.len() + 1);
    base.truncate(keep);
    base
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn frames_random(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        checks::check_frames(&data);
    }

    #[test]
    fn frames_mutated(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4), cut in any::<usize>()) {
        checks::check_frames(&mutate(valid_stream(), &flips, cut));
    }

    #[test]
    fn payloads_random(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        checks::check_payloads(&data);
    }

    #[test]
    fn payloads_mutated(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3), cut in any::<usize>()) {
        // A frame's payload: starts with plausible keys and lengths.
        let s = valid_stream();
        checks::check_payloads(&mutate(s[8..].to_vec(), &flips, cut));
    }

    #[test]
    fn records_mutated(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3), cut in any::<usize>()) {
        checks::check_records(&mutate(valid_records(), &flips, cut));
    }

    #[test]
    fn pack_records_random(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        checks::check_pack_records(&data);
    }

    #[test]
    fn pack_records_mutated(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3), cut in any::<usize>()) {
        checks::check_pack_records(&mutate(valid_pack(), &flips, cut));
    }

    #[test]
    fn blobs_random(data in proptest::collection::vec(any::<u8>(), 0..128), magic in any::<bool>()) {
        let mut d = data;
        if magic && d.len() >= 8 {
            d[..8].copy_from_slice(spark_store::format::BLOB_MAGIC);
        }
        checks::check_blob(&d);
    }
}

proptest! {
    // Each case builds a cache directory on disk: fewer cases.
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn index_replay_random(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        checks::check_index_replay(&data);
    }

    #[test]
    fn pack_recovery_random(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        checks::check_pack_recovery(&data);
    }

    #[test]
    fn pack_recovery_mutated(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3), extra in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut d = mutate(PACK_RECOVERY_SEED.to_vec(), &flips, 0);
        d.extend(extra);
        checks::check_pack_recovery(&d);
    }
}

/// Writes the committed seed corpora in `fuzz/seeds/` (valid encodings a fuzzer cannot find by itself, since
/// they carry checksums): `cargo test -p spark-reliability --test fuzz_equivalents -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let seeds = regressions_dir().join("../seeds");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    write("frame", "two-puts", &valid_stream());
    write("payloads", "asset-put", &valid_stream()[8..]);
    write("record", "reserve-put-del-clear", &valid_records());
    let key = b"\x01textures/rock.png";
    let body = b"compiled bytes";
    let hb = spark_store::format::BlobHeader {
        key_len: key.len() as u32,
        body_len: body.len() as u64,
    }
    .encode();
    let mut h = spark_store::format::blob_hasher(&hb, key);
    h.update(body);
    let mut file = hb.to_vec();
    file.extend_from_slice(key);
    file.extend_from_slice(body);
    file.extend_from_slice(&h.digest128().to_le_bytes());
    write("blob", "valid-blob", &file);
    // index_replay input: magic, then Put (key 0, id 3, 20 bytes, valid checksum, file kept), Del, Put.
    write("pack_record", "header-two-records", &valid_pack());
    write(
        "pack_recovery",
        "put-put-mismatch-del-flip",
        PACK_RECOVERY_SEED,
    );
    write(
        "index_replay",
        "put-del-put",
        &[0, 0x00, 3, 20, 0, 1, 0x12, 3, 0x10, 4, 30, 0, 1],
    );
}
