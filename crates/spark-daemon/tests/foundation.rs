//! Loopback tests of the foundation against a real sparkd on a temporary socket.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spark_client::spark_proto::control::{Ping, Pong};
use spark_client::spark_proto::{ErrorCode, Frame, Message, service};
use spark_client::{Client, Error, ShaderKey};
use spark_testkit::{Daemon, eventually, fd_count, thread_count};

#[test]
fn ping_version_stats_and_hello() {
    let d = Daemon::start(&[]);
    let c = d.client();
    c.ping().unwrap();
    let v = c.version().unwrap();
    assert_eq!(v.protocol_version, 1);
    assert_eq!(v.daemon_version, env!("CARGO_PKG_VERSION"));
    let h = c.hello();
    assert_eq!(h.daemon_pid, d.pid());
    assert_eq!(h.services, vec![1, 2, 3, 4, 5, 7]);
    assert!(h.capabilities.iter().any(|c| c == "stream"));
    let mut sorted = h.capabilities.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(h.capabilities, sorted, "capabilities sorted, no duplicates");
    let s = c.stats().unwrap();
    assert_eq!(s.services, vec![1, 2, 3, 4, 5, 7], "sorted service ids");
    assert_eq!(s.protocol_version, 1);
    assert!(s.current_connections >= 1);
    assert!(s.total_connections >= 1);
    let c2 = d.client();
    assert_eq!(
        c2.stats().unwrap().current_connections,
        s.current_connections + 1
    );
}

#[test]
fn socket_dir_and_file_modes() {
    let d = Daemon::start(&[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket is 0600");
    // A fresh, missing directory is created 0700.
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("fresh/dir/s.sock");
    let mut child = std::process::Command::new(spark_testkit::sparkd_bin())
        .arg("--socket")
        .arg(&sock)
        .arg("--memory-only")
        .args(["--log-level", "warn"])
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || Client::connect(
        &sock
    )
    .is_ok()));
    let dmode = std::fs::metadata(sock.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);
    Client::connect(&sock).unwrap().shutdown().unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn unknown_service_and_message_get_errors_and_connection_survives() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let err = c
        .request(&Frame::new(0x7777, 1, Bytes::new()).unwrap())
        .unwrap_err();
    assert_eq!(err.daemon_code(), Some(ErrorCode::UnknownService), "{err}");
    let err = c
        .request(&Frame::new(service::CONTROL, 0x0042, Bytes::new()).unwrap())
        .unwrap_err();
    assert_eq!(err.daemon_code(), Some(ErrorCode::UnknownMessage), "{err}");
    let err = c
        .request(&Frame::new(service::SHADER, 0x0123, Bytes::new()).unwrap())
        .unwrap_err();
    assert_eq!(err.daemon_code(), Some(ErrorCode::UnknownMessage));
    // A malformed payload for a known message.
    let err = c
        .request(&Frame::new(service::SHADER, 0x0001, Bytes::from_static(&[1, 2])).unwrap())
        .unwrap_err();
    assert_eq!(err.daemon_code(), Some(ErrorCode::Malformed));
    let Error::Daemon(e) = &err else { panic!() };
    assert!(
        e.message.contains("malformed"),
        "message says what went wrong: {}",
        e.message
    );
    c.ping().expect("connection still usable");
}

#[test]
fn unsupported_protocol_version_is_refused_clearly() {
    use spark_client::spark_proto::control::Hello;
    let d = Daemon::start(&[]);
    let c = d.client();
    let hello = Hello {
        protocol_version: 99,
        flags: 0,
        pid: 1,
        client_name: "future".into(),
    };
    let err = c
        .request(&hello.to_frame(service::CONTROL).unwrap())
        .unwrap_err();
    let Error::Daemon(e) = err else {
        panic!("expected an ErrorResponse")
    };
    assert_eq!(e.kind(), ErrorCode::UnsupportedVersion);
    assert!(
        e.message.contains("99") && e.message.contains("upgrade"),
        "{}",
        e.message
    );
}

fn ping_payload(c: &Client, tag: String) {
    let data = Bytes::from(tag);
    let f = c
        .request(
            &Ping { data: data.clone() }
                .to_frame(service::CONTROL)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(
        Pong::decode(&f.payload).unwrap().data,
        data,
        "reply belongs to this request"
    );
}

#[test]
fn sixteen_threads_shared_and_own_clients_never_interleave() {
    let d = Arc::new(Daemon::start(&[]));
    let shared = Arc::new(d.client());
    let mut handles = Vec::new();
    for t in 0..16u64 {
        let shared = shared.clone();
        handles.push(std::thread::spawn(move || {
            for i in 0..200u64 {
                ping_payload(&shared, format!("shared-{t}-{i}"));
                let key = ShaderKey {
                    source_hash: t << 32 | i,
                    target: 1,
                    stage: 2,
                };
                let blob = format!("blob {t} {i}").repeat((i % 7 + 1) as usize);
                shared.shader().put(&key, blob.as_bytes()).unwrap();
                assert_eq!(shared.shader().get(&key).unwrap().unwrap(), blob.as_bytes());
            }
        }));
        let d = d.clone();
        handles.push(std::thread::spawn(move || {
            let own = d.client();
            for i in 0..200u64 {
                ping_payload(&own, format!("own-{t}-{i}"));
                let key = ShaderKey {
                    source_hash: (100 + t) << 32 | i,
                    target: 3,
                    stage: 4,
                };
                let blob = format!("own {t} {i}");
                own.shader().put(&key, blob.as_bytes()).unwrap();
                assert_eq!(own.shader().get(&key).unwrap().unwrap(), blob.as_bytes());
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_thousand_pipelined_pings() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let frames: Vec<Frame> = (0..1000)
        .map(|i| {
            Ping {
                data: Bytes::from(format!("p{i}")),
            }
            .to_frame(service::CONTROL)
            .unwrap()
        })
        .collect();
    let replies = c.pipeline(&frames).unwrap();
    assert_eq!(replies.len(), 1000);
    for (i, r) in replies.into_iter().enumerate() {
        let f = r.unwrap();
        assert_eq!(
            Pong::decode(&f.payload).unwrap().data,
            Bytes::from(format!("p{i}")),
            "reply {i} in order"
        );
    }
    // One-way sends keep the order too.
    c.send_one_way(&frames[0]).unwrap();
    c.ping().unwrap();
}

#[test]
fn shutdown_is_prompt_with_clients_connected() {
    let mut d = Daemon::start(&[]);
    let idle: Vec<Client> = (0..8).map(|_| d.client()).collect();
    let busy = d.client();
    busy.ping().unwrap();
    let t = Instant::now();
    d.client().shutdown().unwrap();
    let st = d.wait_exit(Duration::from_secs(5)).expect("daemon exits");
    let took = t.elapsed();
    eprintln!("shutdown with 9 connected clients took {took:?} (target 500 ms)");
    assert!(st.success(), "clean shutdown exits 0: {st}");
    assert!(!d.socket.exists(), "socket removed on exit");
    // Clients see the connection end rather than hanging.
    assert!(busy.ping().is_err());
    drop(idle);
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    for sig in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let mut d = Daemon::start(&[]);
        let _c = d.client();
        rustix::process::kill_process(rustix::process::Pid::from_raw(d.pid() as i32).unwrap(), sig)
            .unwrap();
        let st = d
            .wait_exit(Duration::from_secs(5))
            .expect("exits on signal");
        assert!(st.success(), "{sig:?}: {st}");
    }
}

#[test]
fn second_daemon_refuses_and_stale_socket_is_replaced() {
    let d = Daemon::start(&[]);
    let out = d.command().output().unwrap();
    assert_eq!(out.status.code(), Some(3), "a rival exits with status 3");
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("already serves"), "clear message: {msg}");
    d.client().ping().expect("the first daemon is untouched");
    // Stale: a socket file with nobody behind it.
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("s.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    assert!(matches!(
        Client::connect(&sock),
        Err(Error::NotRunning { .. })
    ));
    let mut child = std::process::Command::new(spark_testkit::sparkd_bin())
        .arg("--socket")
        .arg(&sock)
        .args(["--memory-only", "--log-level", "warn"])
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || Client::connect(&sock).is_ok()),
        "stale socket replaced"
    );
    Client::connect(&sock).unwrap().shutdown().unwrap();
    child.wait().unwrap();
    // A path that is not a socket is never deleted.
    let file = tmp.path().join("not-a-socket");
    std::fs::write(&file, b"precious").unwrap();
    let out = std::process::Command::new(spark_testkit::sparkd_bin())
        .arg("--socket")
        .arg(&file)
        .args(["--memory-only", "--log-level", "warn"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[test]
fn absent_daemon_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let err = Client::connect(tmp.path().join("nobody.sock")).unwrap_err();
    assert!(matches!(err, Error::NotRunning { .. }));
    assert!(err.is_unavailable());
    assert!(t.elapsed() < Duration::from_secs(2), "no multi-second wait");
}

#[test]
fn connection_churn_leaves_nothing_behind() {
    let d = Daemon::start(&[]);
    let pid = d.pid();
    // Warm up so lazily created runtime threads exist before the baseline.
    for _ in 0..50 {
        d.client().ping().unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let (fds0, threads0) = (fd_count(pid), thread_count(pid));
    for _ in 0..2000 {
        let c = d.client();
        c.ping().unwrap();
    }
    let settled = eventually(Duration::from_secs(10), || {
        fd_count(pid) <= fds0 && thread_count(pid) <= threads0 + 1
    });
    let (fds1, threads1) = (fd_count(pid), thread_count(pid));
    eprintln!("after 2000 cycles: fds {fds0} -> {fds1}, threads {threads0} -> {threads1}");
    assert!(
        settled,
        "fds {fds0} -> {fds1}, threads {threads0} -> {threads1}"
    );
    let s = d.client().stats().unwrap();
    assert_eq!(s.current_connections, 1);
    assert!(s.total_connections >= 2051);
}

#[test]
fn refused_upload_streams_keep_one_reply_per_request() {
    use spark_client::spark_proto::cache::{PUT_STREAM, StreamEnd};
    use spark_client::spark_proto::msg;
    let d = Daemon::start(&[]);
    let c = d.client();
    let ping = Ping {
        data: Bytes::from_static(b"after"),
    }
    .to_frame(service::CONTROL)
    .unwrap();
    // An upload to a service that does not exist: one UnknownService reply, the rest of the stream dropped.
    let unknown = [
        Frame::new(0x7777, PUT_STREAM, Bytes::from_static(&[0; 18])).unwrap(),
        Frame::new(0x7777, msg::STREAM_CHUNK, Bytes::from_static(b"abc")).unwrap(),
        StreamEnd { checksum: 0 }.to_frame(0x7777).unwrap(),
    ];
    // The daemon owes one reply for the three frames: read them off a raw socket.
    let mut raw0 = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    {
        use std::io::{Read, Write};
        for f in unknown.iter().chain([&ping]) {
            raw0.write_all(&f.to_bytes()).unwrap();
        }
        raw0.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = bytes::BytesMut::new();
        let mut frames = Vec::new();
        while frames.len() < 2 {
            let mut tmp = [0u8; 4096];
            let n = raw0.read(&mut tmp).unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&tmp[..n]);
            while let Some(f) = Frame::decode_from(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        let e = spark_client::spark_proto::ErrorResponse::decode(&frames[0].payload).unwrap();
        assert_eq!(e.kind(), ErrorCode::UnknownService);
        assert_eq!(
            Pong::decode(&frames[1].payload).unwrap().data,
            Bytes::from_static(b"after")
        );
    }
    let mut raw = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    use std::io::{Read, Write};
    let start = Frame::new(service::SHADER, PUT_STREAM, Bytes::from_static(&[1, 2, 3])).unwrap();
    let chunk = Frame::new(
        service::SHADER,
        msg::STREAM_CHUNK,
        Bytes::from_static(b"abc"),
    )
    .unwrap();
    let end = StreamEnd { checksum: 0 }.to_frame(service::SHADER).unwrap();
    for f in [&start, &chunk, &end, &ping] {
        raw.write_all(&f.to_bytes()).unwrap();
    }
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let mut tmp = [0u8; 4096];
        let n = raw.read(&mut tmp).unwrap();
        assert!(n > 0, "daemon closed early");
        buf.extend_from_slice(&tmp[..n]);
        while let Some(f) = Frame::decode_from(&mut buf).unwrap() {
            frames.push(f);
        }
    }
    assert!(
        frames[0].is_error(),
        "a malformed PutStream is answered once, with an error"
    );
    assert_eq!(
        Pong::decode(&frames[1].payload).unwrap().data,
        Bytes::from_static(b"after"),
        "next reply in step"
    );
    c.ping().unwrap();
}

#[test]
fn oversize_frame_inside_an_upload_is_explained_before_closing() {
    use spark_client::spark_proto::cache::{PutStream, ShaderKey as K};
    use spark_client::spark_proto::{FrameHeader, msg};
    use std::io::{Read, Write};
    let d = Daemon::start(&[]);
    let mut raw = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    let start = PutStream {
        key: K {
            source_hash: 1,
            target: 1,
            stage: 1,
        },
        total_len: 100,
    }
    .to_frame(service::SHADER)
    .unwrap();
    raw.write_all(&start.to_bytes()).unwrap();
    let bad = FrameHeader {
        len: u32::MAX,
        service: service::SHADER,
        msg_type: msg::STREAM_CHUNK,
    }
    .encode();
    raw.write_all(&bad).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = Vec::new();
    raw.read_to_end(&mut all).unwrap();
    let f = Frame::decode_exact(&all).expect("one error frame, then close");
    assert!(f.is_error());
    assert_eq!(
        f.service,
        service::CONTROL,
        "an oversize header is answered on Control, inside an upload too (protocol §3.1)"
    );
    let e = spark_client::spark_proto::ErrorResponse::decode(&f.payload).unwrap();
    assert_eq!(e.kind(), ErrorCode::TooLarge);
}

#[test]
fn sponsor_pids_are_validated() {
    let d = Daemon::start(&[]);
    let c = d.client();
    for bad in [0u32, 0x8000_0000, u32::MAX] {
        let err = c.register_sponsor(bad).unwrap_err();
        assert_eq!(err.daemon_code(), Some(ErrorCode::Malformed), "pid {bad}");
    }
    assert_eq!(
        c.register_sponsor(std::process::id()).unwrap(),
        1,
        "a live sponsor counts"
    );
}

#[test]
fn pipelines_stay_in_step_around_streamed_replies() {
    use spark_client::spark_proto::cache::{Get, GetResponse, GetStatus};
    let d = Daemon::start(&[]);
    let c = d.client();
    let big = ShaderKey {
        source_hash: 1,
        target: 0,
        stage: 0,
    };
    let small = ShaderKey {
        source_hash: 2,
        target: 0,
        stage: 0,
    };
    c.shader().put(&big, &vec![1u8; 20 << 20]).unwrap();
    c.shader().put(&small, b"small").unwrap();
    let frames = vec![
        Get { key: big }.to_frame(service::SHADER).unwrap(),
        Get { key: small }.to_frame(service::SHADER).unwrap(),
    ];
    let r = c.pipeline(&frames).unwrap();
    assert!(
        matches!(r[0], Err(Error::Protocol(_))),
        "streamed reply reported, not returned"
    );
    let g = GetResponse::decode(&r[1].as_ref().unwrap().payload).unwrap();
    assert_eq!(g.status, GetStatus::Inline(Bytes::from_static(b"small")));
    // One-way gets of big blobs are drained too.
    c.send_one_way(&frames[0]).unwrap();
    c.ping().unwrap();
}
