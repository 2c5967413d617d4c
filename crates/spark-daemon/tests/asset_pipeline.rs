//! The asset pipeline on a real file system: declared dependencies invalidate every variant built from them
//! (with an event to the connections that asked), and `get_or_import` runs an import once across processes.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spark_client::spark_proto::cache::AssetInvalidated;
use spark_client::{AssetKey, Client, ImportSpec, ShaderKey, asset_invalidated};
use spark_testkit::{Daemon, eventually};

const WAIT: Duration = Duration::from_secs(20);

fn key(path: &str, platform: u8) -> AssetKey {
    AssetKey {
        path: path.into(),
        platform,
    }
}

/// AssetInvalidated events on `cl` until `n` arrived (or the wait ends).
fn invalidations(cl: &Client, n: usize) -> Vec<AssetInvalidated> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Some(e) = cl.next_event(left).unwrap()
            && let Some(inv) = asset_invalidated(&e).unwrap()
        {
            got.push(inv);
        }
    }
    got
}

#[test]
fn a_changed_dependency_invalidates_every_variant_and_the_subscriber_hears_of_it() {
    let d = Daemon::start(&[]);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("rock.png");
    let inc = t.path().join("shared/palette.act");
    fs::create_dir_all(inc.parent().unwrap()).unwrap();
    fs::write(&src, b"png v1").unwrap();
    fs::write(&inc, b"palette v1").unwrap();
    let editor = d.client();
    editor.asset().subscribe_invalidations().unwrap();
    let cooker = d.client();
    for platform in [1u8, 2, 3] {
        let k = key("textures/rock", platform);
        assert!(cooker.asset().put(&k, b"cooked").unwrap());
        assert_eq!(cooker.asset().declare_deps(&k, &[&src, &inc]).unwrap(), 2);
    }
    // Built from the source only: also invalidated by it, not by the palette.
    let other = key("textures/rock-lod", 1);
    cooker.asset().put(&other, b"lod").unwrap();
    cooker.asset().declare_deps(&other, &[&src]).unwrap();
    // Not declared: never touched.
    let free = key("textures/rock", 4);
    cooker.asset().put(&free, b"free").unwrap();

    fs::write(&inc, b"palette v2").unwrap();
    let mut got: Vec<(String, u8)> = invalidations(&editor, 3)
        .into_iter()
        .map(|i| {
            assert_eq!(Path::new(&i.source), inc.canonicalize().unwrap());
            (i.path, i.platform)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("textures/rock".to_string(), 1),
            ("textures/rock".to_string(), 2),
            ("textures/rock".to_string(), 3)
        ]
    );
    for platform in [1u8, 2, 3] {
        assert_eq!(
            cooker.asset().get(&key("textures/rock", platform)).unwrap(),
            None
        );
    }
    assert!(cooker.asset().get(&other).unwrap().is_some());
    assert!(cooker.asset().get(&free).unwrap().is_some());

    // An editor's safe-save of the source drops the variant built from it.
    let tmp = t.path().join(".rock.png.tmp");
    fs::write(&tmp, b"png v2").unwrap();
    fs::rename(&tmp, &src).unwrap();
    let inv = invalidations(&editor, 1);
    assert_eq!(inv.len(), 1, "{inv:?}");
    assert_eq!(
        (inv[0].path.as_str(), inv[0].platform),
        ("textures/rock-lod", 1)
    );
    assert_eq!(cooker.asset().get(&other).unwrap(), None);
    assert!(cooker.asset().get(&free).unwrap().is_some());
}

/// The declarations outlive the daemon: a source edited while it was down (or killed) drops the variants
/// built from it at the next start, before any of them can be served; unchanged ones stay and stay watched.
#[test]
fn declared_dependencies_survive_a_restart_and_catch_edits_made_while_down() {
    let mut d = Daemon::start(&[]);
    let t = tempfile::tempdir().unwrap();
    let (edited, kept, safe_saved) = (
        t.path().join("edited.png"),
        t.path().join("kept.png"),
        t.path().join("sub/safe.png"),
    );
    fs::create_dir_all(safe_saved.parent().unwrap()).unwrap();
    for f in [&edited, &kept, &safe_saved] {
        fs::write(f, b"v1").unwrap();
    }
    {
        let cl = d.client();
        for (name, src) in [("a", &edited), ("b", &kept), ("c", &safe_saved)] {
            let k = key(&format!("tex/{name}"), 1);
            cl.asset().put(&k, b"cooked").unwrap();
            cl.asset().declare_deps(&k, &[src]).unwrap();
        }
    }
    d.stop();
    // Same size, written while nobody watches; and a rename-over with identical size and contents.
    fs::write(&edited, b"v2").unwrap();
    let tmp = t.path().join("sub/.safe.tmp");
    fs::write(&tmp, b"v1").unwrap();
    fs::rename(&tmp, &safe_saved).unwrap();
    d.restart();
    let cl = d.client();
    assert_eq!(cl.asset().get(&key("tex/a", 1)).unwrap(), None);
    assert_eq!(cl.asset().get(&key("tex/c", 1)).unwrap(), None);
    assert_eq!(
        cl.asset().get(&key("tex/b", 1)).unwrap().as_deref(),
        Some(&b"cooked"[..])
    );
    // The survivor is watched again by the new daemon.
    cl.asset().subscribe_invalidations().unwrap();
    fs::write(&kept, b"v2").unwrap();
    let inv = invalidations(&cl, 1);
    assert_eq!(inv.len(), 1, "{inv:?}");
    assert_eq!(inv[0].path, "tex/b");
    assert_eq!(cl.asset().get(&key("tex/b", 1)).unwrap(), None);

    // After SIGKILL as well: the log is appended before DeclareDeps is answered.
    let k = key("tex/d", 2);
    cl.asset().put(&k, b"cooked").unwrap();
    cl.asset().declare_deps(&k, &[&kept]).unwrap();
    drop(cl);
    d.kill();
    fs::write(&kept, b"v3").unwrap();
    d.restart();
    assert_eq!(d.client().asset().get(&k).unwrap(), None);
}

fn shader_key() -> ShaderKey {
    ShaderKey {
        source_hash: 7,
        target: 1,
        stage: 1,
    }
}

/// A dependency log that does not verify cannot say which variants to check: the asset cache is dropped
/// rather than risk serving one of them stale, and the daemon starts normally.
#[test]
fn a_damaged_dependency_log_drops_the_asset_cache_instead_of_trusting_it() {
    let mut d = Daemon::start(&[]);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("rock.png");
    fs::write(&src, b"v1").unwrap();
    let k = key("tex/rock", 1);
    {
        let cl = d.client();
        cl.asset().put(&k, b"cooked").unwrap();
        cl.asset().declare_deps(&k, &[&src]).unwrap();
        cl.shader().put(&shader_key(), b"spirv").unwrap();
    }
    d.stop();
    let log = d.cache_root.join("asset/deps.log");
    let mut bytes = fs::read(&log).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&log, bytes).unwrap();
    d.restart();
    let cl = d.client();
    assert_eq!(cl.asset().get(&k).unwrap(), None);
    // Only the asset namespace is affected.
    assert!(cl.shader().get(&shader_key()).unwrap().is_some());
}

#[test]
fn get_or_import_keys_on_content_and_stays_fresh() {
    let d = Daemon::start(&[]);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("hero.fbx");
    let inc = t.path().join("hero.skel");
    fs::write(&src, b"mesh v1").unwrap();
    fs::write(&inc, b"skel v1").unwrap();
    let cl = d.client();
    cl.asset().subscribe_invalidations().unwrap();
    let spec = ImportSpec {
        source: &src,
        platform: 2,
        importer_id: "fbx",
        importer_version: 7,
        deps: &[&inc],
    };
    let import = || Ok::<_, String>(fs::read(&src).unwrap().repeat(2));
    let first = cl.asset().get_or_import(&spec, import).unwrap();
    assert!(first.ran);
    assert_eq!(&first.data[..], b"mesh v1mesh v1");
    assert!(first.key.path.starts_with("import/"));
    let again = cl
        .asset()
        .get_or_import(&spec, || Err::<Vec<u8>, _>("must not run: cached"))
        .unwrap();
    assert!(!again.ran);
    assert_eq!((again.data, &again.key), (first.data.clone(), &first.key));
    // Another importer version is another variant; a touch that keeps the content keeps the key.
    let v8 = ImportSpec {
        importer_version: 8,
        ..spec.clone()
    };
    assert!(cl.asset().get_or_import(&v8, import).unwrap().ran);
    // The dependency changes: both variants are dropped and the next call imports again, under a new key.
    fs::write(&inc, b"skel v2").unwrap();
    let inv = invalidations(&cl, 2);
    assert_eq!(inv.len(), 2, "{inv:?}");
    assert!(cl.asset().get(&first.key).unwrap().is_none());
    let fresh = cl.asset().get_or_import(&spec, import).unwrap();
    assert!(fresh.ran);
    assert_ne!(fresh.key, first.key);
    // A failed import stores nothing and reports the importer's error.
    fs::write(&src, b"mesh v3").unwrap();
    let err = cl
        .asset()
        .get_or_import(&spec, || Err::<Vec<u8>, _>("bad mesh"))
        .unwrap_err();
    assert!(err.to_string().contains("bad mesh"), "{err}");
    assert!(cl.asset().get_or_import(&spec, import).unwrap().ran);
}

#[test]
fn a_failed_import_hands_the_claim_to_a_waiter() {
    let d = Daemon::start(&[]);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s.png");
    fs::write(&src, b"s").unwrap();
    let spec = ImportSpec {
        source: &src,
        platform: 1,
        importer_id: "png",
        importer_version: 1,
        deps: &[],
    };
    let (a, b) = (d.client(), d.client());
    let (claimed_tx, claimed) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            a.asset().get_or_import(&spec, || {
                // Runs only once this caller holds the claim.
                claimed_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(300));
                Err::<Vec<u8>, _>("importer crashed")
            })
        });
        // The second caller starts while the first holds the claim and imports after it fails.
        claimed.recv_timeout(WAIT).unwrap();
        let second = b
            .asset()
            .get_or_import(&spec, || Ok::<_, String>(b"ok".to_vec()))
            .unwrap();
        assert!(first.join().unwrap().is_err());
        assert!(second.ran);
        assert_eq!(&second.data[..], b"ok");
    });
}

const CHILD_ENV: &str = "SPARK_TEST_IMPORT_CHILD";

/// One of the 8 processes: waits for the start signal, then imports through the daemon.
fn import_child(dir: &Path) {
    let socket = std::env::var("SPARK_TEST_SOCKET").unwrap();
    let cl = Client::connect(&socket).unwrap();
    let go = dir.join("go");
    assert!(eventually(WAIT, || go.exists()));
    let src = dir.join("big.tga");
    let spec = ImportSpec {
        source: &src,
        platform: 3,
        importer_id: "tga",
        importer_version: 1,
        deps: &[],
    };
    let r = cl
        .asset()
        .get_or_import(&spec, || {
            let mut log = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(dir.join("imports.log"))
                .unwrap();
            writeln!(log, "{}", std::process::id()).unwrap();
            // Long enough that every other process asks while this one imports.
            std::thread::sleep(Duration::from_millis(700));
            Ok::<_, String>(b"converted texture".to_vec())
        })
        .unwrap();
    println!(
        "RESULT ran={} data={}",
        r.ran,
        String::from_utf8_lossy(&r.data)
    );
}

#[test]
fn get_or_import_from_8_processes_runs_the_import_once() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        import_child(Path::new(&dir));
        return;
    }
    let d = Daemon::start(&[]);
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("big.tga"), b"raw pixels").unwrap();
    let me = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(&me)
                .args([
                    "--exact",
                    "get_or_import_from_8_processes_runs_the_import_once",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_ENV, t.path())
                .env("SPARK_TEST_SOCKET", &d.socket)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    fs::write(t.path().join("go"), b"").unwrap();
    let mut ran = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "a child failed");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find_map(|l| l.find("RESULT ").map(|i| &l[i..]))
            .unwrap_or_else(|| panic!("no result from a child: {text}"));
        assert!(line.ends_with("data=converted texture"), "{line}");
        if line.contains("ran=true") {
            ran += 1;
        }
    }
    let log = fs::read_to_string(t.path().join("imports.log")).unwrap();
    assert_eq!(log.lines().count(), 1, "the import ran in: {log}");
    assert_eq!(ran, 1);
}
