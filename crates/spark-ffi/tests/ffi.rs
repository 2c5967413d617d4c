//! The C ABI called as C would call it, against a real daemon. The connection is process-wide, so the
//! scenario runs as one sequential test.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr::{null, null_mut};

use spark_testkit::{Daemon, sparkd_bin};
use sparkdaemon::*;

fn last_error() -> String {
    // SAFETY: spark_last_error always returns a valid NUL-terminated string owned by this thread.
    unsafe { CStr::from_ptr(spark_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn cstr(s: &std::path::Path) -> CString {
    CString::new(s.to_str().unwrap()).unwrap()
}

fn empty_buffer() -> SparkBuffer {
    SparkBuffer {
        data: null_mut(),
        len: 0,
    }
}

fn buffer_bytes(b: &SparkBuffer) -> Vec<u8> {
    // SAFETY: a buffer filled by the library: `len` bytes at `data`.
    unsafe { std::slice::from_raw_parts(b.data, b.len) }.to_vec()
}

fn default_config() -> SparkConfig {
    let mut c = std::mem::MaybeUninit::<SparkConfig>::uninit();
    // SAFETY: spark_config_default writes a whole SparkConfig through a valid pointer.
    let st = unsafe { spark_config_default(c.as_mut_ptr()) };
    assert_eq!(st, SparkStatus::Ok);
    // SAFETY: initialised just above.
    unsafe { c.assume_init() }
}

#[test]
fn c_abi_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    // One scenario in phases: the connection is process-wide, so they must run in this order.
    disabled_and_absent(tmp.path());
    let d = Daemon::start(&["--memory-only"]);
    connect_and_control(&d);
    daemon_blobs();
    asset_pipeline(tmp.path());
    caller_mistakes();
    tiered_caches(tmp.path());
    drop(d);
    auto_spawn(tmp.path());
}

/// Disabled by default, and an absent socket: NOT_CONNECTED everywhere, nothing created.
fn disabled_and_absent(tmp: &Path) {
    // SAFETY: every pointer passed below is NULL or points to live, NUL-terminated or correctly sized data
    // owned by this function, and every returned buffer is freed exactly once.
    unsafe {
        // Disabled by default: a no-op, and daemon calls say NOT_CONNECTED with a message.
        let cfg = default_config();
        assert_eq!(spark_init(&cfg), SparkStatus::NotConnected);
        assert!(last_error().contains("disabled"), "{}", last_error());
        assert!(!spark_is_connected());
        let mut buf = empty_buffer();
        assert_eq!(
            spark_shader_get(1, 2, 3, &mut buf),
            SparkStatus::NotConnected
        );
        assert!(buf.data.is_null());
        spark_shutdown();
        spark_shutdown();

        // try_connect to an absent socket: NOT_CONNECTED, nothing created.
        let absent = cstr(&tmp.join("absent.sock"));
        assert_eq!(
            spark_try_connect(absent.as_ptr()),
            SparkStatus::NotConnected
        );
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    }
}

/// Connect, ping, stats.
fn connect_and_control(d: &Daemon) {
    // SAFETY: every pointer passed below is NULL or points to live, NUL-terminated or correctly sized data
    // owned by this function, and every returned buffer is freed exactly once.
    unsafe {
        let sock = cstr(&d.socket);
        assert_eq!(
            spark_connect(sock.as_ptr()),
            SparkStatus::Ok,
            "{}",
            last_error()
        );
        assert!(spark_is_connected());
        let mut rtt = 0u64;
        assert_eq!(spark_ping(&mut rtt), SparkStatus::Ok);
        assert_eq!(spark_ping(null_mut()), SparkStatus::Ok);
        let mut st = SparkDaemonStats::default();
        assert_eq!(spark_stats(&mut st), SparkStatus::Ok);
        assert_eq!(st.daemon_pid, d.pid());
        assert_eq!(st.protocol_version, 1);
        assert!(st.service_count >= 3 && st.current_connections >= 1);
    }
}

/// Shader and asset blobs through the daemon.
fn daemon_blobs() {
    // SAFETY: every pointer passed below is NULL or points to live, NUL-terminated or correctly sized data
    // owned by this function, and every returned buffer is freed exactly once.
    unsafe {
        let mut buf = empty_buffer();
        // Shader blobs.
        let blob = b"compiled spirv";
        assert_eq!(spark_shader_get(42, 1, 0, &mut buf), SparkStatus::Miss);
        assert_eq!(
            spark_shader_put(42, 1, 0, blob.as_ptr(), blob.len()),
            SparkStatus::Ok
        );
        let mut size = 0u64;
        assert_eq!(spark_shader_exists(42, 1, 0, &mut size), SparkStatus::Ok);
        assert_eq!(size, blob.len() as u64);
        assert_eq!(spark_shader_exists(42, 1, 1, null_mut()), SparkStatus::Miss);
        assert_eq!(spark_shader_get(42, 1, 0, &mut buf), SparkStatus::Ok);
        assert_eq!(buffer_bytes(&buf), blob);
        spark_buffer_free(&mut buf);
        assert!(buf.data.is_null() && buf.len == 0);
        spark_buffer_free(&mut buf);
        spark_buffer_free(null_mut());
        // Empty blobs round-trip too.
        assert_eq!(spark_shader_put(43, 1, 0, null(), 0), SparkStatus::Ok);
        assert_eq!(spark_shader_get(43, 1, 0, &mut buf), SparkStatus::Ok);
        assert_eq!(buf.len, 0);
        spark_buffer_free(&mut buf);

        // Assets.
        let path = CString::new("textures/rock.png").unwrap();
        for platform in 0..3u8 {
            let data = [platform; 100];
            assert_eq!(
                spark_asset_put(path.as_ptr(), platform, data.as_ptr(), data.len()),
                SparkStatus::Ok
            );
        }
        assert_eq!(spark_asset_get(path.as_ptr(), 2, &mut buf), SparkStatus::Ok);
        assert_eq!(buffer_bytes(&buf), vec![2u8; 100]);
        spark_buffer_free(&mut buf);
        let mut dropped = 0u32;
        assert_eq!(
            spark_asset_invalidate(path.as_ptr(), &mut dropped),
            SparkStatus::Ok
        );
        assert_eq!(dropped, 3);
        assert_eq!(
            spark_asset_get(path.as_ptr(), 2, &mut buf),
            SparkStatus::Miss
        );
    }
}

/// Caller mistakes are reported, not crashes.
fn caller_mistakes() {
    // SAFETY: every pointer passed below is NULL or points to live, NUL-terminated or correctly sized data
    // owned by this function, and every returned buffer is freed exactly once.
    unsafe {
        let mut buf = empty_buffer();
        // Caller mistakes are reported, not crashes.
        assert_eq!(
            spark_asset_get(null(), 0, &mut buf),
            SparkStatus::InvalidArgument
        );
        assert!(last_error().contains("path is NULL"), "{}", last_error());
        assert_eq!(
            spark_shader_get(1, 1, 1, null_mut()),
            SparkStatus::InvalidArgument
        );
        assert_eq!(
            spark_shader_put(1, 1, 1, null(), 5),
            SparkStatus::InvalidArgument
        );
        let bad = [0xffu8, 0xfe, 0];
        assert_eq!(
            spark_asset_put(bad.as_ptr().cast(), 0, null(), 0),
            SparkStatus::InvalidArgument
        );
        assert!(last_error().contains("UTF-8"));
        assert!(spark_shader_cache_open(null(), true).is_null());
        assert_eq!(
            spark_shader_cache_lookup(null(), 1, 1, 1, null_mut()),
            SparkStatus::InvalidArgument
        );
    }
}

/// Two tiered caches with separate directories share through the daemon; then detach and shut down.
fn tiered_caches(tmp: &Path) {
    // SAFETY: every pointer passed below is NULL or points to live, NUL-terminated or correctly sized data
    // owned by this function, and every returned buffer is freed exactly once.
    unsafe {
        // Tiered shader cache: two caches with separate directories share through the daemon.
        let dir_a = cstr(&tmp.join("a"));
        let dir_b = cstr(&tmp.join("b"));
        let a = spark_shader_cache_open(dir_a.as_ptr(), true);
        let b = spark_shader_cache_open(dir_b.as_ptr(), true);
        assert!(!a.is_null() && !b.is_null(), "{}", last_error());
        let bytecode = [1u8, 2, 3, 4, 5];
        let entry = CString::new("ps_main").unwrap();
        let warn = CString::new("warning: precision").unwrap();
        let desc = SparkShaderDesc {
            bytecode: bytecode.as_ptr(),
            bytecode_len: bytecode.len(),
            entry_point: entry.as_ptr(),
            errors: null(),
            warnings: warn.as_ptr(),
            reflection: SparkShaderReflection {
                uniform_count: 4,
                texture_count: 3,
                sampler_count: 2,
                storage_buffer_count: 1,
            },
        };
        let mut out = std::mem::zeroed::<SparkCompiledShader>();
        assert_eq!(
            spark_shader_cache_lookup(a, 7, 1, 4, &mut out),
            SparkStatus::Miss
        );
        spark_compiled_shader_free(&mut out);
        assert_eq!(spark_shader_cache_store(a, 7, 1, 4, &desc), SparkStatus::Ok);
        assert_eq!(
            spark_shader_cache_lookup(b, 7, 1, 4, &mut out),
            SparkStatus::Ok
        );
        assert_eq!(buffer_bytes(&out.bytecode), bytecode);
        assert_eq!(CStr::from_ptr(out.entry_point).to_str().unwrap(), "ps_main");
        assert_eq!(CStr::from_ptr(out.errors).to_str().unwrap(), "");
        assert_eq!(
            CStr::from_ptr(out.warnings).to_str().unwrap(),
            "warning: precision"
        );
        let r = out.reflection;
        assert_eq!(
            (
                r.uniform_count,
                r.texture_count,
                r.sampler_count,
                r.storage_buffer_count
            ),
            (4, 3, 2, 1)
        );
        spark_compiled_shader_free(&mut out);
        assert!(out.entry_point.is_null() && out.bytecode.data.is_null());
        spark_compiled_shader_free(&mut out);
        let mut cs = SparkShaderCacheStats::default();
        assert_eq!(spark_shader_cache_stats(b, &mut cs), SparkStatus::Ok);
        assert_eq!((cs.daemon_hits, cs.local_hits, cs.misses), (1, 0, 0));
        assert_eq!(spark_shader_cache_stats(a, &mut cs), SparkStatus::Ok);
        assert_eq!((cs.daemon_misses, cs.misses), (1, 1));

        // Detach (close) before shutting the connection down; a no-daemon cache keeps working after.
        spark_shader_cache_close(b);
        spark_shader_cache_close(null_mut());
        spark_shutdown();
        assert_eq!(spark_ping(null_mut()), SparkStatus::NotConnected);
        assert_eq!(
            spark_shader_cache_lookup(a, 7, 1, 4, &mut out),
            SparkStatus::Ok,
            "local hit"
        );
        spark_compiled_shader_free(&mut out);
        spark_shader_cache_close(a);
    }
}

/// Auto-spawn through the C ABI.
fn auto_spawn(tmp: &Path) {
    // SAFETY: every pointer passed below is NULL or points to live, NUL-terminated or correctly sized data
    // owned by this function, and every returned buffer is freed exactly once.
    unsafe {
        let mut st = SparkDaemonStats::default();
        // Auto-spawn through the C ABI.
        let spawn_sock = cstr(&tmp.join("spawned/s.sock"));
        let missing = cstr(&tmp.join("no-sparkd"));
        assert_eq!(
            spark_set_auto_spawn(true, missing.as_ptr(), 60_000),
            SparkStatus::Ok
        );
        assert_eq!(
            spark_connect(spawn_sock.as_ptr()),
            SparkStatus::NotConnected
        );
        let bin = cstr(&sparkd_bin());
        let args = CString::new("--memory-only --idle-timeout 60 --log-level warn").unwrap();
        let cfg = SparkConfig {
            enabled: true,
            socket_path: spawn_sock.as_ptr(),
            auto_spawn: true,
            daemon_bin: bin.as_ptr(),
            daemon_args: args.as_ptr(),
            spawn_timeout_ms: 30_000,
            sponsor: false,
            client_name: c"ffi-test".as_ptr(),
        };
        spark_shutdown();
        assert_eq!(spark_init(&cfg), SparkStatus::Ok, "{}", last_error());
        assert_eq!(spark_init(&cfg), SparkStatus::Ok, "idempotent");
        assert_eq!(spark_stats(&mut st), SparkStatus::Ok);
        let spawned_pid = st.daemon_pid;
        assert_ne!(spawned_pid, std::process::id());
        spark_shutdown();
        let c = spark_client::Client::connect(tmp.join("spawned/s.sock")).unwrap();
        assert_eq!(c.hello().daemon_pid, spawned_pid);
        c.shutdown().unwrap();
        assert_eq!(spark_set_auto_spawn(false, null(), 0), SparkStatus::Ok);
    }
}

/// The importer: counts its calls through `user_data` (an `AtomicU32`) and writes the variant in two parts.
unsafe extern "C" fn count_and_import(
    user_data: *mut std::ffi::c_void,
    sink: *mut SparkImportSink,
) -> i32 {
    // SAFETY: the test passes a pointer to a live AtomicU32 as user_data.
    let calls = unsafe { &*(user_data as *const std::sync::atomic::AtomicU32) };
    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: `sink` is the one the library passed; the data are static.
    unsafe {
        assert_eq!(
            spark_import_sink_write(sink, b"imported ".as_ptr(), 9),
            SparkStatus::Ok
        );
        assert_eq!(
            spark_import_sink_write(sink, b"mesh".as_ptr(), 4),
            SparkStatus::Ok
        );
    }
    0
}

unsafe extern "C" fn failing_import(_: *mut std::ffi::c_void, _: *mut SparkImportSink) -> i32 {
    7
}

/// get_or_import runs the importer once and then serves the cached variant; declare_deps watches files.
fn asset_pipeline(tmp: &Path) {
    let src = tmp.join("hero.fbx");
    let dep = tmp.join("hero.skel");
    std::fs::write(&src, b"mesh").unwrap();
    std::fs::write(&dep, b"skel").unwrap();
    let (src_c, dep_c, importer) = (cstr(&src), cstr(&dep), CString::new("fbx").unwrap());
    let deps = [dep_c.as_ptr()];
    let calls = std::sync::atomic::AtomicU32::new(0);
    // SAFETY: every pointer is NULL or points to live data owned by this function; buffers are freed once.
    unsafe {
        for expect_ran in [true, false] {
            let (mut buf, mut ran) = (empty_buffer(), !expect_ran);
            let st = spark_asset_get_or_import(
                src_c.as_ptr(),
                2,
                importer.as_ptr(),
                1,
                deps.as_ptr(),
                deps.len(),
                Some(count_and_import),
                &calls as *const _ as *mut std::ffi::c_void,
                &mut ran,
                &mut buf,
            );
            assert_eq!(st, SparkStatus::Ok, "{}", last_error());
            assert_eq!(ran, expect_ran);
            assert_eq!(buffer_bytes(&buf), b"imported mesh");
            spark_buffer_free(&mut buf);
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let mut buf = empty_buffer();
        let st = spark_asset_get_or_import(
            src_c.as_ptr(),
            3,
            importer.as_ptr(),
            1,
            null(),
            0,
            Some(failing_import),
            null_mut(),
            null_mut(),
            &mut buf,
        );
        assert_eq!(st, SparkStatus::Io);
        assert!(
            last_error().contains("importer returned 7"),
            "{}",
            last_error()
        );
        let path = CString::new("textures/hero").unwrap();
        let mut watched = 0u32;
        assert_eq!(
            spark_asset_declare_deps(path.as_ptr(), 1, deps.as_ptr(), deps.len(), &mut watched),
            SparkStatus::Ok
        );
        assert_eq!(watched, 1);
    }
}
