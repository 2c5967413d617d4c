//! Events, stream hygiene and local errors, against a scripted fake daemon (the real one sends no events
//! yet and never misbehaves on cue).

#[path = "support/fake.rs"]
mod fake;

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake::{FakeDaemon, Peer};
use spark_client::spark_proto::cache::{self, GetResponse, GetStatus, StreamEnd};
use spark_client::spark_proto::control::{
    self, EventsLost, NamespaceStats, NamespacesResponse, Pong,
};
use spark_client::spark_proto::{Frame, Message, msg, service};
use spark_client::{Client, ClientOptions, Error, Event, ShaderKey};

const FILE_CHANGED: u16 = 0x8100;

fn event(service: u16, msg_type: u16, payload: &'static [u8]) -> Event {
    Event {
        service,
        msg_type,
        payload: Bytes::from_static(payload),
    }
}

fn send_event(p: &mut Peer, e: &Event) {
    p.send_frame(e.service, e.msg_type, &e.payload);
}

fn pong(p: &mut Peer, f: &Frame) {
    let ping = control::Ping::decode(&f.payload).unwrap();
    p.send(service::CONTROL, &Pong { data: ping.data });
}

#[test]
fn events_between_replies_reach_the_receiver_in_order() {
    let d = FakeDaemon::start(1, |p, f| {
        if f.msg_type == control::PING {
            send_event(p, &event(service::ASSET, FILE_CHANGED, b"a/b.png"));
            p.send(service::CONTROL, &EventsLost { dropped: 3 });
            pong(p, &f);
        }
    });
    let c = Client::connect(&d.socket).unwrap();
    let rx = c.events();
    assert!(rx.is_empty());
    c.ping().unwrap();
    assert_eq!(rx.len(), 2);
    let first = rx.try_recv().unwrap();
    assert_eq!(first, event(service::ASSET, FILE_CHANGED, b"a/b.png"));
    assert_eq!(first.events_lost(), None);
    let lost = c
        .next_event(Duration::ZERO)
        .unwrap()
        .expect("EventsLost queued");
    assert_eq!(lost.events_lost(), Some(3));
    assert_eq!(
        lost.decode::<EventsLost>(service::CONTROL).unwrap(),
        Some(EventsLost { dropped: 3 })
    );
    assert_eq!(c.next_event(Duration::ZERO).unwrap(), None);
    drop(c);
    d.join();
}

#[test]
fn next_event_reads_an_idle_connection_and_settles_one_way_replies_first() {
    let d = FakeDaemon::start(1, |p, f| {
        if f.msg_type == control::PING {
            pong(p, &f);
            std::thread::sleep(Duration::from_millis(50));
            send_event(p, &event(service::SHADER, FILE_CHANGED, b"late"));
        }
    });
    let c = Client::connect(&d.socket).unwrap();
    let t = Instant::now();
    assert_eq!(c.next_event(Duration::ZERO).unwrap(), None);
    assert_eq!(c.next_event(Duration::from_millis(20)).unwrap(), None);
    assert!(t.elapsed() >= Duration::from_millis(20));
    c.send_one_way(
        &control::Ping { data: Bytes::new() }
            .to_frame(service::CONTROL)
            .unwrap(),
    )
    .unwrap();
    let e = c.next_event(Duration::from_secs(10)).unwrap();
    assert_eq!(e, Some(event(service::SHADER, FILE_CHANGED, b"late")));
    // The owed Pong was consumed on the way: the connection is still in step.
    c.ping().unwrap();
    drop(c);
    d.join();
}

#[test]
fn next_event_steps_aside_for_a_request_from_another_thread() {
    let d = FakeDaemon::start(1, |p, f| {
        if f.msg_type == control::PING {
            pong(p, &f);
        }
    });
    let c = std::sync::Arc::new(Client::connect(&d.socket).unwrap());
    let waiter = {
        let c = c.clone();
        std::thread::spawn(move || c.next_event(Duration::from_millis(500)).unwrap())
    };
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    c.ping().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "a ping waited {:?} behind an idle next_event",
        t.elapsed()
    );
    assert_eq!(waiter.join().unwrap(), None);
    drop(c);
    d.join();
}

#[test]
fn a_full_queue_drops_and_counts_new_events() {
    let d = FakeDaemon::start(1, |p, f| {
        if f.msg_type == control::PING {
            for _ in 0..5 {
                send_event(p, &event(service::CONTROL, 0x8002, b""));
            }
            pong(p, &f);
        }
    });
    let opts = ClientOptions {
        event_queue: 2,
        ..ClientOptions::default()
    };
    let c = Client::connect_with(&d.socket, &opts).unwrap();
    c.ping().unwrap();
    let rx = c.events();
    assert_eq!((rx.len(), rx.dropped()), (2, 3));
    drop(c);
    d.join();
}

#[test]
fn next_event_takes_a_burst_larger_than_the_queue_without_dropping_any() {
    // next_event queues the whole frames of a read at once, but only while they fit: the rest stay buffered.
    let d = FakeDaemon::start(1, |p, f| {
        if f.msg_type == control::PING {
            pong(p, &f);
            for i in 0..6u8 {
                p.send_frame(service::CONTROL, 0x8002, &[i]);
            }
        }
    });
    let opts = ClientOptions {
        event_queue: 2,
        ..ClientOptions::default()
    };
    let c = Client::connect_with(&d.socket, &opts).unwrap();
    c.send_one_way(
        &control::Ping { data: Bytes::new() }
            .to_frame(service::CONTROL)
            .unwrap(),
    )
    .unwrap();
    let got: Vec<u8> = (0..6)
        .map(|_| {
            let e = c
                .next_event(Duration::from_secs(10))
                .unwrap()
                .expect("an event");
            e.payload[0]
        })
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    assert_eq!(c.events().dropped(), 0);
    drop(c);
    d.join();
}

fn key() -> ShaderKey {
    ShaderKey {
        source_hash: 7,
        target: 1,
        stage: 2,
    }
}

/// Answers every Get with `chunks` streamed, an event between two of them.
fn stream_reply(p: &mut Peer, chunks: &[&[u8]]) {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let status = GetStatus::Streamed {
        total_len: total as u64,
    };
    p.send(service::SHADER, &GetResponse { status });
    let mut all = Vec::new();
    for (i, ch) in chunks.iter().enumerate() {
        if i == 1 {
            send_event(p, &event(service::SHADER, FILE_CHANGED, b"mid-stream"));
        }
        p.send_frame(service::SHADER, msg::STREAM_CHUNK, ch);
        all.extend_from_slice(ch);
    }
    let checksum = spark_client::spark_proto::blob_checksum(&all);
    p.send(service::SHADER, &StreamEnd { checksum });
}

#[test]
fn an_event_inside_a_streamed_reply_is_queued_and_the_blob_is_whole() {
    let d = FakeDaemon::start(1, |p, f| match (f.service, f.msg_type) {
        (service::SHADER, cache::GET) => stream_reply(p, &[b"first half ", b"second half"]),
        (service::CONTROL, control::PING) => pong(p, &f),
        _ => {}
    });
    let c = Client::connect(&d.socket).unwrap();
    let blob = c.shader().get(&key()).unwrap().unwrap();
    assert_eq!(&blob[..], b"first half second half");
    let mut out = Vec::new();
    assert_eq!(
        c.shader().get_to_writer(&key(), &mut out).unwrap(),
        Some(22)
    );
    assert_eq!(out, b"first half second half");
    assert_eq!(c.events().len(), 2);
    c.ping().unwrap();
    drop(c);
    d.join();
}

struct FailingWriter;
impl Write for FailingWriter {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("disk full (test)"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_writer_mid_stream_poisons_the_connection() {
    let d = FakeDaemon::start(1, |p, f| match (f.service, f.msg_type) {
        (service::SHADER, cache::GET) => stream_reply(p, &[b"one", b"two", b"three"]),
        (service::CONTROL, control::PING) => pong(p, &f),
        _ => {}
    });
    let c = Client::connect(&d.socket).unwrap();
    let e = c
        .shader()
        .get_to_writer(&key(), &mut FailingWriter)
        .unwrap_err();
    assert!(matches!(e, Error::Local(_)), "{e:?}");
    assert!(e.to_string().contains("disk full"), "{e}");
    // The rest of the stream is still unread: the next request must not take a chunk for its reply.
    let next = c.ping().unwrap_err();
    assert!(matches!(next, Error::Transport(_)), "{next:?}");
    drop(c);
    d.join();
}

#[test]
fn a_failing_reader_is_a_local_error() {
    let d = FakeDaemon::start(1, |_, _| {});
    let c = Client::connect(&d.socket).unwrap();
    struct FailingReader;
    impl std::io::Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("unreadable (test)"))
        }
    }
    let e = c
        .shader()
        .put_from_reader(&key(), &mut FailingReader, 10)
        .unwrap_err();
    assert!(matches!(e, Error::Local(_)), "{e:?}");
    assert!(!e.is_unavailable());
    drop(c);
    d.join();
}

#[test]
fn namespaces_decodes_the_daemons_list() {
    let list = vec![
        NamespaceStats {
            name: "shader".into(),
            service: service::SHADER,
            counters: vec![("hits".into(), 4), ("bytes_on_disk".into(), 4096)],
        },
        NamespaceStats {
            name: "http-cas".into(),
            service: 0,
            counters: vec![],
        },
    ];
    let reply = NamespacesResponse {
        namespaces: list.clone(),
    };
    let d = FakeDaemon::start(1, move |p, f| {
        if f.msg_type == control::NAMESPACES {
            p.send(service::CONTROL, &reply);
        }
    });
    let c = Client::connect(&d.socket).unwrap();
    assert_eq!(c.namespaces().unwrap(), list);
    drop(c);
    d.join();
}

#[test]
fn daemon_connection_does_not_retry_a_local_failure() {
    let gets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = gets.clone();
    let d = FakeDaemon::start(2, move |p, f| {
        if (f.service, f.msg_type) == (service::SHADER, cache::GET) {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            stream_reply(p, &[b"one", b"two"]);
        }
    });
    let conn = spark_client::DaemonConnection::new();
    assert!(conn.init(spark_client::DaemonConfig::for_socket(&d.socket)));
    let e = conn
        .call(|c| c.shader().get_to_writer(&key(), &mut FailingWriter))
        .unwrap_err();
    assert!(matches!(e, Error::Local(_)), "{e:?}");
    assert_eq!(
        gets.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "not retried"
    );
    // The stream was left half-read: the next call reconnects instead of reading a stray chunk.
    let n = conn.call(|c| c.shader().get_to_writer(&key(), &mut Vec::new()));
    assert_eq!(n.unwrap(), Some(6));
    assert_eq!(gets.load(std::sync::atomic::Ordering::SeqCst), 2);
    conn.shutdown();
    d.join();
}
