//! The Collab service through a real `sparkd`, with several clients (threads) and a member process killed
//! with SIGKILL: membership events, pub/sub order, a lagging subscriber beside a fast one, compare-and-set
//! under contention, lock owners, force-unlock, and bad input.

mod common_collab;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use spark_client::spark_proto::ErrorCode;
use spark_client::spark_proto::collab::{
    ACT_JOIN, ACT_LEAVE, ACT_LOCK, ACT_MESSAGE, LEFT_DISCONNECT, LEFT_LEAVE, LOCK_FORCED,
    LOCK_LOCKED, LOCK_RELEASED,
};
use spark_client::{Client, CollabEvent, Error, JoinOptions, LockOutcome};
use spark_testkit::Daemon;

/// How long a test waits for an expected event (a bound, not a measurement).
const WAIT: Duration = Duration::from_secs(20);

fn opts(name: &str) -> JoinOptions {
    JoinOptions {
        client: name.into(),
        user: "ana".into(),
        ..Default::default()
    }
}

/// The next Collab event matching `f`, skipping others; panics after [`WAIT`].
fn wait_for(c: &Client, what: &str, f: impl FnMut(&CollabEvent) -> bool) -> CollabEvent {
    common_collab::wait_for_event(c, what, WAIT, f)
}

fn daemon_code(e: Error) -> ErrorCode {
    e.daemon_code()
        .unwrap_or_else(|| panic!("not a daemon error: {e}"))
}

#[test]
fn join_presence_leave_events_and_a_late_joiner_reads_the_feed() {
    let d = Daemon::start(&["--memory-only"]);
    let a = d.client();
    let b = d.client();
    let ja = a.collab().join("level1", &opts("editor")).unwrap();
    assert!(ja.created);
    let mut ob = opts("preview");
    ob.presence = bytes::Bytes::from_static(b"camera=1,2,3");
    let jb = b.collab().join("level1", &ob).unwrap();
    assert!(!jb.created);
    assert_ne!(ja.member, jb.member);

    let CollabEvent::Joined(j) = wait_for(&a, "join", |e| matches!(e, CollabEvent::Joined(_)))
    else {
        unreachable!()
    };
    assert_eq!(j.member[0].member, jb.member);
    assert_eq!(j.member[0].client, "preview");
    assert_eq!(&j.member[0].presence[..], b"camera=1,2,3");
    assert_eq!(
        j.member[0].pid,
        std::process::id(),
        "the pid is the peer's, from the socket"
    );

    b.collab().set_presence("level1", b"camera=4,5,6").unwrap();
    let CollabEvent::Presence(p) =
        wait_for(&a, "presence", |e| matches!(e, CollabEvent::Presence(_)))
    else {
        unreachable!()
    };
    assert_eq!(
        (p.member, &p.presence[..]),
        (jb.member, &b"camera=4,5,6"[..])
    );
    let members = a.collab().members("level1").unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(
        &members
            .iter()
            .find(|m| m.member == jb.member)
            .unwrap()
            .presence[..],
        b"camera=4,5,6"
    );

    assert!(b.collab().leave("level1").unwrap());
    assert!(
        !b.collab().leave("level1").unwrap(),
        "a second leave finds nothing"
    );
    let CollabEvent::Left(l) = wait_for(&a, "leave", |e| matches!(e, CollabEvent::Left(_))) else {
        unreachable!()
    };
    assert_eq!((l.member, l.reason), (jb.member, LEFT_LEAVE));

    a.collab()
        .publish("level1", "level/saved", b"rev 12", true)
        .unwrap();
    a.collab()
        .publish("level1", "cursor", b"not kept", false)
        .unwrap();
    let late = d.client();
    late.collab().join("level1", &opts("late")).unwrap();
    let feed = late.collab().activity("level1", 0, 0).unwrap();
    let kinds: Vec<u8> = feed.entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [ACT_JOIN, ACT_JOIN, ACT_LEAVE, ACT_MESSAGE, ACT_JOIN]
    );
    assert_eq!(feed.entries[3].subject, "level/saved");
    assert_eq!(&feed.entries[3].data[..], b"rev 12");
    let tail = late
        .collab()
        .activity("level1", feed.entries[2].seq, 1)
        .unwrap();
    assert_eq!(tail.entries.len(), 1);
    assert_eq!(tail.entries[0].kind, ACT_MESSAGE);
    let s = late.collab().sessions().unwrap();
    assert_eq!(
        (s.len(), s[0].name.as_str(), s[0].members),
        (1, "level1", 2)
    );
}

/// Run as a separate process by `killed_member_leaves_and_its_locks_are_released`: joins, locks, says READY,
/// then waits to be killed.
#[test]
#[ignore = "helper process for killed_member_leaves_and_its_locks_are_released"]
fn member_process() {
    let Ok(sock) = std::env::var("SPARK_COLLAB_CHILD_SOCKET") else {
        return;
    };
    let c = Client::connect(&sock).unwrap();
    c.collab().join("s", &opts("doomed")).unwrap();
    assert_eq!(
        c.collab()
            .lock("s", &["maps/castle.umap"], "editing")
            .unwrap(),
        LockOutcome::Acquired
    );
    println!("READY");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn killed_member_leaves_and_its_locks_are_released() {
    let d = Daemon::start(&["--memory-only"]);
    let a = d.client();
    a.collab().join("s", &opts("watcher")).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "member_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SPARK_COLLAB_CHILD_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    assert!(
        out.lines()
            .map_while(Result::ok)
            .any(|l| l.contains("READY")),
        "the member process did not get its lock"
    );
    let locks = a.collab().locks("s", "").unwrap();
    assert_eq!(locks.len(), 1);
    assert!(locks[0].who.starts_with("doomed/"), "{:?}", locks[0]);
    let owner = locks[0].owner;
    // A lock held by a live member is refused.
    assert!(matches!(
        a.collab().lock("s", &["maps/castle.umap"], "").unwrap(),
        LockOutcome::Contested(_)
    ));

    rustix_kill(child.id());
    child.wait().unwrap();
    let CollabEvent::Left(l) = wait_for(&a, "leave of the killed member", |e| {
        matches!(e, CollabEvent::Left(_))
    }) else {
        unreachable!()
    };
    assert_eq!((l.member, l.reason), (owner, LEFT_DISCONNECT));
    let CollabEvent::Lock(lc) = wait_for(&a, "lock release", |e| matches!(e, CollabEvent::Lock(_)))
    else {
        unreachable!()
    };
    assert_eq!((lc.state, lc.lock[0].owner), (LOCK_RELEASED, owner));
    assert_eq!(lc.lock[0].resource, "maps/castle.umap");
    assert!(a.collab().locks("s", "").unwrap().is_empty());
    assert_eq!(
        a.collab().lock("s", &["maps/castle.umap"], "").unwrap(),
        LockOutcome::Acquired
    );
}

fn rustix_kill(pid: u32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Collects `n` messages of subscription `sub` (and every Lagged): (message seqs and payloads, dropped).
fn drain(c: &Client, sub: u32, n: u64) -> (Vec<(u64, Vec<u8>)>, Vec<u64>) {
    let mut got = Vec::new();
    let mut lagged = Vec::new();
    let deadline = Instant::now() + WAIT * 3;
    while (got.len() as u64) + lagged.iter().sum::<u64>() < n {
        assert!(
            Instant::now() < deadline,
            "got {} messages, lagged {lagged:?}, of {n}",
            got.len()
        );
        match c.collab().next_event(Duration::from_millis(200)).unwrap() {
            Some(CollabEvent::Message(m)) if m.subscription == sub => {
                got.push((m.seq, m.payload.to_vec()))
            }
            Some(CollabEvent::Lagged(l)) if l.subscription == sub => lagged.push(l.dropped),
            _ => {}
        }
    }
    (got, lagged)
}

#[test]
fn messages_arrive_in_publish_order_to_matching_subscribers_only() {
    let d = Daemon::start(&["--memory-only"]);
    let publisher = d.client();
    let all = d.client();
    let one = d.client();
    let s_all = all.collab().subscribe("s", "selection/*", 0).unwrap();
    let s_one = one.collab().subscribe("s", "selection/mesh", 0).unwrap();
    let n = 500u64;
    for i in 0..n {
        let topic = if i % 5 == 0 {
            "selection/mesh"
        } else {
            "selection/light"
        };
        publisher
            .collab()
            .publish("s", topic, &i.to_le_bytes(), false)
            .unwrap();
        publisher
            .collab()
            .publish("s", "other", b"x", false)
            .unwrap();
    }
    let (got, lag) = drain(&all, s_all, n);
    assert!(lag.is_empty());
    let values: Vec<u64> = got
        .iter()
        .map(|(_, p)| u64::from_le_bytes(p[..8].try_into().unwrap()))
        .collect();
    assert_eq!(values, (0..n).collect::<Vec<_>>());
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "seqs grow");
    let (got, _) = drain(&one, s_one, n / 5);
    let values: Vec<u64> = got
        .iter()
        .map(|(_, p)| u64::from_le_bytes(p[..8].try_into().unwrap()))
        .collect();
    assert_eq!(values, (0..n).step_by(5).collect::<Vec<_>>());
    assert!(
        one.collab()
            .next_event(Duration::from_millis(300))
            .unwrap()
            .is_none(),
        "nothing else"
    );
}

#[test]
fn slow_subscriber_lags_once_while_a_fast_one_gets_everything() {
    let d = Daemon::start(&["--memory-only"]);
    let publisher = d.client();
    let slow = d.client();
    let s_slow = slow.collab().subscribe("s", "*", 16).unwrap();
    let fast = Arc::new(d.client());
    // The fast subscriber's queue holds the whole run, so whatever the machine's speed it loses nothing.
    let s_fast = fast.collab().subscribe("s", "*", 65536).unwrap();
    let n = 20_000u64;
    let reader = {
        let fast = fast.clone();
        std::thread::spawn(move || drain(&fast, s_fast, n))
    };
    let payload = vec![7u8; 1024];
    for i in 0..n {
        let mut p = payload.clone();
        p[..8].copy_from_slice(&i.to_le_bytes());
        publisher.collab().publish("s", "t", &p, false).unwrap();
    }
    let (fast_got, fast_lag) = reader.join().unwrap();
    assert!(
        fast_lag.is_empty(),
        "the fast subscriber lagged: {fast_lag:?}"
    );
    assert_eq!(fast_got.len() as u64, n);
    assert!(
        fast_got
            .iter()
            .enumerate()
            .all(|(i, (_, p))| p[..8] == (i as u64).to_le_bytes())
    );

    // The slow one read nothing meanwhile: it gets what fit, then one Lagged with the rest.
    let (slow_got, slow_lag) = drain(&slow, s_slow, n);
    assert_eq!(
        slow_lag.len(),
        1,
        "one Lagged event for one overflow, got {slow_lag:?}"
    );
    assert!(
        slow_lag[0] > n / 2,
        "most messages were dropped: {slow_lag:?}"
    );
    assert_eq!(slow_got.len() as u64 + slow_lag[0], n);
    assert!(
        slow_got.windows(2).all(|w| w[0].0 < w[1].0),
        "what arrived is in order"
    );
    let st = publisher.collab().stats().unwrap();
    assert_eq!(st.dropped, slow_lag[0]);
    assert_eq!(st.published, n);
}

#[test]
fn compare_and_set_under_contention_has_one_winner_per_version() {
    let d = Daemon::start(&["--memory-only"]);
    let owner = d.client();
    owner.collab().join("s", &opts("owner")).unwrap();
    let watcher = d.client();
    let w = watcher.collab().kv_watch("s", "counter", 0).unwrap();
    let rounds = 25;
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let c = d.client();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut wins = Vec::new();
                for round in 0..rounds {
                    barrier.wait();
                    let cur = c.collab().kv_get("s", "counter").unwrap();
                    let version = cur.map_or(0, |(v, _)| v);
                    barrier.wait();
                    let value = format!("round {round} by {t}");
                    if let Ok(v) = c
                        .collab()
                        .kv_cas("s", "counter", version, value.as_bytes())
                        .unwrap()
                    {
                        wins.push((round, v));
                    }
                }
                wins
            })
        })
        .collect();
    let mut wins: Vec<(u32, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    wins.sort();
    assert_eq!(
        wins.len(),
        rounds as usize,
        "exactly one winner per round: {wins:?}"
    );
    assert!(wins.iter().enumerate().all(|(i, (r, _))| *r == i as u32));
    assert!(wins.windows(2).all(|p| p[0].1 < p[1].1), "versions grow");
    let (v, _) = owner.collab().kv_get("s", "counter").unwrap().unwrap();
    assert_eq!(v, wins.last().unwrap().1);
    // The watcher saw every winning write, in order.
    let mut seen = Vec::new();
    while seen.len() < rounds as usize {
        match wait_for(
            &watcher,
            "kv change",
            |e| matches!(e, CollabEvent::Kv(k) if k.subscription == w),
        ) {
            CollabEvent::Kv(k) => seen.push(k.version),
            _ => unreachable!(),
        }
    }
    assert_eq!(seen, wins.iter().map(|w| w.1).collect::<Vec<_>>());
    // Delete, and a CAS on a stale version fails reporting the current one.
    assert!(owner.collab().kv_delete("s", "counter").unwrap());
    assert_eq!(
        owner.collab().kv_cas("s", "counter", v, b"x").unwrap(),
        Err(0)
    );
    assert!(
        owner
            .collab()
            .kv_cas("s", "counter", 0, b"x")
            .unwrap()
            .is_ok()
    );
}

#[test]
fn contested_lock_names_every_owner_and_locks_nothing() {
    let d = Daemon::start(&["--memory-only"]);
    let a = d.client();
    let b = d.client();
    let ja = a.collab().join("s", &opts("editor-a")).unwrap();
    let jb = b.collab().join("s", &opts("editor-b")).unwrap();
    assert_eq!(
        a.collab()
            .lock("s", &["a.uasset", "b.uasset"], "lighting pass")
            .unwrap(),
        LockOutcome::Acquired
    );
    let LockOutcome::Contested(c) = b
        .collab()
        .lock("s", &["b.uasset", "c.uasset", "a.uasset"], "")
        .unwrap()
    else {
        panic!("b got a lock a holds")
    };
    let mut names: Vec<_> = c
        .iter()
        .map(|l| (l.resource.as_str(), l.owner, l.note.as_str()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("a.uasset", ja.member, "lighting pass"),
            ("b.uasset", ja.member, "lighting pass")
        ]
    );
    assert!(c[0].who.starts_with("editor-a/"));
    assert_eq!(
        b.collab().locks("s", "").unwrap().len(),
        2,
        "c.uasset was not locked"
    );
    assert_eq!(
        b.collab().lock("s", &["c.uasset"], "").unwrap(),
        LockOutcome::Acquired
    );
    let lc = wait_for(
        &a,
        "lock of c",
        |e| matches!(e, CollabEvent::Lock(l) if l.lock[0].resource == "c.uasset"),
    );
    let CollabEvent::Lock(lc) = lc else {
        unreachable!()
    };
    assert_eq!((lc.state, lc.lock[0].owner), (LOCK_LOCKED, jb.member));
    assert_eq!(
        b.collab().unlock("s", &["a.uasset"]).unwrap(),
        0,
        "not b's to release"
    );
    assert_eq!(
        a.collab().unlock("s", &["a.uasset", "b.uasset"]).unwrap(),
        2
    );
    assert_eq!(b.collab().locks("s", "").unwrap().len(), 1);
    let feed = a.collab().activity("s", 0, 0).unwrap();
    assert_eq!(
        feed.entries.iter().filter(|e| e.kind == ACT_LOCK).count(),
        3
    );
}

#[test]
fn force_unlock_tells_the_owner_why() {
    let d = Daemon::start(&["--memory-only"]);
    let owner = d.client();
    let admin = d.client();
    let jo = owner.collab().join("s", &opts("editor")).unwrap();
    admin.collab().join("s", &opts("lead")).unwrap();
    assert_eq!(
        owner.collab().lock("s", &["hero.fbx"], "").unwrap(),
        LockOutcome::Acquired
    );
    assert_eq!(
        admin
            .collab()
            .force_unlock("s", &["hero.fbx"], "ana went home")
            .unwrap(),
        1
    );
    let e = wait_for(
        &owner,
        "forced release",
        |e| matches!(e, CollabEvent::Lock(l) if l.state == LOCK_FORCED),
    );
    let CollabEvent::Lock(l) = e else {
        unreachable!()
    };
    assert_eq!(l.reason, "ana went home");
    assert_eq!(
        (l.lock[0].resource.as_str(), l.lock[0].owner),
        ("hero.fbx", jo.member)
    );
    assert!(owner.collab().locks("s", "").unwrap().is_empty());
    // A connection that is not a member may force-unlock (sparkctl), but not lock.
    let outsider = d.client();
    assert_eq!(
        daemon_code(outsider.collab().lock("s", &["x"], "").unwrap_err()),
        ErrorCode::PermissionDenied
    );
}

#[test]
fn bad_requests_get_clear_errors_and_the_connection_stays_usable() {
    let d = Daemon::start(&["--memory-only"]);
    let c = d.client();
    let e = c.collab().join("", &opts("x")).unwrap_err();
    assert_eq!(daemon_code(e), ErrorCode::InvalidKey);
    let e = c.collab().publish("nope", "t", b"", false).unwrap_err();
    assert!(e.to_string().contains("no collab session"), "{e}");
    let mut o = opts("x");
    o.existing = true;
    assert_eq!(
        daemon_code(c.collab().join("absent", &o).unwrap_err()),
        ErrorCode::InvalidKey
    );
    c.collab().join("s", &opts("x")).unwrap();
    let big = vec![0u8; (1 << 20) + 1];
    assert_eq!(
        daemon_code(c.collab().publish("s", "t", &big, false).unwrap_err()),
        ErrorCode::TooLarge
    );
    assert_eq!(
        daemon_code(c.collab().lock("s", &[], "").unwrap_err()),
        ErrorCode::Malformed
    );
    assert_eq!(
        daemon_code(c.collab().lock("s", &[""], "").unwrap_err()),
        ErrorCode::InvalidKey
    );
    // A garbled payload is Malformed, not a crash.
    let f = spark_client::spark_proto::Frame::new(
        spark_client::spark_proto::service::COLLAB,
        spark_client::spark_proto::collab::LOCK,
        bytes::Bytes::from_static(&[1, 2, 3]),
    )
    .unwrap();
    let r = c.request(&f);
    assert_eq!(daemon_code(r.unwrap_err()), ErrorCode::Malformed);
    assert!(c.collab().sessions().unwrap().iter().any(|s| s.name == "s"));
}
