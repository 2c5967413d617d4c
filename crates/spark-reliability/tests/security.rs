//! Security: socket permissions, the peer-credential check against another uid, asset keys that look like
//! paths, and symlinks planted in the cache directory.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use spark_client::spark_proto::ErrorCode;
use spark_client::{AssetKey, Client, Error};
use spark_reliability::content::make_blob;
use spark_store::format::{self, BLOB_HEADER_LEN, BlobHeader};
use spark_testkit::{Daemon, eventually, sparkd_bin};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn socket_directory_is_0700_and_socket_0600() {
    let d = Daemon::start(&[]);
    assert_eq!(mode(&d.socket), 0o600, "socket is 0600");
    // The default location: created 0700, and an existing one that is too open is tightened.
    for pre_existing in [false, true] {
        let runtime = tempfile::tempdir().unwrap();
        let dir = runtime.path().join("spark");
        if pre_existing {
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut child = Command::new(sparkd_bin())
            .args(["--memory-only", "--log-level", "warn"])
            .env("XDG_RUNTIME_DIR", runtime.path())
            .spawn()
            .unwrap();
        let sock = dir.join("sparkd.sock");
        assert!(eventually(Duration::from_secs(20), || Client::connect(
            &sock
        )
        .is_ok()));
        assert_eq!(
            mode(&dir),
            0o700,
            "socket directory is 0700 (pre-existing: {pre_existing})"
        );
        assert_eq!(mode(&sock), 0o600, "socket is 0600");
        Client::connect(&sock).unwrap().shutdown().unwrap();
        assert!(child.wait().unwrap().success());
    }
}

/// A `sparkctl` binary (built next to `sparkd` if missing).
fn sparkctl_bin() -> PathBuf {
    let p = spark_testkit::sibling_bin("sparkctl");
    if !p.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "sparkctl", "--bin", "sparkctl"])
            .status()
            .unwrap();
        assert!(st.success(), "building sparkctl");
    }
    p
}

/// How to run a command as uid/gid 65534, if this process may.
fn as_nobody() -> Result<Vec<String>, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not running as root, cannot switch to another uid".into());
    }
    let ok = |c: &str| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("setpriv") {
        return Ok([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ]
        .map(String::from)
        .to_vec());
    }
    if ok("runuser") {
        return Ok(["runuser", "-u", "nobody", "--"].map(String::from).to_vec());
    }
    Err("neither setpriv nor runuser is installed".into())
}

#[test]
fn another_uid_is_refused_even_with_loose_permissions() {
    let prefix = match as_nobody() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIP: peer-credential test needs to run a client as another uid: {why}");
            return;
        }
    };
    let d = Daemon::start(&[]);
    // Loosen everything the file system would otherwise stop the stranger with.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ctl = d.dir.path().join("sparkctl");
    std::fs::copy(sparkctl_bin(), &ctl).unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(&ctl)
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .env_remove("SPARK_DAEMON_SOCKET")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "as uid 65534: sparkctl {args:?} -> {:?}: {}",
            out.status.code(),
            err.trim()
        );
        (out.status.code(), err)
    };
    for args in [
        &["ping"][..],
        &["stats"],
        &["shader", "get", "0123abcd", "1", "0"],
        &["shutdown"],
    ] {
        let (code, err) = run(args);
        assert_eq!(
            code,
            Some(1),
            "refused by the daemon (exit 1), not by the file system (exit 2)"
        );
        assert!(
            err.contains("permission-denied") && err.contains("65534"),
            "says why: {err}"
        );
    }
    // The owner is unaffected, and the stranger's shutdown did nothing.
    let c = d.client();
    c.ping().unwrap();
    assert!(d.dir.path().join("s.sock").exists());
}

#[test]
fn asset_keys_that_look_like_paths_stay_inside_the_cache() {
    let d = Daemon::start(&[]);
    let outside = d.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let canary = outside.join("canary.txt");
    std::fs::write(&canary, b"canary").unwrap();
    let passwd = std::fs::read("/etc/passwd").ok();
    let before: Vec<PathBuf> = files_below(d.dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(&d.cache_root))
        .collect();
    let abs_new = outside.join("created-by-key");
    let deep = format!(
        "{}/../../../../../../../../tmp/spark-reliability-key-{}",
        outside.display(),
        std::process::id()
    );
    let paths = [
        "../../etc/passwd".to_string(),
        "/etc/passwd".to_string(),
        "../../../../../../../../etc/shadow".to_string(),
        canary.display().to_string(),
        abs_new.display().to_string(),
        deep.clone(),
        "..".into(),
        ".".into(),
        "blobs/../index.log".into(),
        "index.log".into(),
        "a\\..\\..\\b".into(),
    ];
    let c = d.client();
    for (i, path) in paths.iter().enumerate() {
        for platform in [0u8, 1] {
            let key = AssetKey {
                path: path.clone(),
                platform,
            };
            assert_eq!(
                c.asset().get(&key).unwrap(),
                None,
                "{path}: nothing is read from the file system"
            );
            let blob = make_blob(i as u64, platform as u64, 300);
            assert!(
                c.asset().put(&key, &blob).unwrap(),
                "{path}: an opaque key is stored"
            );
            assert_eq!(
                c.asset().get(&key).unwrap().as_deref(),
                Some(&blob[..]),
                "{path}: served as put"
            );
        }
        assert_eq!(c.asset().invalidate(path).unwrap(), 2);
    }
    assert_eq!(
        std::fs::read(&canary).unwrap(),
        b"canary",
        "outside file untouched"
    );
    assert_eq!(
        std::fs::read("/etc/passwd").ok(),
        passwd,
        "/etc/passwd untouched"
    );
    assert!(!abs_new.exists(), "no file created at an absolute key path");
    assert!(!Path::new(&deep).exists() && std::fs::symlink_metadata(&deep).is_err());
    let after: Vec<PathBuf> = files_below(d.dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(&d.cache_root))
        .collect();
    assert_eq!(
        before, after,
        "the daemon created no file outside its cache directory"
    );
}

/// Snapshot of a directory tree: every path and its bytes (symlinks as their target).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_below(dir)
        .into_iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let data = if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                std::fs::read(&p).unwrap()
            };
            (p, data)
        })
        .collect()
}

/// Blob files, fan-out directories and index logs replaced by symlinks (a file per blob: packs off).
#[test]
fn planted_symlinks_are_never_followed() {
    const N: u64 = 24;
    let mut d = Daemon::start(&["--pack-max-kb", "0"]);
    let c = d.client();
    let blobs: Vec<Vec<u8>> = (0..N).map(|k| make_blob(k, 1, 500 + k as usize)).collect();
    for (k, b) in blobs.iter().enumerate() {
        assert!(put(&c, k as u64, b).unwrap());
    }
    drop(c);
    d.stop();
    let outside = d.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // Every blob file gets an evil twin outside: same key and length, different body, valid checksum.
    let mut planted = Vec::new();
    let files: Vec<PathBuf> = files_below(&d.cache_root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "blob"))
        .collect();
    let evil_of = |p: &Path| {
        let f = std::fs::read(p).unwrap();
        let h = BlobHeader::decode(&f).unwrap();
        let key = f[BLOB_HEADER_LEN..BLOB_HEADER_LEN + h.key_len as usize].to_vec();
        format::encode_blob(&key, &vec![b'!'; h.body_len as usize]).0
    };
    // (1) Blob files replaced by symlinks to their evil twins.
    for (i, p) in files.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let twin = outside.join(format!("twin-{i}.blob"));
        std::fs::write(&twin, evil_of(p)).unwrap();
        std::fs::remove_file(p).unwrap();
        std::os::unix::fs::symlink(&twin, p).unwrap();
        planted.push(p.clone());
    }
    // (2) A fan-out directory replaced by a symlink to a directory of evil twins.
    let fan = files
        .iter()
        .enumerate()
        .find(|(i, _)| i % 3 == 1)
        .map(|(_, p)| p.parent().unwrap().to_path_buf())
        .unwrap();
    let evil_fan = outside.join("fan");
    std::fs::create_dir(&evil_fan).unwrap();
    for f in files_below(&fan) {
        if std::fs::symlink_metadata(&f).unwrap().file_type().is_file() {
            std::fs::write(evil_fan.join(f.file_name().unwrap()), evil_of(&f)).unwrap();
        }
    }
    std::fs::rename(&fan, outside.join("moved-fan")).unwrap();
    std::os::unix::fs::symlink(&evil_fan, &fan).unwrap();
    planted.push(fan.clone());
    // (3) The asset index log replaced by a symlink to a copy outside, (4) a planted log temp file.
    let asset_log = d.cache_root.join("asset/index.log");
    let log_copy = outside.join("index-copy.log");
    std::fs::copy(&asset_log, &log_copy).unwrap();
    std::fs::remove_file(&asset_log).unwrap();
    std::os::unix::fs::symlink(&log_copy, &asset_log).unwrap();
    let victim = outside.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let shader_log_tmp = d.cache_root.join("shader/index.log.tmp");
    std::os::unix::fs::symlink(&victim, &shader_log_tmp).unwrap();
    planted.push(asset_log.clone());
    planted.push(shader_log_tmp.clone());

    let before = snapshot(&outside);
    d.restart();
    let c = d.client();
    for (k, want) in blobs.iter().enumerate() {
        match get(&c, k as u64) {
            Ok(Some(b)) => assert!(
                b == want[..],
                "key {k}: served bytes from outside the cache"
            ),
            Ok(None) => {}
            Err(Error::Daemon(e)) if e.kind() == ErrorCode::Corrupt => {}
            Err(e) => panic!("key {k}: {e}"),
        }
    }
    // New puts, a clear (rewrites the shader log through its temp file), more puts.
    for k in 100..140u64 {
        assert!(put(&c, k, &make_blob(k, 1, 700)).unwrap());
    }
    c.shader().clear().unwrap();
    for k in 200..240u64 {
        assert!(put(&c, k, &make_blob(k, 1, 700)).unwrap());
        assert_eq!(
            get(&c, k).unwrap().as_deref(),
            Some(&make_blob(k, 1, 700)[..])
        );
    }
    drop(c);
    d.stop();
    let after = snapshot(&outside);
    let changed: Vec<_> = after
        .iter()
        .filter(|a| !before.contains(a))
        .map(|(p, _)| p.display().to_string())
        .chain(
            before
                .iter()
                .filter(|b| !after.contains(b))
                .map(|(p, _)| format!("{} (gone or changed)", p.display())),
        )
        .collect();
    assert!(
        changed.is_empty(),
        "files outside the cache were changed through planted symlinks: {changed:?}"
    );
    for p in &planted {
        let m = std::fs::symlink_metadata(p);
        assert!(
            m.as_ref().map_or(true, |m| !m.file_type().is_symlink()),
            "{} is still a symlink",
            p.display()
        );
    }
}

/// Pack files replaced by symlinks to evil twins outside the cache (same records, other bodies, valid
/// checksums): never read or written through, removed at start; their entries are misses.
#[test]
fn planted_pack_symlinks_are_never_followed() {
    use spark_store::format::pack;
    const N: u64 = 24;
    let mut d = Daemon::start(&[]);
    let c = d.client();
    let blobs: Vec<Vec<u8>> = (0..N).map(|k| make_blob(k, 1, 500 + k as usize)).collect();
    for (k, b) in blobs.iter().enumerate() {
        assert!(put(&c, k as u64, b).unwrap());
    }
    drop(c);
    d.stop();
    let outside = d.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let packs: Vec<PathBuf> = files_below(&d.cache_root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    assert!(!packs.is_empty(), "small blobs went to packs");
    let mut planted = Vec::new();
    for (i, p) in packs.iter().enumerate() {
        let f = std::fs::read(p).unwrap();
        let mut evil = f[..pack::PACK_HEADER_LEN].to_vec();
        for (_, r) in pack::scan_records(&f, pack::PACK_HEADER_LEN).0 {
            pack::encode_record(r.key, &vec![b'!'; r.body.len()], &mut evil);
        }
        let twin = outside.join(format!("twin-{i}.pack"));
        std::fs::write(&twin, evil).unwrap();
        std::fs::remove_file(p).unwrap();
        std::os::unix::fs::symlink(&twin, p).unwrap();
        planted.push(p.clone());
    }
    let before = snapshot(&outside);
    d.restart();
    let c = d.client();
    for (k, want) in blobs.iter().enumerate() {
        match get(&c, k as u64) {
            Ok(Some(b)) => assert!(b == want[..], "key {k}: served bytes from outside"),
            Ok(None) => {}
            Err(Error::Daemon(e)) if e.kind() == ErrorCode::Corrupt => {}
            Err(e) => panic!("key {k}: {e}"),
        }
    }
    for k in 100..140u64 {
        assert!(put(&c, k, &make_blob(k, 1, 700)).unwrap());
        assert_eq!(
            get(&c, k).unwrap().as_deref(),
            Some(&make_blob(k, 1, 700)[..])
        );
    }
    drop(c);
    d.stop();
    assert!(
        before == snapshot(&outside),
        "files outside the cache changed"
    );
    for p in &planted {
        let m = std::fs::symlink_metadata(p);
        assert!(
            m.as_ref().map_or(true, |m| !m.file_type().is_symlink()),
            "{} is still a symlink",
            p.display()
        );
    }
}
