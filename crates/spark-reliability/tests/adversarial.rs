//! Adversarial connections against a real sparkd: oversize headers, truncated frames, garbage, unknown
//! services, a thousand stalled half-headers, and 256 concurrent clients whose every get is checked.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use spark_client::spark_proto::{ErrorCode, ErrorResponse, Frame, Message, msg, service};
use spark_client::{Client, ClientOptions};
use spark_reliability::content::{make_blob, verify_blob};
use spark_testkit::{Daemon, eventually, fd_count, status_kib};

/// Reads frames until EOF; every byte the daemon sends must be whole, valid frames.
fn frames_until_eof(s: &mut std::os::unix::net::UnixStream) -> Vec<Frame> {
    let mut out = Vec::new();
    loop {
        match read_frame(s) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return out,
            // A reset after the daemon closed on unread input is also a close.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("daemon sent a broken frame or never closed: {e}"),
        }
    }
}

#[test]
fn oversize_header_gets_an_error_and_a_close_without_allocating() {
    let d = Daemon::start(&[]);
    let pid = d.pid();
    let c = d.client();
    c.ping().unwrap();
    let hwm_before = status_kib(pid, "VmHWM");
    for (i, len) in [u32::MAX, u32::MAX - 7, (16 << 20) + 1, 1 << 31]
        .into_iter()
        .enumerate()
    {
        let mut s = raw_connect(&d.socket);
        let mut h = len.to_le_bytes().to_vec();
        h.extend_from_slice(&[(2 + i % 2) as u8, 0, 3, 0]);
        s.write_all(&h).unwrap();
        let frames = frames_until_eof(&mut s);
        assert_eq!(
            frames.len(),
            1,
            "exactly one reply, then the close (len {len})"
        );
        assert_eq!(frames[0].msg_type, msg::ERROR);
        let e = ErrorResponse::decode(&frames[0].payload).unwrap();
        assert_eq!(e.kind(), ErrorCode::TooLarge, "{e}");
    }
    let hwm_after = status_kib(pid, "VmHWM");
    eprintln!("oversize headers: daemon peak RSS {hwm_before} KiB before, {hwm_after} KiB after");
    assert!(
        hwm_after < hwm_before + 64 * 1024,
        "no allocation of the announced size: peak RSS went {hwm_before} -> {hwm_after} KiB"
    );
    c.ping().expect("daemon unaffected");
}

#[test]
fn truncated_frame_then_eof_is_closed_quietly() {
    let d = Daemon::start(&[]);
    for cut in [1usize, 7, 8, 9, 50] {
        let mut s = raw_connect(&d.socket);
        let f = Frame::new(service::CONTROL, 1, Bytes::from(vec![7u8; 100]))
            .unwrap()
            .to_bytes();
        s.write_all(&f[..cut]).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let frames = frames_until_eof(&mut s);
        assert!(
            frames.is_empty(),
            "no reply to half a frame (cut at {cut}): {frames:?}"
        );
    }
    let c = d.client();
    c.ping().unwrap();
    assert!(eventually(Duration::from_secs(10), || c
        .stats()
        .unwrap()
        .current_connections
        == 1));
}

#[test]
fn garbage_bytes_never_crash_the_daemon() {
    let d = Daemon::start(&[]);
    let mut rng = Rng::new(seed("garbage"));
    for round in 0..24 {
        let mut s = raw_connect(&d.socket);
        let data = if round % 2 == 0 {
            // Pure noise.
            {
                let n = 1 + rng.below(64 * 1024) as usize;
                rng.bytes(n)
            }
        } else {
            // Plausible headers with random routing and payloads: gets deeper into the services. Shutdown is
            // the one valid request left out, since it would (correctly) stop the daemon.
            let mut v = Vec::new();
            for _ in 0..rng.below(40) + 1 {
                let svc = [1u16, 2, 3, 4, 0x7777][rng.below(5) as usize];
                let mut ty = rng.below(16) as u16;
                if rng.below(8) == 0 {
                    ty = [msg::STREAM_CHUNK, msg::STREAM_END, msg::ERROR, 0x8001]
                        [rng.below(4) as usize];
                }
                if svc == service::CONTROL && ty == spark_client::spark_proto::control::SHUTDOWN {
                    ty = spark_client::spark_proto::control::PING;
                }
                let n = rng.below(300) as usize;
                let p = rng.bytes(n);
                v.extend_from_slice(&Frame::new(svc, ty, Bytes::from(p)).unwrap().to_bytes());
                if rng.below(10) == 0 {
                    let n = rng.below(16) as usize;
                    v.extend(rng.bytes(n));
                }
            }
            v
        };
        // The daemon may close before reading everything: a failed write is fine.
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&data);
            let _ = w.shutdown(Shutdown::Write);
        });
        let frames = frames_until_eof(&mut s);
        writer.join().unwrap();
        for f in &frames {
            if f.msg_type == msg::ERROR {
                ErrorResponse::decode(&f.payload).expect("error replies decode");
            }
        }
    }
    let c = d.client();
    c.ping().expect("daemon survived the garbage");
    assert!(eventually(Duration::from_secs(10), || c
        .stats()
        .unwrap()
        .current_connections
        == 1));
}

#[test]
fn unknown_service_gets_an_error_and_the_connection_lives_on() {
    let d = Daemon::start(&[]);
    let mut s = raw_connect(&d.socket);
    for svc in [0u16, 0x0006, 0x7777, 0xFFFF] {
        write_frame(
            &mut s,
            &Frame::new(svc, 1, Bytes::from_static(b"hello?")).unwrap(),
        )
        .unwrap();
        let f = read_frame(&mut s).unwrap().expect("a reply");
        assert_eq!((f.service, f.msg_type), (svc, msg::ERROR));
        assert_eq!(
            ErrorResponse::decode(&f.payload).unwrap().kind(),
            ErrorCode::UnknownService
        );
    }
    let ping = spark_client::spark_proto::control::Ping {
        data: Bytes::from_static(b"still here"),
    };
    write_frame(&mut s, &ping.to_frame(service::CONTROL).unwrap()).unwrap();
    let f = read_frame(&mut s).unwrap().unwrap();
    assert_eq!(&f.payload[..], b"still here");
}

fn ping_latencies(c: &Client, n: usize) -> Vec<Duration> {
    (0..n).map(|_| c.ping().expect("ping")).collect()
}

#[test]
fn a_thousand_stalled_half_headers_time_out_and_normal_clients_stay_fast() {
    const STALLED: usize = 1000;
    let limit = raise_fd_limit();
    if limit < (STALLED as u64) * 2 + 200 {
        eprintln!(
            "SKIP: fd limit {limit} is too low for {STALLED} stalled connections (need ~{})",
            STALLED * 2 + 200
        );
        return;
    }
    let d = Daemon::start(&["--idle-frame-timeout", "2"]);
    let pid = d.pid();
    let c = d.client();
    ping_latencies(&c, 200);
    let mut unloaded = ping_latencies(&c, 2000);
    let fds_before = fd_count(pid);

    let t0 = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut s = raw_connect(&d.socket);
        s.write_all(&[16, 0, 0]).unwrap(); // three of the eight header bytes
        stalled.push(s);
    }
    let opened = t0.elapsed();
    // Measure a normal client while the stalled connections are held (the daemon times them out 2 s after
    // their first byte), then while they are being timed out and closed.
    let (mut held, mut closing) = (Vec::new(), Vec::new());
    while t0.elapsed() < Duration::from_millis(1700) {
        held.extend(ping_latencies(&c, 50));
    }
    while t0.elapsed() < Duration::from_millis(3500) {
        closing.extend(ping_latencies(&c, 50));
    }
    let (u50, u99) = (
        percentile_us(&mut unloaded, 50.0),
        percentile_us(&mut unloaded, 99.0),
    );
    let (h50, h99) = (
        percentile_us(&mut held, 50.0),
        percentile_us(&mut held, 99.0),
    );
    let (c50, c99) = (
        percentile_us(&mut closing, 50.0),
        percentile_us(&mut closing, 99.0),
    );
    eprintln!(
        "stalled connections: opened {STALLED} in {opened:?}; ping p50/p99 unloaded {u50:.0}/{u99:.0} us; \
         {STALLED} stalled and held {h50:.0}/{h99:.0} us ({:.2}x at p99, {} samples); \
         while they time out {c50:.0}/{c99:.0} us ({:.2}x, {} samples)",
        h99 / u99.max(1.0),
        held.len(),
        c99 / u99.max(1.0),
        closing.len()
    );
    // Timing on a shared 2-core machine is noisy: only a 10x (plus 20 ms) regression fails.
    for (what, p99) in [("held", h99), ("timing out", c99)] {
        assert!(
            p99 <= 10.0 * u99 + 20_000.0,
            "p99 with stalled connections {what}: {p99:.0} us vs {u99:.0} us unloaded"
        );
    }

    // Every stalled connection is closed by the daemon, without a reply.
    let mut closed = 0;
    for s in &mut stalled {
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Ok(n) => panic!("a stalled connection got {n} bytes instead of a close"),
            Err(e) => panic!("a stalled connection was not closed: {e}"),
        }
    }
    let all_closed = t0.elapsed();
    eprintln!(
        "stalled connections: all {closed} closed by the daemon {all_closed:?} after they started"
    );
    assert_eq!(closed, STALLED);
    assert!(
        all_closed < Duration::from_secs(20),
        "2 s timeout took {all_closed:?}"
    );
    drop(stalled);
    assert!(
        eventually(Duration::from_secs(10), || fd_count(pid) <= fds_before),
        "daemon fds back to {fds_before}, now {}",
        fd_count(pid)
    );
    c.ping().unwrap();
}

/// 256 clients of their own, mixed get/put/invalidate on shader and asset keys. Each client owns 8 keys and
/// knows exactly what a get of them must return; it also reads other clients' keys, which must be some
/// version really put for that key.
fn mixed_load(secs: u64) {
    const CLIENTS: u64 = 256;
    const KEYS_EACH: u64 = 8;
    let d = Arc::new(Daemon::start(&[]));
    let base = seed("mixed load");
    let max_version: Arc<Vec<AtomicU64>> = Arc::new(
        (0..CLIENTS * KEYS_EACH)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let checked_gets = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..CLIENTS {
        let (d, mv, stop, errors, ops, checked) = (
            d.clone(),
            max_version.clone(),
            stop.clone(),
            errors.clone(),
            ops.clone(),
            checked_gets.clone(),
        );
        handles.push(
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut rng = Rng::new(base ^ t);
                    let opts = ClientOptions {
                        io_timeout: Some(Duration::from_secs(60)),
                        ..ClientOptions::default()
                    };
                    let c = d.client_with(&opts);
                    // What each owned key holds now: Some(version) or None.
                    let mut mine: Vec<Option<u64>> = vec![None; KEYS_EACH as usize];
                    let fail = |what: String| {
                        eprintln!("client {t}: {what}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let i = rng.below(KEYS_EACH) as usize;
                        let k = t * KEYS_EACH + i as u64;
                        let r = rng.below(100);
                        if r < 35 {
                            // Put a new version.
                            let v = mv[k as usize].fetch_add(1, Ordering::Relaxed) + 1;
                            let len = if rng.below(50) == 0 {
                                256 << 10
                            } else {
                                40 + rng.below(8192) as usize
                            };
                            match put(&c, k, &make_blob(k, v, len)) {
                                Ok(true) => mine[i] = Some(v),
                                Ok(false) => fail(format!("put of key {k} not stored")),
                                Err(e) => fail(format!("put of key {k}: {e}")),
                            }
                        } else if r < 70 {
                            // Get an owned key: exactly the last version put, or a miss after an invalidate.
                            match get(&c, k) {
                                Ok(got) => {
                                    let got_v = got
                                        .as_ref()
                                        .map(|b| verify_blob(b).map(|id| (id.key, id.version)));
                                    let want = mine[i].map(|v| Ok((k, v)));
                                    if got_v != want {
                                        fail(format!(
                                            "get of own key {k}: got {got_v:?}, want {want:?}"
                                        ));
                                    }
                                    checked.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => fail(format!("get of key {k}: {e}")),
                            }
                        } else if r < 90 {
                            // Get someone else's key: whatever comes back is a real version of that key.
                            let k = rng.below(CLIENTS * KEYS_EACH);
                            let upper = mv[k as usize].load(Ordering::Relaxed);
                            match get(&c, k) {
                                Ok(None) => {}
                                Ok(Some(b)) => match verify_blob(&b) {
                                    Ok(id) if id.key == k && id.version >= 1 => {
                                        let now = mv[k as usize].load(Ordering::Relaxed);
                                        if id.version > now.max(upper) {
                                            fail(format!(
                                                "key {k}: version {} was never put",
                                                id.version
                                            ));
                                        }
                                        checked.fetch_add(1, Ordering::Relaxed);
                                    }
                                    other => fail(format!(
                                        "get of key {k} returned a wrong blob: {other:?}"
                                    )),
                                },
                                Err(e) => fail(format!("get of key {k}: {e}")),
                            }
                        } else if is_asset(k) {
                            match c.asset().invalidate(&asset_path(k)) {
                                Ok(n) if n as u64 == mine[i].is_some() as u64 => mine[i] = None,
                                Ok(n) => fail(format!(
                                    "invalidate of key {k} dropped {n}, had {:?}",
                                    mine[i]
                                )),
                                Err(e) => fail(format!("invalidate of key {k}: {e}")),
                            }
                        } else {
                            let want = mine[i].map(|v| make_blob(k, v, 0).len() as u64);
                            match c.shader().exists(&shader_key(k)) {
                                // Exists reports the size; owned keys' sizes vary, so only presence is checked.
                                Ok(got) if got.is_some() == want.is_some() => {}
                                Ok(got) => {
                                    fail(format!("exists of key {k}: {got:?}, had {:?}", mine[i]))
                                }
                                Err(e) => fail(format!("exists of key {k}: {e}")),
                            }
                        }
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .unwrap(),
        );
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) && errors.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("client thread");
    }
    let (n, e, g) = (
        ops.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        checked_gets.load(Ordering::Relaxed),
    );
    eprintln!(
        "mixed load: {CLIENTS} clients, {n} ops in {:?} ({:.0} ops/s), {g} gets verified, {e} errors",
        t0.elapsed(),
        n as f64 / t0.elapsed().as_secs_f64()
    );
    assert_eq!(e, 0, "zero errors");
    assert!(g > 0, "some gets were verified");
}

#[test]
fn mixed_256_clients_short() {
    mixed_load(5);
}

/// The 60-second variant: `cargo test -p spark-reliability --test adversarial -- --ignored`.
#[test]
#[ignore]
fn mixed_256_clients_60s() {
    mixed_load(60);
}
