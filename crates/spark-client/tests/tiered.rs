//! The tiered shader cache: codec, daemon-first lookups with local fall-through, and the no-daemon case.

use std::path::Path;
use std::sync::Arc;

use spark_client::{
    CodecError, CompiledShader, DaemonConfig, DaemonConnection, LocalShaderCache, ShaderKey,
    ShaderReflection, TieredShaderCache, TieredStats,
};
use spark_testkit::Daemon;

fn shader(n: u64) -> CompiledShader {
    CompiledShader {
        bytecode: (0..64 + n).map(|i| (i * 31 + n) as u8).collect(),
        entry_point: format!("main_{n}"),
        errors: String::new(),
        warnings: format!("warning: unused variable 'x{n}' — ünïcode kept"),
        reflection: ShaderReflection {
            uniform_count: 3 + n as u32,
            texture_count: 2,
            sampler_count: 1,
            storage_buffer_count: n as u32 % 2,
        },
    }
}

fn key(n: u64) -> ShaderKey {
    ShaderKey {
        source_hash: 0xabcd_0000 + n,
        target: 2,
        stage: (n % 3) as u8,
    }
}

fn connection(d: &Daemon) -> Arc<DaemonConnection> {
    let c = Arc::new(DaemonConnection::new());
    assert!(c.init(DaemonConfig::for_socket(&d.socket)));
    c
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn codec_round_trips_and_documents_its_layout() {
    let s = shader(5);
    let b = s.encode().unwrap();
    assert_eq!(CompiledShader::decode(&b).unwrap(), s);
    // The layout in docs/engine.md, byte for byte.
    let tiny = CompiledShader {
        bytecode: vec![0xde, 0xad],
        entry_point: "vs".into(),
        errors: "e".into(),
        warnings: String::new(),
        reflection: ShaderReflection {
            uniform_count: 1,
            texture_count: 2,
            sampler_count: 3,
            storage_buffer_count: 4,
        },
    };
    let expected: Vec<u8> = [
        &b"SPSH"[..],
        &[1, 0],
        &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0],
        &[2, 0, 0, 0, b'v', b's'],
        &[1, 0, 0, 0, b'e'],
        &[0, 0, 0, 0],
        &[2, 0, 0, 0, 0xde, 0xad],
    ]
    .concat();
    assert_eq!(tiny.encode().unwrap(), expected);
    assert_eq!(CompiledShader::decode(&expected).unwrap(), tiny);
    assert_eq!(
        CompiledShader::decode(&CompiledShader::default().encode().unwrap()).unwrap(),
        CompiledShader::default()
    );
}

#[test]
fn codec_rejects_unknown_versions_and_damage() {
    let good = shader(1).encode().unwrap();
    for v in [0u16, 2, 0xffff] {
        let mut b = good.clone();
        b[4..6].copy_from_slice(&v.to_le_bytes());
        assert_eq!(
            CompiledShader::decode(&b),
            Err(CodecError::UnsupportedVersion(v))
        );
    }
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert_eq!(
        CompiledShader::decode(&bad_magic),
        Err(CodecError::BadMagic)
    );
    assert_eq!(CompiledShader::decode(b"SP"), Err(CodecError::BadMagic));
    for cut in [6, 10, 22, 25, good.len() - 1] {
        assert_eq!(
            CompiledShader::decode(&good[..cut]),
            Err(CodecError::Truncated),
            "cut at {cut}"
        );
    }
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        CompiledShader::decode(&long),
        Err(CodecError::TrailingBytes)
    );
    let mut bad_utf8 = shader(1);
    bad_utf8.entry_point = "ab".into();
    let mut b = bad_utf8.encode().unwrap();
    b[26] = 0xff;
    assert_eq!(CompiledShader::decode(&b), Err(CodecError::InvalidUtf8));
}

#[test]
fn a_shader_stored_by_one_cache_is_a_daemon_hit_for_another_with_metadata_intact() {
    let d = Daemon::start(&["--memory-only"]);
    let tmp = tempfile::tempdir().unwrap();
    let a = TieredShaderCache::open(tmp.path().join("a"))
        .unwrap()
        .with_daemon(connection(&d));
    let b = TieredShaderCache::open(tmp.path().join("b"))
        .unwrap()
        .with_daemon(connection(&d));
    for n in 0..10 {
        assert_eq!(a.lookup(&key(n)), None);
        a.store(&key(n), &shader(n)).unwrap();
    }
    assert_eq!(
        a.stats(),
        TieredStats {
            daemon_misses: 10,
            misses: 10,
            ..Default::default()
        }
    );
    assert_eq!(listing(a.local().dir()).len(), 10, "stored locally too");
    for n in 0..10 {
        assert_eq!(
            b.lookup(&key(n)),
            Some(shader(n)),
            "bytecode, entry point, text and counters intact"
        );
    }
    assert_eq!(
        b.stats(),
        TieredStats {
            daemon_hits: 10,
            ..Default::default()
        }
    );
    assert!(listing(b.local().dir()).is_empty());
}

#[test]
fn a_daemon_miss_falls_through_to_local_disk_and_the_local_hit_is_pushed_to_the_daemon() {
    let d = Daemon::start(&["--memory-only"]);
    let tmp = tempfile::tempdir().unwrap();
    let conn = connection(&d);
    // Compiled earlier, while no daemon was attached: only on local disk.
    let a = TieredShaderCache::open(tmp.path().join("a")).unwrap();
    a.store(&key(1), &shader(1)).unwrap();
    a.set_daemon(Some(conn.clone()));
    assert_eq!(a.lookup(&key(1)), Some(shader(1)));
    assert_eq!(
        a.stats(),
        TieredStats {
            daemon_misses: 1,
            local_hits: 1,
            ..Default::default()
        }
    );
    // The push made it a daemon hit for everyone else.
    let b = TieredShaderCache::open(tmp.path().join("b"))
        .unwrap()
        .with_daemon(conn);
    assert_eq!(b.lookup(&key(1)), Some(shader(1)));
    assert_eq!(b.stats().daemon_hits, 1);
    assert_eq!(a.lookup(&key(1)), Some(shader(1)));
    assert_eq!(a.stats().daemon_hits, 1);
}

#[test]
fn undecodable_daemon_blobs_and_unknown_versions_fall_through_and_get_repaired() {
    let d = Daemon::start(&["--memory-only"]);
    let tmp = tempfile::tempdir().unwrap();
    let c = d.client();
    let mut v2 = shader(2).encode().unwrap();
    v2[4] = 2;
    c.shader().put(&key(2), &v2).unwrap();
    c.shader().put(&key(3), b"garbage").unwrap();
    let cache = TieredShaderCache::open(tmp.path()).unwrap();
    cache.store(&key(2), &shader(2)).unwrap();
    cache.set_daemon(Some(connection(&d)));
    assert_eq!(
        cache.lookup(&key(2)),
        Some(shader(2)),
        "a version-2 blob is rejected; local copy used"
    );
    assert_eq!(
        cache.lookup(&key(3)),
        None,
        "garbage is a miss, not an error"
    );
    assert_eq!(
        cache.stats(),
        TieredStats {
            daemon_errors: 2,
            local_hits: 1,
            misses: 1,
            ..Default::default()
        }
    );
    // The local hit replaced the daemon's unreadable copy.
    let fixed = c.shader().get(&key(2)).unwrap().unwrap();
    assert_eq!(CompiledShader::decode(&fixed).unwrap(), shader(2));
}

/// The same operations, in the same order, on a plain local cache and on tiered caches without a daemon:
/// identical answers and identical files.
#[test]
fn without_a_daemon_it_behaves_exactly_like_the_plain_local_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = LocalShaderCache::open(tmp.path().join("plain")).unwrap();
    let none = TieredShaderCache::open(tmp.path().join("none")).unwrap();
    // Attached to a daemon that is not there (absent socket), and to one that is disabled.
    let absent = Arc::new(DaemonConnection::new());
    absent.init(DaemonConfig::for_socket(tmp.path().join("nobody.sock")));
    let dead = TieredShaderCache::open(tmp.path().join("dead"))
        .unwrap()
        .with_daemon(absent);
    let disabled_conn = Arc::new(DaemonConnection::new());
    disabled_conn.init(DaemonConfig::from_vars(|_| None));
    let disabled = TieredShaderCache::open(tmp.path().join("disabled"))
        .unwrap()
        .with_daemon(disabled_conn);

    let ops: Vec<(bool, u64)> = (0..40).map(|i| (i % 3 == 0, (i * 7) % 11)).collect();
    let mut plain_results = Vec::new();
    for &(store, n) in &ops {
        if store {
            plain.store(&key(n), &shader(n + 100)).unwrap();
        }
        plain_results.push(plain.load(&key(n)));
    }
    for cache in [&none, &dead, &disabled] {
        let mut results = Vec::new();
        for &(store, n) in &ops {
            if store {
                cache.store(&key(n), &shader(n + 100)).unwrap();
            }
            results.push(cache.lookup(&key(n)));
        }
        assert_eq!(results, plain_results);
        assert_eq!(
            listing(cache.local().dir()),
            listing(plain.dir()),
            "same files, same bytes"
        );
        let s = cache.stats();
        assert_eq!((s.daemon_hits, s.daemon_misses, s.daemon_errors), (0, 0, 0));
        let hits = plain_results.iter().filter(|r| r.is_some()).count() as u64;
        assert_eq!((s.local_hits, s.misses), (hits, ops.len() as u64 - hits));
    }
}

#[test]
fn a_daemon_dying_mid_session_degrades_lookups_to_the_local_disk() {
    let mut d = Daemon::start(&["--memory-only"]);
    let tmp = tempfile::tempdir().unwrap();
    let cache = TieredShaderCache::open(tmp.path())
        .unwrap()
        .with_daemon(connection(&d));
    cache.store(&key(1), &shader(1)).unwrap();
    d.kill();
    assert_eq!(cache.lookup(&key(1)), Some(shader(1)));
    assert_eq!(cache.lookup(&key(2)), None);
    cache
        .store(&key(2), &shader(2))
        .expect("local store still works");
    assert_eq!(cache.lookup(&key(2)), Some(shader(2)));
    let s = cache.stats();
    assert_eq!((s.local_hits, s.misses, s.daemon_hits), (2, 1, 0));
    assert_eq!(
        s.daemon_errors, 1,
        "only the call that found the connection broken counts: {s:?}"
    );
}

#[test]
fn many_threads_share_one_cache() {
    let d = Daemon::start(&["--memory-only"]);
    let tmp = tempfile::tempdir().unwrap();
    let cache = Arc::new(
        TieredShaderCache::open(tmp.path())
            .unwrap()
            .with_daemon(connection(&d)),
    );
    let hs: Vec<_> = (0..8u64)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let n = t * 100 + i;
                    if cache.lookup(&key(n)).is_none() {
                        cache.store(&key(n), &shader(n)).unwrap();
                    }
                    assert_eq!(cache.lookup(&key(n)), Some(shader(n)));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let s = cache.stats();
    assert_eq!(s.daemon_hits, 200);
    assert_eq!(s.misses, 200);
}
