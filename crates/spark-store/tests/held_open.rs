//! Eviction and removal of a blob that something holds open. On Unix unlinking an open file always works;
//! on Windows it works only for handles opened with `FILE_SHARE_DELETE`, so these also run under Wine
//! (`scripts/test.d/windows.sh`): the store's own streaming reader must keep reading an evicted blob, and a
//! foreign handle without `FILE_SHARE_DELETE` (a virus scanner, a backup tool) must not make eviction fail.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use spark_store::{ColdRead, Lookup, Store, StoreConfig};

const MB: u64 = 1 << 20;

fn open(dir: &Path, disk_budget: u64) -> Store {
    let cfg = StoreConfig {
        pack_max_blob: 0,
        disk_budget,
        ..StoreConfig::on_disk("held", dir, 8 * MB)
    };
    Store::open(cfg).expect("store opens").0
}

fn blob(len: u64, seed: u8) -> Bytes {
    (0..len as usize)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("blobs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Reads a cold blob as a stream (blobs over 16 MiB stream, holding their file open).
fn stream(s: &Store, key: &[u8]) -> Box<spark_store::BlobReader> {
    let Lookup::Cold(c) = s.lookup(key) else {
        panic!("expected a cold entry")
    };
    let ColdRead::Stream(r) = s.read_cold(c).unwrap() else {
        panic!("expected a stream")
    };
    r
}

#[test]
fn a_blob_being_streamed_can_be_evicted_and_the_reader_still_gets_every_byte() {
    let tmp = tempfile::tempdir().unwrap();
    // Room for one 20 MiB blob: the second put evicts the first while it is being read.
    let s = open(tmp.path(), 30 * MB);
    let a = blob(20 * MB, 1);
    assert!(s.put(b"a", a.clone()).unwrap());
    let mut r = stream(&s, b"a");
    let mut got = r
        .next_chunk(MB as usize)
        .unwrap()
        .expect("first chunk")
        .to_vec();

    assert!(s.put(b"b", blob(20 * MB, 2)).unwrap());
    assert!(s.exists(b"a").is_none(), "a was evicted by b");
    assert_eq!(s.stats().evictions, 1);

    while let Some(c) = r.next_chunk(MB as usize).unwrap() {
        got.extend_from_slice(&c);
    }
    assert!(
        got == a[..],
        "the evicted blob read to the end, byte for byte"
    );
    drop(r);
    assert_eq!(blob_files(tmp.path()).len(), 1, "only b's file is left");
}

#[test]
fn removing_a_blob_being_streamed_succeeds_and_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), 0);
    let a = blob(17 * MB, 3);
    s.put(b"a", a.clone()).unwrap();
    let mut r = stream(&s, b"a");
    assert!(s.remove(b"a").unwrap(), "remove reports the entry");
    let mut got = Vec::new();
    while let Some(c) = r.next_chunk(MB as usize).unwrap() {
        got.extend_from_slice(&c);
    }
    assert!(got == a[..]);
    drop(r);
    assert!(
        blob_files(tmp.path()).is_empty(),
        "the file went with the entry"
    );
}

/// A handle opened without FILE_SHARE_DELETE blocks deleting the file on Windows. Eviction must still
/// succeed (the entry is gone at once) and the file must go once the handle is closed.
#[cfg(windows)]
#[test]
fn a_foreign_handle_without_share_delete_does_not_make_eviction_fail() {
    use std::os::windows::fs::OpenOptionsExt;
    const FILE_SHARE_READ: u32 = 1;
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path(), 30 * MB);
    s.put(b"a", blob(20 * MB, 4)).unwrap();
    let path = s.blob_path(b"a").expect("a has a file");
    let scanner = std::fs::OpenOptions::new()
        .read(true)
        .share_mode(FILE_SHARE_READ)
        .open(&path)
        .unwrap();
    // Proof that the handle really blocks deletion here (else this test would show nothing).
    let e =
        std::fs::remove_file(&path).expect_err("delete must be refused while the handle is held");
    eprintln!("delete while held: {e}");

    assert!(
        s.put(b"b", blob(20 * MB, 5)).unwrap(),
        "the put that evicts a succeeds"
    );
    assert!(s.exists(b"a").is_none(), "a is evicted at once");
    assert!(s.remove(b"b").unwrap());
    drop(scanner);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} still exists a minute after its handle closed",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
