//! Collab fan-out on the wire: a published message (and a key change) is encoded once and shared by every
//! subscription it goes to, each event carrying its own subscription id in front. Each subscriber must still
//! receive exactly the bytes the message encodes to for it, whether it shares its connection with another
//! subscription or not, for an empty, a small, and a large (written straight from its buffer) payload.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use spark_client::spark_proto::collab::{KV_CHANGED, KvChanged, MESSAGE, TopicMessage};
use spark_client::spark_proto::{Message, service};
use spark_client::{Client, JoinOptions};
use spark_testkit::Daemon;

/// How long a test waits for an expected event (a bound, not a measurement).
const WAIT: Duration = Duration::from_secs(20);

fn encoded<M: Message>(m: &M) -> Bytes {
    let mut b = BytesMut::new();
    m.encode(&mut b);
    b.freeze()
}

/// The raw payloads of the next `n` Collab events of type `ty` on `c`, in arrival order.
fn raw_events(c: &Client, ty: u16, n: usize) -> Vec<Bytes> {
    let deadline = Instant::now() + WAIT;
    let mut v = Vec::new();
    while v.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events within {WAIT:?}",
            v.len()
        );
        if let Some(e) = c.next_event(Duration::from_millis(200)).unwrap()
            && e.service == service::COLLAB
            && e.msg_type == ty
        {
            v.push(e.payload);
        }
    }
    v
}

/// Nothing more of type `ty` arrives on `c` after a round trip that follows every publish.
fn assert_no_more(c: &Client, ty: u16) {
    c.collab().stats().unwrap();
    while let Some(e) = c.next_event(Duration::ZERO).unwrap() {
        assert!(
            !(e.service == service::COLLAB && e.msg_type == ty),
            "an unexpected event 0x{ty:04x}: {:?}",
            e.payload
        );
    }
}

#[test]
fn every_subscriber_gets_the_topic_message_encoded_with_its_own_id() {
    let d = Daemon::start(&["--memory-only"]);
    let publisher = d.client();
    let me = publisher
        .collab()
        .join(
            "fan",
            &JoinOptions {
                client: "pub".into(),
                ..Default::default()
            },
        )
        .unwrap()
        .member;
    // Two subscriptions share connection `a`; `b` has one of its own; `c` matches nothing.
    let (a, b, c) = (d.client(), d.client(), d.client());
    let a_all = a.collab().subscribe("fan", "t/*", 0).unwrap();
    let a_x = a.collab().subscribe("fan", "t/x", 0).unwrap();
    let b_all = b.collab().subscribe("fan", "t/*", 0).unwrap();
    c.collab().subscribe("fan", "other/*", 0).unwrap();
    assert_eq!(
        [a_all, a_x, b_all]
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );

    let payloads: Vec<Bytes> = [0usize, 1, 64, 200 * 1024]
        .iter()
        .map(|&n| (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into())
        .collect();
    let mut sent = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let topic = if i % 2 == 0 { "t/x" } else { "t/y" };
        let r = publisher.collab().publish("fan", topic, p, false).unwrap();
        sent.push((topic, r.seq, p.clone()));
    }
    let expect = |sub: u32, (topic, seq, p): &(&str, u64, Bytes)| {
        encoded(&TopicMessage {
            subscription: sub,
            session: "fan".into(),
            topic: (*topic).into(),
            publisher: me,
            seq: *seq,
            payload: p.clone(),
        })
    };

    // Connection a: every message for a_all, the t/x ones for a_x too. Per subscription in publish order.
    let on_a = raw_events(&a, MESSAGE, sent.len() + sent.len().div_ceil(2));
    let mut by_sub: HashMap<u32, Vec<Bytes>> = HashMap::new();
    for e in on_a {
        let m = TopicMessage::decode(&e).unwrap();
        by_sub.entry(m.subscription).or_default().push(e);
    }
    let want_all: Vec<Bytes> = sent.iter().map(|s| expect(a_all, s)).collect();
    let want_x: Vec<Bytes> = sent
        .iter()
        .filter(|s| s.0 == "t/x")
        .map(|s| expect(a_x, s))
        .collect();
    assert_eq!(by_sub.remove(&a_all).unwrap(), want_all);
    assert_eq!(by_sub.remove(&a_x).unwrap(), want_x);
    assert!(by_sub.is_empty(), "events for other subscriptions on a");

    let on_b = raw_events(&b, MESSAGE, sent.len());
    let want_b: Vec<Bytes> = sent.iter().map(|s| expect(b_all, s)).collect();
    assert_eq!(on_b, want_b);

    for cl in [&a, &b, &c] {
        assert_no_more(cl, MESSAGE);
    }
}

#[test]
fn every_key_watcher_gets_the_change_encoded_with_its_own_id() {
    let d = Daemon::start(&["--memory-only"]);
    let w = d.client();
    w.collab()
        .join(
            "kv",
            &JoinOptions {
                client: "writer".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let (a, b) = (d.client(), d.client());
    let a1 = a.collab().kv_watch("kv", "cfg/", 0).unwrap();
    let a2 = a.collab().kv_watch("kv", "", 0).unwrap();
    let b1 = b.collab().kv_watch("kv", "cfg/", 0).unwrap();

    let v1 = w.collab().kv_put("kv", "cfg/lod", b"high").unwrap();
    assert!(w.collab().kv_delete("kv", "cfg/lod").unwrap());
    let change = |sub: u32, version: u64, deleted: bool, value: &'static [u8]| {
        encoded(&KvChanged {
            subscription: sub,
            session: "kv".into(),
            key: "cfg/lod".into(),
            version,
            deleted,
            value: Bytes::from_static(value),
        })
    };
    let (put, del) = (raw_events(&b, KV_CHANGED, 2), v1 + 1);
    assert_eq!(
        put,
        vec![change(b1, v1, false, b"high"), change(b1, del, true, b"")]
    );
    let mut on_a = raw_events(&a, KV_CHANGED, 4);
    on_a.sort();
    let mut want = vec![
        change(a1, v1, false, b"high"),
        change(a2, v1, false, b"high"),
        change(a1, del, true, b""),
        change(a2, del, true, b""),
    ];
    want.sort();
    assert_eq!(on_a, want);
    assert_no_more(&a, KV_CHANGED);
}
