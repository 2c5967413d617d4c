//! The connection layer: concurrent requests with ordered replies, events between replies, backpressure,
//! and `on_disconnect`. Uses the test-only service (id 0x7F00, feature `test-services`, on for this crate's
//! tests) through raw frames.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use spark_client::spark_proto::control::{EventsLost, Ping, Pong};
use spark_client::spark_proto::{Frame, Message, msg, service};
use spark_testkit::{Daemon, eventually, status_kib};

const TEST: u16 = 0x7F00;
const WAIT_GATE: u16 = 0x0001;
const SLEEP: u16 = 0x0003;
const OPEN_GATE: u16 = 0x0005;
const SUBSCRIBE: u16 = 0x0007;
const PUBLISH: u16 = 0x0009;
const WHO_AM_I: u16 = 0x000B;
const STREAM_WITH_EVENT: u16 = 0x000D;
const PANIC: u16 = 0x0011;
const EVENT: u16 = 0x8000;

fn frame(ty: u16, fields: &[u32]) -> Frame {
    let mut p = BytesMut::new();
    for f in fields {
        p.put_u32_le(*f);
    }
    Frame::new(TEST, ty, p.freeze()).unwrap()
}

/// Starts a daemon and checks it was built with the test service: a build without it fails here loudly.
fn daemon(env: &[(&str, &str)]) -> Daemon {
    let mut env = env.to_vec();
    env.push(("SPARKD_TEST_SERVICES", "1"));
    let d = Daemon::start_with_env(&[], &env);
    let caps = d.client().hello().capabilities.clone();
    assert!(
        caps.iter().any(|c| c == "test-services"),
        "this sparkd lacks the test-only service; build it with `cargo test -p spark-daemon` \
         (which enables feature test-services), not a release build: capabilities {caps:?}"
    );
    d
}

/// Reads whole frames off a raw socket.
struct RawConn {
    s: UnixStream,
    buf: BytesMut,
}

impl RawConn {
    fn open(d: &Daemon) -> RawConn {
        let s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        RawConn {
            s,
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, f: &Frame) {
        self.s.write_all(&f.to_bytes()).unwrap();
    }

    fn next(&mut self) -> Frame {
        loop {
            if let Some(f) = Frame::decode_from(&mut self.buf).unwrap() {
                return f;
            }
            let mut tmp = vec![0u8; 256 * 1024];
            let n = self.s.read(&mut tmp).expect("read a frame");
            assert!(n > 0, "daemon closed the connection");
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    fn conn_id(&mut self) -> u64 {
        self.send(&frame(WHO_AM_I, &[]));
        let f = self.next();
        assert_eq!(f.msg_type, WHO_AM_I + 1);
        f.payload.clone().get_u64_le()
    }
}

#[test]
fn thirty_two_pipelined_requests_run_concurrently_and_reply_in_order() {
    let d = daemon(&[]);
    let c = d.client();
    // The first request waits until the last one opens its gate. Run one at a time, they would deadlock
    // (and the first would time out after 20 s, saying so in its reply).
    let mut frames = vec![frame(WAIT_GATE, &[7, 0])];
    for tag in 1..=30u32 {
        frames.push(frame(SLEEP, &[5, tag]));
    }
    frames.push(frame(OPEN_GATE, &[7]));
    assert_eq!(frames.len(), 32);
    let replies = c.pipeline(&frames).unwrap();
    let first = replies[0].as_ref().unwrap();
    assert_eq!(first.msg_type, WAIT_GATE + 1);
    let mut p = first.payload.clone();
    assert_eq!(p.get_u32_le(), 0);
    assert_eq!(
        p.get_u8(),
        1,
        "the first request was released by the last one, not timed out"
    );
    for (i, r) in replies[1..31].iter().enumerate() {
        let f = r.as_ref().unwrap();
        assert_eq!(f.msg_type, SLEEP + 1, "reply {i}");
        let mut p = f.payload.clone();
        assert_eq!(
            p.get_u32_le(),
            i as u32 + 1,
            "replies come in request order"
        );
        assert!(
            p.get_u32_le() >= 2,
            "request {} ran while the first was still waiting",
            i + 1
        );
    }
    assert_eq!(replies[31].as_ref().unwrap().msg_type, OPEN_GATE + 1);
    c.ping().unwrap();
}

#[test]
fn an_event_queued_during_a_streamed_reply_arrives_after_its_end() {
    let d = daemon(&[]);
    let mut raw = RawConn::open(&d);
    raw.send(&frame(STREAM_WITH_EVENT, &[3 << 20]));
    let mut seen = Vec::new();
    loop {
        let f = raw.next();
        seen.push(f.msg_type);
        if f.msg_type == EVENT {
            assert_eq!(f.payload, Bytes::from_static(b"mid-stream"));
            break;
        }
        assert!(seen.len() < 16, "no event after the stream: {seen:x?}");
    }
    assert_eq!(
        seen,
        [
            STREAM_WITH_EVENT + 1,
            msg::STREAM_CHUNK,
            msg::STREAM_CHUNK,
            msg::STREAM_CHUNK,
            msg::STREAM_END,
            EVENT
        ],
        "the event waits for the stream's end frame"
    );
}

#[test]
fn a_client_that_never_reads_is_throttled_and_told_what_it_lost() {
    let d = daemon(&[]);
    let mut sub = RawConn::open(&d);
    sub.send(&frame(SUBSCRIBE, &[]));
    assert_eq!(sub.next().msg_type, SUBSCRIBE + 1);
    let rss_before = status_kib(d.pid(), "VmRSS");
    // 100k events of 1 KiB (~100 MiB) to a subscriber that reads nothing meanwhile.
    let publisher = d.client();
    let (mut queued, mut dropped) = (0u64, 0u64);
    for _ in 0..100 {
        let r = publisher.request(&frame(PUBLISH, &[1000, 1024])).unwrap();
        let mut p = r.payload.clone();
        queued += p.get_u32_le() as u64;
        dropped += p.get_u32_le() as u64;
        assert_eq!(p.get_u32_le(), 0, "the subscriber is still connected");
    }
    let rss_after = status_kib(d.pid(), "VmRSS");
    assert_eq!(queued + dropped, 100_000);
    assert!(dropped > 0, "a full queue drops events");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_after} KiB for a client that does not read"
    );
    // Now it reads: every queued event, and EventsLost adding up to what was dropped.
    let (mut got, mut lost) = (0u64, 0u64);
    while got < queued || lost < dropped {
        let f = sub.next();
        match (f.service, f.msg_type) {
            (TEST, EVENT) => got += 1,
            (service::CONTROL, msg_type) if msg_type == EventsLost::TYPE => {
                lost += EventsLost::decode(&f.payload).unwrap().dropped;
            }
            other => panic!("unexpected frame {other:x?}"),
        }
    }
    assert_eq!((got, lost), (queued, dropped));
    // And the connection still answers requests in step.
    sub.send(
        &Ping {
            data: Bytes::from_static(b"ok"),
        }
        .to_frame(service::CONTROL)
        .unwrap(),
    );
    let f = sub.next();
    assert_eq!(
        Pong::decode(&f.payload).unwrap().data,
        Bytes::from_static(b"ok")
    );
}

#[test]
fn a_client_that_stops_reading_replies_stops_being_read() {
    let d = daemon(&[]);
    let s = UnixStream::connect(&d.socket).unwrap();
    let mut w = s.try_clone().unwrap();
    let rss_before = status_kib(d.pid(), "VmRSS");
    // 20k pings of 4 KiB (~80 MiB of replies) sent by a thread while nobody reads the replies.
    const N: usize = 20_000;
    let ping = Ping {
        data: Bytes::from(vec![7u8; 4096]),
    }
    .to_frame(service::CONTROL)
    .unwrap()
    .to_bytes();
    let sender = std::thread::spawn(move || {
        for _ in 0..N {
            w.write_all(&ping).unwrap();
        }
    });
    // The sender blocks once the daemon stops reading: socket buffers plus 32 replies in flight.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !sender.is_finished(),
        "the daemon kept reading requests nobody took replies for"
    );
    let rss_blocked = status_kib(d.pid(), "VmRSS");
    assert!(
        rss_blocked < rss_before + 32 * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_blocked} KiB"
    );
    let mut raw = RawConn {
        s,
        buf: BytesMut::new(),
    };
    raw.s
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for i in 0..N {
        let f = raw.next();
        assert_eq!(f.msg_type, Pong::TYPE, "reply {i}");
        assert_eq!(f.payload.len(), 4096);
    }
    sender.join().unwrap();
}

/// A client process that says who it is, then waits to be killed.
fn child_client(socket: &std::path::Path) -> (std::process::Child, u64) {
    let script = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(struct.pack('<IHH', 0, 0x7F00, 0x000B))
buf = b''
while len(buf) < 8 + 12:
    buf += s.recv(64)
print(struct.unpack('<Q', buf[8:16])[0], flush=True)
time.sleep(600)
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the child client (the test suite installs it)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    (child, line.trim().parse().expect("conn id"))
}

#[test]
fn on_disconnect_runs_once_for_every_way_a_connection_ends() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("disconnects");
    let mut d = daemon(&[("SPARKD_TEST_DISCONNECT_LOG", log.to_str().unwrap())]);
    let ids_in_log = |log: &std::path::Path| -> Vec<u64> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    // EOF: the client closes.
    let mut eof = RawConn::open(&d);
    let eof_id = eof.conn_id();
    drop(eof);
    // Error: an oversize header, which the daemon answers and closes.
    let mut bad = RawConn::open(&d);
    let bad_id = bad.conn_id();
    bad.s
        .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 0, 1, 0])
        .unwrap();
    assert!(bad.next().is_error());
    // kill -9 of the client process.
    let (mut child, killed_id) = child_client(&d.socket);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let ids = ids_in_log(&log);
            [eof_id, bad_id, killed_id].iter().all(|i| ids.contains(i))
        }),
        "disconnects seen: {:?}",
        ids_in_log(&log)
    );
    // Daemon shutdown with a client still connected.
    let mut open = RawConn::open(&d);
    let open_id = open.conn_id();
    let t = Instant::now();
    d.stop();
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown was prompt");
    let ids = ids_in_log(&log);
    for id in [eof_id, bad_id, killed_id, open_id] {
        assert_eq!(
            ids.iter().filter(|&&i| i == id).count(),
            1,
            "connection {id} seen once in {ids:?}"
        );
    }
    let mut uniq = ids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(
        uniq.len(),
        ids.len(),
        "no connection reported twice: {ids:?}"
    );
}

#[test]
fn pipelined_requests_take_effect_in_request_order() {
    use spark_client::spark_proto::cache::{Get, GetResponse, GetStatus, Put, ShaderKey};
    let d = Daemon::start(&[]);
    let c = d.client();
    let key = ShaderKey {
        source_hash: 42,
        target: 1,
        stage: 2,
    };
    // Put v0, Get, Put v1, Get, …: concurrent execution must not let a Get overtake the Put before it,
    // nor a Put overtake the Get before it. Every put goes to disk (on the blocking pool) while a get of a
    // memory hit would answer at once. The whole batch stays far below the socket buffers, since this client
    // writes everything before it reads (§4.2).
    let mut frames = Vec::new();
    for i in 0..32u32 {
        let len = if i % 2 == 0 { 4096 } else { 16 };
        let mut v = vec![(i % 251) as u8; len];
        v[..4].copy_from_slice(&i.to_le_bytes());
        frames.push(
            Put {
                key,
                data: Bytes::from(v),
            }
            .to_frame(service::SHADER)
            .unwrap(),
        );
        frames.push(Get { key }.to_frame(service::SHADER).unwrap());
    }
    let replies = c.pipeline(&frames).unwrap();
    for i in 0..32usize {
        let g = GetResponse::decode(&replies[2 * i + 1].as_ref().unwrap().payload).unwrap();
        let GetStatus::Inline(b) = g.status else {
            panic!("get {i} missed the put pipelined before it")
        };
        assert_eq!(
            u32::from_le_bytes(b[..4].try_into().unwrap()),
            i as u32,
            "get {i} saw the put before it"
        );
    }
    // A one-way put is visible to the get sent after it.
    let k2 = ShaderKey {
        source_hash: 43,
        ..key
    };
    c.send_one_way(
        &Put {
            key: k2,
            data: Bytes::from_static(b"one-way"),
        }
        .to_frame(service::SHADER)
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        c.shader().get(&k2).unwrap(),
        Some(Bytes::from_static(b"one-way"))
    );
}

#[test]
fn a_panicking_handler_answers_internal_and_the_connection_goes_on() {
    use spark_client::spark_proto::ErrorCode;
    let d = daemon(&[]);
    let c = d.client();
    // Alone (first in line, run by the writer) and behind a slow request (in a task of its own).
    let alone = c.request(&frame(PANIC, &[])).unwrap_err();
    assert_eq!(alone.daemon_code(), Some(ErrorCode::Internal), "{alone}");
    let replies = c
        .pipeline(&[
            frame(SLEEP, &[50, 1]),
            frame(PANIC, &[]),
            frame(SLEEP, &[0, 2]),
        ])
        .unwrap();
    assert_eq!(replies[0].as_ref().unwrap().msg_type, SLEEP + 1);
    let e = replies[1].as_ref().unwrap_err();
    assert_eq!(e.daemon_code(), Some(ErrorCode::Internal), "{e}");
    assert_eq!(replies[2].as_ref().unwrap().msg_type, SLEEP + 1);
    // And one that panics on its very first poll, in the reader.
    let at_once = c.request(&frame(PANIC, &[1])).unwrap_err();
    assert_eq!(
        at_once.daemon_code(),
        Some(ErrorCode::Internal),
        "{at_once}"
    );
    c.ping().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || c
            .stats()
            .unwrap()
            .current_connections
            == 1),
        "nothing leaked: only this connection is open"
    );
}
