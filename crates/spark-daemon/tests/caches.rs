//! The Shader and Asset services through a real daemon: everything the original tested, plus large blobs,
//! crash safety of streamed puts and the default cache location.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spark_client::spark_proto::ErrorCode;
use spark_client::{AssetKey, Client, ShaderKey};
use spark_testkit::{Daemon, eventually, status_kib};

fn sk(h: u64, target: u8, stage: u8) -> ShaderKey {
    ShaderKey {
        source_hash: h,
        target,
        stage,
    }
}

fn ak(path: &str, platform: u8) -> AssetKey {
    AssetKey {
        path: path.into(),
        platform,
    }
}

fn files_under(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn shader_round_trip_miss_stats_clear() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let s = c.shader();
    assert_eq!(s.get(&sk(1, 0, 0)).unwrap(), None);
    assert!(s.put(&sk(1, 0, 0), b"spirv bytes").unwrap());
    assert_eq!(s.get(&sk(1, 0, 0)).unwrap().unwrap(), &b"spirv bytes"[..]);
    assert_eq!(s.exists(&sk(1, 0, 0)).unwrap(), Some(11));
    assert_eq!(s.exists(&sk(2, 0, 0)).unwrap(), None);
    let st = s.stats().unwrap();
    assert_eq!(
        (st.hits, st.misses, st.puts, st.entries),
        (1, 1, 1, 1),
        "exists counts neither"
    );
    assert_eq!(st.bytes_in_memory, 11);
    assert!(st.bytes_on_disk > 11, "disk bytes include the file header");
    assert_eq!(s.clear().unwrap(), 1);
    assert_eq!(s.get(&sk(1, 0, 0)).unwrap(), None);
    assert_eq!(
        files_under(&d.cache_root.join("shader/blobs")),
        0,
        "clear removes files"
    );
}

#[test]
fn overwrite_totals_and_target_stage_distinctness() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let s = c.shader();
    s.put(&sk(7, 1, 1), &[1u8; 1000]).unwrap();
    s.put(&sk(7, 1, 1), &[2u8; 100]).unwrap();
    let st = s.stats().unwrap();
    assert_eq!((st.entries, st.bytes_in_memory), (1, 100));
    assert_eq!(s.get(&sk(7, 1, 1)).unwrap().unwrap(), &[2u8; 100][..]);
    s.put(&sk(7, 2, 1), b"target 2").unwrap();
    s.put(&sk(7, 1, 2), b"stage 2").unwrap();
    assert_eq!(s.get(&sk(7, 2, 1)).unwrap().unwrap(), &b"target 2"[..]);
    assert_eq!(s.get(&sk(7, 1, 2)).unwrap().unwrap(), &b"stage 2"[..]);
    assert_eq!(s.get(&sk(7, 1, 1)).unwrap().unwrap(), &[2u8; 100][..]);
    assert_eq!(s.stats().unwrap().entries, 3);
    // The asset cache is a separate namespace.
    assert_eq!(c.asset().stats().unwrap().entries, 0);
}

#[test]
fn reload_from_disk_after_restart() {
    let mut d = Daemon::start(&[]);
    {
        let c = d.client();
        for i in 0..100u64 {
            c.shader()
                .put(&sk(i, 1, 0), format!("shader {i}").as_bytes())
                .unwrap();
            c.asset()
                .put(
                    &ak(&format!("tex/{i}.png"), 2),
                    format!("asset {i}").as_bytes(),
                )
                .unwrap();
        }
    }
    d.restart();
    let c = d.client();
    let st = c.shader().stats().unwrap();
    assert_eq!(st.entries, 100);
    assert_eq!(st.bytes_in_memory, 0, "nothing loaded into memory at start");
    for i in 0..100u64 {
        assert_eq!(
            c.shader().get(&sk(i, 1, 0)).unwrap().unwrap(),
            format!("shader {i}").as_bytes()
        );
        assert_eq!(
            c.asset()
                .get(&ak(&format!("tex/{i}.png"), 2))
                .unwrap()
                .unwrap(),
            format!("asset {i}").as_bytes()
        );
    }
}

#[test]
fn long_paths_invalidate_and_key_checks() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let a = c.asset();
    let long = format!(
        "content/{}/rock.png",
        "very_long_directory_name/".repeat(25)
    );
    assert!(long.len() > 500);
    for p in 0..3u8 {
        a.put(&ak(&long, p), format!("variant {p}").as_bytes())
            .unwrap();
    }
    a.put(&ak("other.png", 0), b"keep").unwrap();
    assert_eq!(a.get(&ak(&long, 1)).unwrap().unwrap(), &b"variant 1"[..]);
    assert_eq!(
        a.invalidate(&long).unwrap(),
        3,
        "all variants in one round trip"
    );
    for p in 0..3u8 {
        assert_eq!(a.get(&ak(&long, p)).unwrap(), None);
    }
    assert_eq!(a.invalidate(&long).unwrap(), 0);
    assert_eq!(a.get(&ak("other.png", 0)).unwrap().unwrap(), &b"keep"[..]);
    let err = a.put(&ak("", 0), b"x").unwrap_err();
    assert_eq!(err.daemon_code(), Some(ErrorCode::InvalidKey));
    let err = a.put(&ak(&"p".repeat(4097), 0), b"x").unwrap_err();
    assert_eq!(err.daemon_code(), Some(ErrorCode::InvalidKey));
    a.put(&ak(&"p".repeat(4096), 0), b"x")
        .expect("4 KiB paths are fine");
    c.ping().unwrap();
}

#[test]
fn path_keys_never_touch_the_file_system() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let outside = d.dir.path().join("escape.txt");
    for evil in [
        "../../escape.txt",
        "/etc/passwd",
        "../../../../../../tmp/x",
        "a/../../b",
    ] {
        c.asset().put(&ak(evil, 0), b"payload").unwrap();
        assert_eq!(
            c.asset().get(&ak(evil, 0)).unwrap().unwrap(),
            &b"payload"[..]
        );
    }
    assert!(!outside.exists());
    let names: Vec<String> = std::fs::read_dir(d.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        vec!["cache", "s.sock", "s.sock.lock"],
        "nothing created beside the cache"
    );
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    assert!(!passwd.contains("payload"), "/etc/passwd untouched");
}

#[test]
fn lru_eviction_is_counted_and_disk_stays_in_budget() {
    let d = Daemon::start(&["--shader-cache-max-mb", "1"]);
    let c = d.client();
    let s = c.shader();
    let blob = vec![9u8; 300 * 1024];
    for i in 0..3u64 {
        s.put(&sk(i, 0, 0), &blob).unwrap();
    }
    s.get(&sk(0, 0, 0)).unwrap().unwrap(); // 1 becomes the least recently used
    s.put(&sk(3, 0, 0), &blob).unwrap();
    let st = s.stats().unwrap();
    assert_eq!(st.evictions, 1);
    assert!(st.bytes_on_disk <= 1 << 20);
    assert_eq!(s.exists(&sk(1, 0, 0)).unwrap(), None, "LRU evicted");
    for i in [0u64, 2, 3] {
        assert!(s.exists(&sk(i, 0, 0)).unwrap().is_some());
    }
    assert_eq!(files_under(&d.cache_root.join("shader/blobs")), 3);
    // Bigger than the whole budget: not kept, and said so.
    assert!(!s.put(&sk(99, 0, 0), &vec![0u8; 2 << 20]).unwrap());
    assert_eq!(s.get(&sk(99, 0, 0)).unwrap(), None);
}

#[test]
fn budget_trims_at_start() {
    let mut d = Daemon::start(&[]);
    {
        let c = d.client();
        for i in 0..8u64 {
            c.asset()
                .put(&ak(&format!("a{i}"), 0), &vec![1u8; 256 * 1024])
                .unwrap();
        }
    }
    d.restart_with(&["--asset-cache-max-mb", "1"]);
    let c = d.client();
    let st = c.asset().stats().unwrap();
    assert_eq!(
        st.entries, 3,
        "256 KiB blobs: three fit in 1 MiB with their headers"
    );
    assert!(st.bytes_on_disk <= 1 << 20);
    assert_eq!(
        files_under(&d.cache_root.join("asset/blobs")),
        3,
        "trimmed files are deleted"
    );
    for i in 5..8u64 {
        assert!(
            c.asset()
                .exists(&ak(&format!("a{i}"), 0))
                .unwrap()
                .is_some(),
            "the newest survive"
        );
    }
}

#[test]
fn a_100_mib_blob_round_trips_in_bounded_daemon_memory() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let blob: Vec<u8> = (0..100usize << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let key = ak("huge/lightmap.bin", 4);
    assert!(c.asset().put(&key, &blob).unwrap());
    let got = c.asset().get(&key).unwrap().unwrap();
    assert!(got == blob, "byte-exact");
    let mut sink = Vec::new();
    assert_eq!(
        c.asset().get_to_writer(&key, &mut sink).unwrap(),
        Some(blob.len() as u64)
    );
    assert!(sink == blob);
    let peak_mib = status_kib(d.pid(), "VmHWM") / 1024;
    eprintln!("sparkd peak RSS during two 100 MiB transfers: {peak_mib} MiB");
    assert!(
        peak_mib < 64,
        "daemon peak RSS {peak_mib} MiB: a transfer must not hold the blob in memory"
    );
}

#[test]
fn killed_during_a_large_put_leaves_no_torn_entry() {
    let mut d = Daemon::start(&[]);
    let key = sk(0xfeed, 1, 1);
    {
        let c = d.client();
        c.shader().put(&key, b"old complete value").unwrap();
    }
    // Start a 200 MiB streamed put from another thread and SIGKILL the daemon once it is under way.
    let socket = d.socket.clone();
    let writer = std::thread::spawn(move || {
        let c = Client::connect(&socket).unwrap();
        let mut src = std::io::repeat(7u8);
        let r = c
            .shader()
            .put_from_reader(&key, &mut std::io::Read::by_ref(&mut src), 200 << 20);
        r.is_err()
    });
    let tmp_dir = d.cache_root.join("shader/tmp");
    assert!(
        eventually(Duration::from_secs(20), || std::fs::read_dir(&tmp_dir)
            .map(|r| r
                .flatten()
                .any(|e| e.metadata().map(|m| m.len() > (8 << 20)).unwrap_or(false)))
            .unwrap_or(false)),
        "the put was under way"
    );
    d.kill();
    assert!(writer.join().unwrap(), "the client saw the put fail");
    d.restart();
    let c = d.client();
    let got = c.shader().get(&key).unwrap().unwrap();
    assert_eq!(
        got,
        &b"old complete value"[..],
        "the torn put is never served; the old value stands"
    );
    // The sweep removes the dead run's temp file.
    assert!(
        eventually(Duration::from_secs(10), || files_under(&tmp_dir) == 0),
        "temp file cleaned"
    );
}

#[test]
fn hot_key_readers_while_another_client_puts() {
    let d = Arc::new(Daemon::start(&[]));
    d.client()
        .shader()
        .put(&sk(1, 1, 1), b"hot shader")
        .unwrap();
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let d = d.clone();
            std::thread::spawn(move || {
                let c = d.client();
                for _ in 0..500 {
                    assert_eq!(
                        c.shader().get(&sk(1, 1, 1)).unwrap().unwrap(),
                        &b"hot shader"[..]
                    );
                }
            })
        })
        .collect();
    let w = {
        let d = d.clone();
        std::thread::spawn(move || {
            let c = d.client();
            for i in 0..500u64 {
                c.shader()
                    .put(&sk(1000 + i, 0, 0), &vec![i as u8; 4096])
                    .unwrap();
            }
        })
    };
    for r in readers {
        r.join().unwrap();
    }
    w.join().unwrap();
    let st = d.client().shader().stats().unwrap();
    assert_eq!(st.entries, 501);
    assert_eq!(st.hits, 4000);
}

#[test]
fn plain_sparkd_uses_the_user_cache_dir() {
    let home = tempfile::tempdir().unwrap();
    let sock = home.path().join("run/s.sock");
    let mut child = std::process::Command::new(spark_testkit::sparkd_bin())
        .arg("--socket")
        .arg(&sock)
        .args(["--log-level", "warn"])
        .env("HOME", home.path())
        .env_remove("XDG_CACHE_HOME")
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || Client::connect(
        &sock
    )
    .is_ok()));
    let c = Client::connect(&sock).unwrap();
    c.shader().put(&sk(5, 5, 5), b"persisted").unwrap();
    c.shutdown().unwrap();
    child.wait().unwrap();
    let dir = home.path().join(".cache/spark/shader");
    assert!(
        dir.join("index.log").exists(),
        "default cache root is ~/.cache/spark"
    );
    // A small blob is appended to a pack (storage format v2), not given a file of its own.
    assert_eq!(files_under(&dir.join("packs")), 1);
    assert_eq!(files_under(&dir.join("blobs")), 0);
}

#[test]
fn memory_only_mode_writes_nothing() {
    let d = Daemon::start(&["--memory-only"]);
    let c = d.client();
    c.shader().put(&sk(1, 2, 3), b"in memory").unwrap();
    assert_eq!(
        c.shader().get(&sk(1, 2, 3)).unwrap().unwrap(),
        &b"in memory"[..]
    );
    let big = vec![3u8; 20 << 20];
    c.asset().put(&ak("big", 0), &big).unwrap();
    assert!(
        c.asset().get(&ak("big", 0)).unwrap().unwrap() == big,
        "streams from memory too"
    );
    assert!(!d.cache_root.exists(), "no cache directory");
    assert_eq!(c.shader().stats().unwrap().disk_budget, 0);
}

#[test]
fn get_into_reuses_one_buffer_for_streamed_inline_and_missing_blobs() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let s = c.shader();
    // 20 MiB streams (more than one frame); the second is shorter, so the buffer must shrink to it.
    let big: Vec<u8> = (0..20usize << 20).map(|i| (i % 251) as u8).collect();
    let shorter: Vec<u8> = (0..17usize << 20).map(|i| (i % 241) as u8).collect();
    assert!(s.put(&sk(1, 0, 0), &big).unwrap());
    assert!(s.put(&sk(2, 0, 0), &shorter).unwrap());
    assert!(s.put(&sk(3, 0, 0), b"small").unwrap());
    let mut buf = Vec::new();
    assert_eq!(s.get_into(&sk(1, 0, 0), &mut buf).unwrap(), Some(big.len()));
    assert!(buf == big);
    assert_eq!(
        s.get_into(&sk(2, 0, 0), &mut buf).unwrap(),
        Some(shorter.len())
    );
    assert!(buf == shorter);
    assert_eq!(s.get_into(&sk(3, 0, 0), &mut buf).unwrap(), Some(5));
    assert_eq!(buf, b"small");
    assert_eq!(s.get_into(&sk(4, 0, 0), &mut buf).unwrap(), None);
    // The connection is still in step.
    assert_eq!(s.get(&sk(3, 0, 0)).unwrap().unwrap(), &b"small"[..]);
}
