//! Disk full: the caches on an 8 MiB tmpfs (mounted by the test; needs root, else a loud SKIP). Puts that no
//! eviction can make room for fail with NoSpace and a "no space" message; gets keep working; a put that
//! evicting cold entries makes room for succeeds; once space is freed puts succeed again; nothing is corrupt.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use spark_client::spark_proto::ErrorCode;
use spark_client::{Client, Error};
use spark_reliability::content::make_blob;
use spark_testkit::Daemon;

const KB: usize = 1 << 10;
const MB: usize = 1 << 20;

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs {
    dir: tempfile::TempDir,
}
impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not running as root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the file system with a ballast file, then gives back `leave` bytes.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let p = dir.join("ballast");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0xA5u8; 64 * KB];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
    p
}

fn expect_no_space(r: spark_client::Result<bool>, what: &str) {
    match r {
        Err(Error::Daemon(e)) => {
            assert_eq!(e.kind(), ErrorCode::NoSpace, "{what}: {e}");
            assert!(
                e.message.to_lowercase().contains("no space"),
                "{what}: message says why: {}",
                e.message
            );
            eprintln!("{what}: refused as expected: {e}");
        }
        other => panic!("{what}: expected a NoSpace error, got {other:?}"),
    }
}

/// Every key is either exactly what was put or (evicted) a miss; returns how many are present.
fn check(c: &Client, want: &HashMap<u64, Vec<u8>>) -> usize {
    let mut present = 0;
    for (k, v) in want {
        if let Some(b) = get(c, *k).unwrap_or_else(|e| panic!("get {k}: {e}")) {
            assert!(b == v[..], "key {k}: wrong bytes");
            present += 1;
        }
    }
    present
}

/// An 8 MiB tmpfs holding the shader and asset caches, and a daemon on it; `None` (after a loud SKIP) where no
/// tmpfs can be mounted (not root).
fn daemon_on_a_small_disk() -> Option<(Tmpfs, Daemon)> {
    let fs = match Tmpfs::mount("8m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "SKIP: disk-full test needs a small tmpfs and could not mount one ({why}); run as root"
            );
            return None;
        }
    };
    let shader_dir = fs.path().join("shader");
    let asset_dir = fs.path().join("asset");
    let d = Daemon::start(&[
        "--cache-dir",
        shader_dir.to_str().unwrap(),
        "--asset-cache-dir",
        asset_dir.to_str().unwrap(),
    ]);
    Some((fs, d))
}

#[test]
fn full_disk_fails_puts_clearly_keeps_serving_and_recovers() {
    let Some((fs, mut d)) = daemon_on_a_small_disk() else {
        return;
    };
    let c = d.client();
    // Existing entries: 16 asset blobs of 128 KiB (odd keys).
    let mut assets: HashMap<u64, Vec<u8>> = HashMap::new();
    for i in 0..16u64 {
        let k = 2 * i + 1;
        let b = make_blob(k, 1, 128 * KB);
        assert!(put(&c, k, &b).unwrap());
        assets.insert(k, b);
    }
    let ballast = fill(fs.path(), 200 * KB as u64);

    // The shader cache holds nothing, so evicting cannot make room: the puts fail, inline and streamed.
    expect_no_space(
        put(&c, 0, &make_blob(0, 1, 2 * MB)),
        "inline put on a full disk",
    );
    expect_no_space(
        put(&c, 2, &make_blob(2, 1, 20 * MB)),
        "streamed put on a full disk",
    );
    assert_eq!(get(&c, 0).unwrap(), None, "a failed put leaves nothing");
    assert_eq!(get(&c, 2).unwrap(), None);
    // Existing entries are still served, and the connection is fine.
    assert_eq!(check(&c, &assets), assets.len());
    c.ping().unwrap();

    // The asset cache can make room by evicting its coldest entries: that put succeeds.
    let big = make_blob(101, 1, 600 * KB);
    assert!(
        put(&c, 101, &big).expect("eviction makes room"),
        "stored after evicting"
    );
    assets.insert(101, big);
    let evictions = c.asset().stats().unwrap().evictions;
    let present = check(&c, &assets);
    eprintln!(
        "disk full: the asset put evicted {evictions} entries; {present} of {} still served",
        assets.len()
    );
    assert!(evictions > 0 && present >= 2);
    assert_eq!(
        present as u64 + evictions,
        assets.len() as u64,
        "every entry is either served or evicted"
    );

    // Free the space: puts succeed again.
    std::fs::remove_file(&ballast).unwrap();
    let s0 = make_blob(0, 2, 2 * MB);
    assert!(put(&c, 0, &s0).expect("put after space was freed"));
    let s2 = make_blob(2, 2, 3 * MB);
    assert!(put(&c, 2, &s2).expect("streamed-size put after space was freed"));
    let mut shaders = HashMap::new();
    shaders.insert(0, s0);
    shaders.insert(2, s2);
    assert_eq!(check(&c, &shaders), 2);

    // Nothing is corrupt, in memory or on disk after a restart.
    assert_eq!(corrupt_dropped(&c), 0);
    drop(c);
    d.restart();
    let c = d.client();
    assert_eq!(check(&c, &shaders), 2);
    assert_eq!(
        check(&c, &assets),
        present,
        "the same entries survive a restart"
    );
    assert_eq!(
        corrupt_dropped(&c),
        0,
        "nothing corrupt after the disk filled up"
    );
    let leftovers: Vec<_> = files_below(fs.path())
        .into_iter()
        .filter(|p| in_tmp_dir(p, fs.path()))
        .collect();
    assert!(
        leftovers.is_empty(),
        "failed puts leave no temp files: {leftovers:?}"
    );
    drop(c);
    drop(d);
}

/// A pack append on a full disk: the shader cache already has a pack (one tiny blob, too small to free a
/// whole block when evicted), the disk is filled to the last byte, then a small put must fail with NoSpace
/// (its batch's write is cut back), while every packed asset blob acknowledged earlier is still served, and
/// after space is freed and the daemon restarted, nothing is corrupt and the failed put left nothing.
#[test]
fn full_disk_fails_a_pack_append_and_keeps_earlier_blobs() {
    let Some((fs, mut d)) = daemon_on_a_small_disk() else {
        return;
    };
    let c = d.client();
    let mut assets: HashMap<u64, Vec<u8>> = HashMap::new();
    for i in 0..20u64 {
        let k = 2 * i + 1;
        let b = make_blob(k, 1, 4 * KB);
        assert!(put(&c, k, &b).unwrap());
        assets.insert(k, b);
    }
    assert!(put(&c, 0, &make_blob(0, 1, 100)).unwrap());
    let ballast = fill(fs.path(), 0);
    expect_no_space(
        put(&c, 2, &make_blob(2, 1, 16 * KB)),
        "packed put on a full disk",
    );
    assert_eq!(get(&c, 2).unwrap(), None, "a failed put leaves nothing");
    assert_eq!(
        check(&c, &assets),
        assets.len(),
        "earlier packed blobs served"
    );
    c.ping().unwrap();
    drop(c);
    std::fs::remove_file(&ballast).unwrap();
    d.restart();
    let c = d.client();
    assert_eq!(check(&c, &assets), assets.len(), "and after a restart");
    assert_eq!(get(&c, 2).unwrap(), None);
    assert_eq!(
        corrupt_dropped(&c),
        0,
        "nothing corrupt after the failed append"
    );
    let b = make_blob(2, 2, 16 * KB);
    assert!(put(&c, 2, &b).expect("put after space was freed"));
    assert_eq!(get(&c, 2).unwrap().as_deref(), Some(&b[..]));
}
