//! Corruption: random bytes flipped in blob files, pack records and index logs of a stopped daemon. After a
//! restart the daemon serves every intact entry exactly, never serves a damaged one, and counts each damaged
//! entry in `corrupt_dropped`. The blob-file tests run with packs off (`--pack-max-kb 0`, a file per blob);
//! the pack tests with the default (small blobs in packs, large ones in files).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use spark_client::spark_proto::ErrorCode;
use spark_client::{Client, Error};
use spark_reliability::content::make_blob;
use spark_store::format::{BLOB_HEADER_LEN, BlobHeader};
use spark_testkit::Daemon;

const MB: usize = 1 << 20;

/// The store key a test key id maps to (as the daemon's services build it).
fn store_key(k: u64) -> Vec<u8> {
    if is_asset(k) {
        let key = asset_key(k);
        let mut v = vec![key.platform];
        v.extend_from_slice(key.path.as_bytes());
        v
    } else {
        let key = shader_key(k);
        let mut v = key.source_hash.to_le_bytes().to_vec();
        v.extend([key.target, key.stage]);
        v
    }
}

/// Puts `n` entries (a few of them large enough to be streamed from disk) and returns their contents.
fn populate(c: &Client, n: u64) -> HashMap<u64, Vec<u8>> {
    let mut rng = Rng::new(n);
    (0..n)
        .map(|k| {
            let len = if k % 20 == 7 {
                17 * MB + rng.below(MB as u64) as usize
            } else {
                64 + rng.below(64 << 10) as usize
            };
            let b = make_blob(k, 1, len);
            assert!(put(c, k, &b).unwrap());
            (k, b)
        })
        .collect()
}

/// Blob files of both caches, by the test key they hold.
fn blob_files_by_key(root: &Path, n: u64) -> HashMap<u64, PathBuf> {
    let by_store_key: HashMap<Vec<u8>, u64> = (0..n).map(|k| (store_key(k), k)).collect();
    let mut out = HashMap::new();
    for p in files_below(root) {
        if p.extension().is_none_or(|e| e != "blob") {
            continue;
        }
        let f = std::fs::read(&p).unwrap();
        let h = BlobHeader::decode(&f).unwrap();
        let key = &f[BLOB_HEADER_LEN..BLOB_HEADER_LEN + h.key_len as usize];
        out.insert(by_store_key[key], p);
    }
    assert_eq!(out.len() as u64, n, "one blob file per entry");
    out
}

/// Where each packed entry's record is: pack file, offset, length.
fn pack_records_by_key(root: &Path, n: u64) -> HashMap<u64, (PathBuf, usize, usize)> {
    use spark_store::format::pack;
    let by_store_key: HashMap<Vec<u8>, u64> = (0..n).map(|k| (store_key(k), k)).collect();
    let mut out = HashMap::new();
    for p in files_below(root) {
        if p.extension().is_none_or(|e| e != "pack") {
            continue;
        }
        let f = std::fs::read(&p).unwrap();
        let (recs, end) = pack::scan_records(&f, pack::PACK_HEADER_LEN);
        assert_eq!(end, f.len(), "{} holds whole records only", p.display());
        for (off, r) in recs {
            let len = pack::record_len(r.key.len(), r.body.len() as u64) as usize;
            out.insert(by_store_key[r.key], (p.clone(), off, len));
        }
    }
    out
}

/// Flips 1–3 bytes of `path` within `[from, to)`.
fn flip_range(path: &Path, rng: &mut Rng, from: usize, to: usize) {
    let mut f = std::fs::read(path).unwrap();
    for _ in 0..1 + rng.below(3) {
        let i = from + rng.below((to - from) as u64) as usize;
        f[i] ^= 1 + rng.below(255) as u8;
    }
    std::fs::write(path, f).unwrap();
}

/// Flips 1–3 random bytes of a file (each to a different value).
fn flip(path: &Path, rng: &mut Rng, from: usize) {
    let mut f = std::fs::read(path).unwrap();
    for _ in 0..1 + rng.below(3) {
        let i = from + rng.below((f.len() - from) as u64) as usize;
        f[i] ^= 1 + rng.below(255) as u8;
    }
    std::fs::write(path, f).unwrap();
}

/// Gets every key: intact ones must come back exactly (a file the index lost is adopted by the background
/// sweep, so a miss is retried for a while), damaged ones must never be served.
fn check_all(c: &Client, blobs: &HashMap<u64, Vec<u8>>, damaged: &BTreeSet<u64>) {
    for (k, want) in blobs {
        if damaged.contains(k) {
            match get(c, *k) {
                Ok(None) => {}
                Err(Error::Daemon(e)) if e.kind() == ErrorCode::Corrupt => {}
                Ok(Some(b)) => panic!("key {k}: damaged entry served ({} bytes)", b.len()),
                Err(e) => panic!("key {k}: {e}"),
            }
            assert!(
                get(c, *k).unwrap().is_none(),
                "key {k}: a damaged entry is dropped, not kept"
            );
        } else {
            let t = Instant::now();
            loop {
                match get(c, *k).unwrap_or_else(|e| panic!("key {k}: {e}")) {
                    Some(b) => {
                        assert!(b == want[..], "key {k}: intact entry served wrong bytes");
                        break;
                    }
                    None => {
                        assert!(
                            t.elapsed() < Duration::from_secs(20),
                            "key {k}: intact entry lost"
                        );
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
    }
}

#[test]
fn flipped_bytes_in_blob_files_are_detected_counted_and_dropped() {
    const N: u64 = 60;
    let mut rng = Rng::new(seed("blob corruption"));
    let mut d = Daemon::start(&["--pack-max-kb", "0"]);
    let blobs = populate(&d.client(), N);
    d.stop();
    let files = blob_files_by_key(&d.cache_root, N);
    let mut damaged = BTreeSet::new();
    for (k, p) in &files {
        // About a third, and always at least one large (streamed) entry.
        if rng.below(3) == 0 || *k == 7 {
            flip(p, &mut rng, 0);
            damaged.insert(*k);
        }
    }
    d.restart();
    let c = d.client();
    check_all(&c, &blobs, &damaged);
    eprintln!(
        "blob corruption: {} of {N} entries damaged, all detected",
        damaged.len()
    );
    assert_eq!(
        corrupt_dropped(&c),
        damaged.len() as u64,
        "each damaged entry counted once"
    );
    // And the verdict survives a restart: the damaged entries stay gone, the intact ones stay served.
    d.restart();
    check_all(&d.client(), &blobs, &damaged);
}

#[test]
fn damaged_index_logs_and_blob_files_together() {
    const N: u64 = 60;
    let mut rng = Rng::new(seed("index corruption"));
    for round in 0..4 {
        let mut d = Daemon::start(&["--pack-max-kb", "0"]);
        let blobs = populate(&d.client(), N);
        d.stop();
        let files = blob_files_by_key(&d.cache_root, N);
        let mut damaged = BTreeSet::new();
        for (k, p) in &files {
            if rng.below(4) == 0 {
                flip(p, &mut rng, 0);
                damaged.insert(*k);
            }
        }
        for log in files_below(&d.cache_root)
            .into_iter()
            .filter(|p| p.ends_with("index.log"))
        {
            // Round 0 may hit the magic too; later rounds damage records only. A namespace nothing was put in
            // (compile, here) has a log of its 8-byte header alone: no record to damage, so it is left be
            // (a flip there could only hit the magic, which this test does not set out to damage).
            if std::fs::metadata(&log).unwrap().len() > 8 {
                flip(&log, &mut rng, if round == 0 { 0 } else { 8 });
            }
        }
        d.restart();
        let c = d.client();
        check_all(&c, &blobs, &damaged);
        // Entries whose index record was lost are judged by the background sweep: wait for it.
        let want = damaged.len() as u64;
        spark_testkit::eventually(Duration::from_secs(20), || corrupt_dropped(&c) >= want);
        let counted = corrupt_dropped(&c);
        eprintln!("index corruption round {round}: {want} damaged blob files, {counted} counted");
        assert_eq!(
            counted, want,
            "every damaged entry is counted in corrupt_dropped"
        );
    }
}

/// The last index record torn off (as by a crash) while its blob file is damaged: the file is an orphan the
/// background sweep judges. It must be counted and dropped, never adopted (under its own key or, with a
/// damaged key, under a wrong one).
#[test]
fn damaged_blob_behind_a_torn_index_tail_is_counted_not_adopted() {
    use spark_store::format::Record;
    for damage_key in [false, true] {
        let mut d = Daemon::start(&["--pack-max-kb", "0"]);
        let c = d.client();
        let mut blobs = HashMap::new();
        for k in (1..20u64).step_by(2) {
            let b = make_blob(k, 1, 1000 + k as usize);
            assert!(put(&c, k, &b).unwrap());
            blobs.insert(k, b);
        }
        drop(c);
        d.stop();
        let dir = d.cache_root.join("asset");
        let log = std::fs::read(dir.join("index.log")).unwrap();
        let (mut off, mut last) = (8, None);
        while let Ok((rec, n)) = Record::decode(&log[off..]) {
            last = Some((off, rec));
            off += n;
        }
        let Some((at, Some(Record::Put { key, file_id, .. }))) = last else {
            panic!("the log ends with a Put")
        };
        std::fs::write(dir.join("index.log"), &log[..at + 5]).unwrap();
        let blob = dir
            .join("blobs")
            .join(spark_store::format::blob_dir_name(file_id))
            .join(spark_store::format::blob_file_name(file_id));
        let mut f = std::fs::read(&blob).unwrap();
        let i = if damage_key {
            BLOB_HEADER_LEN + 1
        } else {
            f.len() - 20
        };
        f[i] ^= 0x20;
        std::fs::write(&blob, f).unwrap();
        let k = (0..20u64).find(|k| store_key(*k) == key).unwrap();
        d.restart();
        let c = d.client();
        let damaged: BTreeSet<u64> = [k].into();
        assert!(
            spark_testkit::eventually(Duration::from_secs(20), || corrupt_dropped(&c) == 1),
            "the damaged orphan is counted (damaged key: {damage_key}): {}",
            corrupt_dropped(&c)
        );
        check_all(&c, &blobs, &damaged);
        assert_eq!(
            c.asset().stats().unwrap().entries,
            blobs.len() as u64 - 1,
            "nothing adopted under a wrong key"
        );
        assert!(!blob.exists(), "the damaged file is deleted");
    }
}

#[test]
fn flipped_bytes_in_pack_records_are_detected_counted_and_never_served() {
    const N: u64 = 80;
    let mut rng = Rng::new(seed("pack corruption"));
    let mut d = Daemon::start(&[]);
    let blobs = populate(&d.client(), N);
    d.stop();
    let records = pack_records_by_key(&d.cache_root, N);
    assert!(records.len() as u64 > N / 2, "small blobs went to packs");
    let mut damaged = BTreeSet::new();
    for (k, (p, off, len)) in &records {
        if rng.below(3) == 0 {
            flip_range(p, &mut rng, *off, off + len);
            damaged.insert(*k);
        }
    }
    d.restart();
    let c = d.client();
    // Every intact neighbour in the same packs is served exactly; no damaged record is.
    check_all(&c, &blobs, &damaged);
    assert_eq!(
        corrupt_dropped(&c),
        damaged.len() as u64,
        "each damaged record counted once"
    );
    d.restart();
    check_all(&d.client(), &blobs, &damaged);
}

/// Index logs and pack records damaged together: index records lost mid-log are recovered from the packs
/// before serving; damaged records are never served (counted when the index still named them).
#[test]
fn damaged_index_logs_and_pack_records_together() {
    const N: u64 = 60;
    let mut rng = Rng::new(seed("index and pack corruption"));
    for round in 0..3 {
        let mut d = Daemon::start(&[]);
        let blobs = populate(&d.client(), N);
        d.stop();
        let mut damaged = BTreeSet::new();
        for (k, (p, off, len)) in pack_records_by_key(&d.cache_root, N) {
            if rng.below(4) == 0 {
                flip_range(&p, &mut rng, off, off + len);
                damaged.insert(k);
            }
        }
        for log in files_below(&d.cache_root)
            .into_iter()
            .filter(|p| p.ends_with("index.log"))
        {
            // A namespace nothing was put in (compile) has a log of its 8-byte header alone: nothing to damage.
            if std::fs::metadata(&log).unwrap().len() > 8 {
                flip(&log, &mut rng, 8);
            }
        }
        d.restart();
        let c = d.client();
        check_all(&c, &blobs, &damaged);
        let counted = corrupt_dropped(&c);
        eprintln!(
            "index+pack corruption round {round}: {} damaged records, {counted} counted",
            damaged.len()
        );
        assert!(counted <= damaged.len() as u64, "only damage is counted");
    }
}
