//! The store's behaviour, tier by tier: everything the original tested, plus integrity and recovery. These
//! run with packs off (one file per blob, as in format v1), which is what their file-level checks look at;
//! `tests/packs.rs` covers packed blobs.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use spark_store::{ColdRead, Durability, Lookup, Store, StoreConfig, StoreError};

const MB: u64 = 1 << 20;

fn disk_cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        pack_max_blob: 0,
        ..StoreConfig::on_disk("test", dir, 64 * MB)
    }
}

fn open(cfg: StoreConfig) -> Store {
    Store::open(cfg).expect("store opens").0
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Every file below `dir` (recursively).
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn blob_files(dir: &Path) -> usize {
    files(&dir.join("blobs")).len()
}

#[test]
fn round_trip_miss_stats_clear_memory_only() {
    let s = open(StoreConfig::memory("m", MB));
    assert_eq!(s.get(b"nope").unwrap(), None);
    assert!(s.put(b"k", b("value")).unwrap());
    assert_eq!(s.get(b"k").unwrap(), Some(b("value")));
    let st = s.stats();
    assert_eq!(
        (st.hits, st.misses, st.puts, st.entries, st.bytes_in_memory),
        (1, 1, 1, 1, 5)
    );
    assert_eq!(s.clear().unwrap(), 1);
    assert_eq!(s.get(b"k").unwrap(), None);
    assert_eq!(s.stats().entries, 0);
    assert_eq!(s.stats().bytes_in_memory, 0);
}

#[test]
fn overwrite_keeps_byte_totals_right() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(tmp.path()));
    s.put(b"k", Bytes::from(vec![1u8; 1000])).unwrap();
    let disk1 = s.stats().bytes_on_disk;
    s.put(b"k", Bytes::from(vec![2u8; 10])).unwrap();
    let st = s.stats();
    assert_eq!(st.entries, 1);
    assert_eq!(st.bytes_in_memory, 10);
    assert_eq!(disk1 - st.bytes_on_disk, 990);
    assert_eq!(s.get(b"k").unwrap().unwrap(), Bytes::from(vec![2u8; 10]));
    assert_eq!(blob_files(tmp.path()), 1, "the overwritten file is gone");
    drop(s);
    let s = open(disk_cfg(tmp.path()));
    assert_eq!(
        s.get(b"k").unwrap().unwrap(),
        Bytes::from(vec![2u8; 10]),
        "overwrite replaces contents on disk"
    );
    assert_eq!(s.stats().bytes_on_disk, disk1 - 990);
}

#[test]
fn reload_from_disk_reads_index_not_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(disk_cfg(tmp.path()));
        for i in 0..50u32 {
            s.put(
                &i.to_le_bytes(),
                Bytes::from(vec![i as u8; 100 + i as usize]),
            )
            .unwrap();
        }
    }
    let (s, rep) = Store::open(disk_cfg(tmp.path())).unwrap();
    assert_eq!(rep.entries, 50);
    assert_eq!(s.stats().bytes_in_memory, 0, "startup loads no blob bodies");
    for i in 0..50u32 {
        assert_eq!(
            s.get(&i.to_le_bytes()).unwrap().unwrap(),
            Bytes::from(vec![i as u8; 100 + i as usize])
        );
    }
    assert_eq!(
        s.stats().entries_in_memory,
        50,
        "read blobs are promoted to the memory tier"
    );
}

#[test]
fn clear_removes_files() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(tmp.path()));
    for i in 0..10u8 {
        s.put(&[i], b("x")).unwrap();
    }
    assert_eq!(blob_files(tmp.path()), 10);
    assert_eq!(s.clear().unwrap(), 10);
    assert_eq!(blob_files(tmp.path()), 0);
    drop(s);
    let s = open(disk_cfg(tmp.path()));
    assert_eq!(s.stats().entries, 0, "clear survives a restart");
}

#[test]
fn malformed_and_temporary_files_are_skipped_or_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(disk_cfg(tmp.path()));
        s.put(b"real", b("data")).unwrap();
    }
    let fan = tmp.path().join("blobs/ab");
    std::fs::create_dir_all(&fan).unwrap();
    // Strict names: each of these is rejected, never read as a blob.
    for bad in [
        "00000000000001ab.blob.tmp",
        "00000000000001AB.blob",
        "1ab.blob",
        "notes.txt",
        "00000000000001a+.blob",
    ] {
        std::fs::write(fan.join(bad), b"junk").unwrap();
    }
    std::fs::write(tmp.path().join("tmp/0000000000000001.tmp"), b"half a blob").unwrap();
    // A well-named file with garbage inside is an orphan that fails to parse: removed.
    std::fs::write(fan.join("00000000000000ab.blob"), b"garbage").unwrap();
    let s = open(disk_cfg(tmp.path()));
    let rep = s.sweep();
    assert_eq!(rep.temp_files_removed, 1);
    assert_eq!(rep.unknown_skipped, 5);
    assert_eq!(rep.orphans_removed, 1);
    assert_eq!(s.stats().entries, 1);
    assert_eq!(s.get(b"real").unwrap(), Some(b("data")));
}

#[test]
fn disk_lru_order_and_eviction_count() {
    let tmp = tempfile::tempdir().unwrap();
    let one = spark_store::format::file_len(1, 100);
    let mut cfg = disk_cfg(tmp.path());
    cfg.disk_budget = 3 * one;
    let s = open(cfg);
    for k in [b"a", b"b", b"c"] {
        s.put(k, Bytes::from(vec![0u8; 100])).unwrap();
    }
    assert!(
        s.get(b"a").unwrap().is_some(),
        "touch a: b is now the oldest"
    );
    s.put(b"d", Bytes::from(vec![0u8; 100])).unwrap();
    assert!(s.exists(b"b").is_none(), "least recently used evicted");
    for k in [b"a", b"c", b"d"] {
        assert!(s.exists(k).is_some());
    }
    let st = s.stats();
    assert_eq!(st.evictions, 1);
    assert!(st.bytes_on_disk <= 3 * one);
    assert_eq!(
        blob_files(tmp.path()),
        3,
        "the evicted file is deleted at once"
    );
}

#[test]
fn memory_tier_lru_demotes_but_keeps_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = disk_cfg(tmp.path());
    cfg.memory_budget = 250;
    let s = open(cfg);
    for k in [b"a", b"b"] {
        s.put(k, Bytes::from(vec![1u8; 100])).unwrap();
    }
    assert!(matches!(s.lookup(b"a"), Lookup::Hit(_)));
    s.put(b"c", Bytes::from(vec![1u8; 100])).unwrap();
    let st = s.stats();
    assert!(st.bytes_in_memory <= 250);
    assert_eq!(st.entries, 3);
    assert_eq!(st.evictions, 0, "a demotion is not an eviction");
    assert!(
        matches!(s.lookup(b"b"), Lookup::Cold(_)),
        "b (LRU) left memory"
    );
    assert!(matches!(s.lookup(b"a"), Lookup::Hit(_)));
    assert_eq!(
        s.get(b"b").unwrap(),
        Some(Bytes::from(vec![1u8; 100])),
        "still on disk"
    );
}

#[test]
fn memory_only_lru_evicts() {
    let s = open(StoreConfig::memory("m", 250));
    s.put(b"a", Bytes::from(vec![0u8; 100])).unwrap();
    s.put(b"b", Bytes::from(vec![0u8; 100])).unwrap();
    s.get(b"a").unwrap();
    s.put(b"c", Bytes::from(vec![0u8; 100])).unwrap();
    assert!(s.exists(b"b").is_none());
    assert!(s.exists(b"a").is_some() && s.exists(b"c").is_some());
    assert_eq!(s.stats().evictions, 1);
}

#[test]
fn budget_trims_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(disk_cfg(tmp.path()));
        for i in 0..10u8 {
            s.put(&[i], Bytes::from(vec![i; 1000])).unwrap();
        }
    }
    let mut cfg = disk_cfg(tmp.path());
    cfg.disk_budget = 4 * spark_store::format::file_len(1, 1000);
    let (s, rep) = Store::open(cfg).unwrap();
    assert_eq!(rep.trimmed_at_start, 6);
    assert_eq!(s.stats().entries, 4);
    assert_eq!(blob_files(tmp.path()), 4);
    for i in 6..10u8 {
        assert!(s.exists(&[i]).is_some(), "the newest survive");
    }
}

#[test]
fn blob_bigger_than_budget_is_not_kept_and_stale_value_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = disk_cfg(tmp.path());
    cfg.disk_budget = 1000;
    let s = open(cfg);
    assert!(s.put(b"k", Bytes::from(vec![0u8; 100])).unwrap());
    assert!(!s.put(b"k", Bytes::from(vec![0u8; 2000])).unwrap());
    assert_eq!(
        s.get(b"k").unwrap(),
        None,
        "the old value is not served for a newer put"
    );
    let st = s.stats();
    assert_eq!(
        (st.entries, st.bytes_on_disk, st.bytes_in_memory),
        (0, 0, 0)
    );
    assert_eq!(blob_files(tmp.path()), 0);
    let m = open(StoreConfig::memory("m", 10));
    assert!(!m.put(b"k", Bytes::from(vec![0u8; 11])).unwrap());
    assert_eq!(m.stats().entries, 0);
}

#[test]
fn max_blob_is_enforced() {
    let mut cfg = StoreConfig::memory("m", MB);
    cfg.max_blob = 10;
    let s = open(cfg);
    assert!(matches!(
        s.put(b"k", Bytes::from(vec![0u8; 11])),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        s.begin_put(b"k", 11),
        Err(StoreError::TooLarge { .. })
    ));
}

#[test]
fn colliding_hashes_never_alias() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = disk_cfg(tmp.path());
    cfg.key_hasher = Some(|_| 42);
    let s = open(cfg.clone());
    s.put(b"textures/a.png\x01", b("A")).unwrap();
    s.put(b"textures/b.png\x01", b("B")).unwrap();
    assert_eq!(s.get(b"textures/a.png\x01").unwrap(), Some(b("A")));
    assert_eq!(s.get(b"textures/b.png\x01").unwrap(), Some(b("B")));
    drop(s);
    let s = open(cfg);
    assert_eq!(s.get(b"textures/a.png\x01").unwrap(), Some(b("A")));
    assert_eq!(s.get(b"textures/b.png\x01").unwrap(), Some(b("B")));
}

#[test]
fn flipped_byte_is_detected_and_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let body = Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<_>>());
    let len = spark_store::format::file_len(3, body.len() as u64) as usize;
    // Every position: header, key, body and trailer.
    for pos in (0..len).step_by(97).chain([0, 8, 20, 23, len - 1]) {
        let dir = tmp.path().join(format!("p{pos}"));
        let path = {
            let s = open(disk_cfg(&dir));
            s.put(b"key", body.clone()).unwrap();
            s.blob_path(b"key").unwrap()
        };
        let mut f = std::fs::read(&path).unwrap();
        f[pos] ^= 0x10;
        std::fs::write(&path, f).unwrap();
        let s = open(disk_cfg(&dir));
        assert_eq!(s.get(b"key").unwrap(), None, "flip at {pos} served");
        let st = s.stats();
        assert_eq!(st.corrupt_dropped, 1, "flip at {pos} counted");
        assert_eq!(st.entries, 0);
        assert!(!path.exists(), "corrupt file removed");
    }
}

#[test]
fn truncated_blob_file_is_a_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let path = {
        let s = open(disk_cfg(tmp.path()));
        s.put(b"key", Bytes::from(vec![7u8; 4000])).unwrap();
        s.blob_path(b"key").unwrap()
    };
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(1000).unwrap();
    let s = open(disk_cfg(tmp.path()));
    assert_eq!(s.get(b"key").unwrap(), None);
    assert_eq!(s.stats().corrupt_dropped, 1);
}

#[test]
fn torn_index_tail_is_cut_and_store_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(disk_cfg(tmp.path()));
        s.put(b"a", b("1")).unwrap();
        s.put(b"b", b("2")).unwrap();
    }
    let idx = tmp.path().join("index.log");
    let mut data = std::fs::read(&idx).unwrap();
    let full = data.len();
    data.truncate(full - 5); // the last record torn mid-write
    std::fs::write(&idx, &data).unwrap();
    let (s, rep) = Store::open(disk_cfg(tmp.path())).unwrap();
    assert!(rep.damaged_index_bytes > 0);
    assert_eq!(s.get(b"a").unwrap(), Some(b("1")));
    s.put(b"c", b("3")).unwrap();
    drop(s);
    let s = open(disk_cfg(tmp.path()));
    assert_eq!(s.get(b"a").unwrap(), Some(b("1")));
    assert_eq!(
        s.get(b"c").unwrap(),
        Some(b("3")),
        "records after a cut tail replay"
    );
    // b's blob file had been renamed into place: the sweep adopts it again.
    s.sweep();
    assert_eq!(s.get(b"b").unwrap(), Some(b("2")));
}

#[test]
fn damaged_index_is_recovered_from_blob_files() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(disk_cfg(tmp.path()));
        for i in 0..20u8 {
            s.put(&[i], Bytes::from(vec![i; 50])).unwrap();
        }
    }
    let idx = tmp.path().join("index.log");
    let mut data = std::fs::read(&idx).unwrap();
    for pos in [9usize, 200, 600, 1000] {
        data[pos] ^= 0xff;
    }
    std::fs::write(&idx, &data).unwrap();
    let (s, rep) = Store::open(disk_cfg(tmp.path())).unwrap();
    assert!(
        rep.recovered.is_some(),
        "mid-log damage triggers recovery before serving"
    );
    for i in 0..20u8 {
        assert_eq!(
            s.get(&[i]).unwrap(),
            Some(Bytes::from(vec![i; 50])),
            "entry {i} recovered"
        );
    }
    // And a wholly destroyed index header.
    drop(s);
    std::fs::write(&idx, b"\0\0\0\0\0\0\0\0\0\0\0\0").unwrap();
    let s = open(disk_cfg(tmp.path()));
    assert_eq!(s.stats().entries, 20);
}

/// A flipped bit in the log's version digit ("SPKIDX02" read as "SPKIDX03" or "SPKIDX12") or in a byte of
/// the magic that names no version is damage, not a newer sparkd's log: the records behind it are this
/// version's, so the store recovers from its blob files and serves every entry instead of refusing to start.
#[test]
fn a_damaged_index_magic_is_recovered_not_taken_for_a_newer_format() {
    for (at, flip) in [(7usize, 0x01u8), (6, 0x01), (7, 0x80), (2, 0x04)] {
        let tmp = tempfile::tempdir().unwrap();
        let s = open(disk_cfg(tmp.path()));
        for i in 0..20u8 {
            s.put(&[i], Bytes::from(vec![i; 50])).unwrap();
        }
        drop(s);
        let idx = tmp.path().join("index.log");
        let mut log = std::fs::read(&idx).unwrap();
        log[at] ^= flip;
        std::fs::write(&idx, &log).unwrap();
        let s = open(disk_cfg(tmp.path()));
        for i in 0..20u8 {
            assert_eq!(
                s.get(&[i]).unwrap(),
                Some(Bytes::from(vec![i; 50])),
                "entry {i} after flipping bit {flip:#x} of magic byte {at}"
            );
        }
        drop(s);
        assert_eq!(
            &std::fs::read(&idx).unwrap()[..8],
            b"SPKIDX02",
            "the log is rewritten with a sound magic"
        );
    }
}

#[test]
fn newer_index_format_is_refused_with_advice() {
    let tmp = tempfile::tempdir().unwrap();
    // A later version's magic, with records this version cannot read behind it.
    std::fs::write(
        tmp.path().join("index.log"),
        b"SPKIDX99\x07later-format record",
    )
    .unwrap();
    match Store::open(disk_cfg(tmp.path())) {
        Err(e @ StoreError::NewerFormat { .. }) => {
            assert!(e.to_string().contains("upgrade sparkd"))
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a newer format"),
    }
}

#[test]
fn streamed_put_and_get_of_a_large_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(tmp.path()));
    let total = 40 * MB as usize;
    let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
    let mut w = s.begin_put(b"big", total as u64).unwrap();
    for c in data.chunks(3 * MB as usize + 7) {
        w.write(c).unwrap();
    }
    assert!(w.commit(Some(spark_proto_checksum(&data))).unwrap());
    assert_eq!(
        s.stats().bytes_in_memory,
        0,
        "large blobs are not kept in memory"
    );
    let Lookup::Cold(c) = s.lookup(b"big") else {
        panic!("expected cold")
    };
    let ColdRead::Stream(mut r) = s.read_cold(c).unwrap() else {
        panic!("expected stream")
    };
    let mut got = Vec::with_capacity(total);
    while let Some(chunk) = r.next_chunk(MB as usize).unwrap() {
        assert!(chunk.len() <= MB as usize);
        got.extend_from_slice(&chunk);
    }
    assert!(got == data, "byte-exact");
}

fn spark_proto_checksum(data: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(data)
}

#[test]
fn stream_mismatches_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(tmp.path()));
    s.put(b"k", b("old")).unwrap();
    let mut w = s.begin_put(b"k", 10).unwrap();
    w.write(b"12345").unwrap();
    assert!(matches!(w.commit(None), Err(StoreError::StreamMismatch(_))));
    let mut w = s.begin_put(b"k", 3).unwrap();
    assert!(w.write(b"1234").is_err(), "more than announced");
    drop(w);
    let mut w = s.begin_put(b"k", 3).unwrap();
    w.write(b"abc").unwrap();
    assert!(
        matches!(w.commit(Some(12345)), Err(StoreError::StreamMismatch(_))),
        "bad checksum"
    );
    assert_eq!(
        s.get(b"k").unwrap(),
        Some(b("old")),
        "failed streams leave the old value"
    );
    assert!(
        files(&tmp.path().join("tmp")).is_empty(),
        "abandoned temp files are removed"
    );
}

#[test]
fn corrupt_large_blob_fails_before_the_last_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(tmp.path()));
    let data = vec![5u8; 20 * MB as usize];
    s.put(b"big", Bytes::from(data)).unwrap();
    let path = s.blob_path(b"big").unwrap();
    drop(s);
    let mut f = std::fs::read(&path).unwrap();
    let mid = f.len() / 2;
    f[mid] ^= 1;
    std::fs::write(&path, f).unwrap();
    let s = open(disk_cfg(tmp.path()));
    let Lookup::Cold(c) = s.lookup(b"big") else {
        panic!()
    };
    let ColdRead::Stream(mut r) = s.read_cold(c).unwrap() else {
        panic!()
    };
    let mut got = 0u64;
    let err = loop {
        match r.next_chunk(MB as usize) {
            Ok(Some(c)) => got += c.len() as u64,
            Ok(None) => panic!("a corrupt blob streamed to the end"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, StoreError::Corrupt(_)));
    assert!(got < 20 * MB, "the final chunk is withheld");
    assert_eq!(s.stats().corrupt_dropped, 1);
    assert!(s.exists(b"big").is_none());
}

#[test]
fn fsync_durability_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = disk_cfg(tmp.path());
    cfg.durability = Durability::Fsync;
    {
        let s = open(cfg.clone());
        s.put(b"k", b("durable")).unwrap();
    }
    assert_eq!(open(cfg).get(b"k").unwrap(), Some(b("durable")));
}

#[test]
fn hot_key_readers_with_a_concurrent_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(tmp.path()));
    s.put(b"hot", b("the hot value")).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 1000 {
                    assert_eq!(s.get(b"hot").unwrap(), Some(b("the hot value")));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..500u32 {
                s.put(&i.to_le_bytes(), Bytes::from(vec![i as u8; 256]))
                    .unwrap();
            }
        })
    };
    writer.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads >= 8000);
    for i in 0..500u32 {
        assert_eq!(
            s.get(&i.to_le_bytes()).unwrap(),
            Some(Bytes::from(vec![i as u8; 256]))
        );
    }
    assert_eq!(s.stats().hits, reads + 500);
}

#[cfg(unix)] // creating symlinks on Windows needs a privilege an ordinary user lacks
#[test]
fn symlinks_in_the_cache_dir_are_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let dir = tmp.path().join("cache");
    let path = {
        let s = open(disk_cfg(&dir));
        s.put(b"k", b("v")).unwrap();
        s.blob_path(b"k").unwrap()
    };
    // Replace the blob with a symlink to a file outside the cache.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let s = open(disk_cfg(&dir));
    assert!(
        s.get(b"k").is_err() || s.get(b"k").unwrap().is_none(),
        "never served through a symlink"
    );
    s.sweep();
    assert!(
        !path.exists() && std::fs::symlink_metadata(&path).is_err(),
        "planted symlink removed"
    );
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "target untouched"
    );
    // A symlinked blobs directory is refused outright.
    let dir2 = tmp.path().join("cache2");
    std::fs::create_dir_all(&dir2).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir2.join("blobs")).unwrap();
    assert!(Store::open(disk_cfg(&dir2)).is_err());
}
