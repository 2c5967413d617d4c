//! The Collab NATS bridge with a real `nats-server` (Debian package `nats-server`, JetStream on, loopback,
//! stopped by PID) and two `sparkd` on two sockets standing for two machines. Skips loudly without the
//! server (`scripts/test.d/collab-nats.sh` installs it).

mod common_collab;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use spark_client::spark_proto::collab::{
    BRIDGE_DEGRADED, BRIDGE_UP, LEFT_DAEMON_LOST, LOCK_EXPIRED,
};
use spark_client::{Client, CollabEvent, JoinOptions, LockOutcome};
use spark_testkit::{Daemon, eventually};

const WAIT: Duration = Duration::from_secs(30);

struct Nats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

fn nats_server() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("nats-server"))
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "SKIPPED: nats-server missing: install nats-server (apt-get install -y nats-server)"
        );
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nats {
    fn start(bin: &Path, dir: &Path) -> Nats {
        let mut n = Nats {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        n.spawn(bin);
        n
    }

    fn spawn(&mut self, bin: &Path) {
        let child = Command::new(bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        assert!(
            eventually(WAIT, || TcpStream::connect(("127.0.0.1", self.port))
                .is_ok()),
            "nats-server did not listen on {}",
            self.port
        );
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server by its PID.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-9", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bridged(nats: &Nats, host: &str, ttl: &str) -> Daemon {
    Daemon::start(&[
        "--memory-only",
        "--collab-nats",
        &nats.url(),
        "--collab-host",
        host,
        "--collab-lock-ttl-secs",
        ttl,
    ])
}

fn join(c: &Client, name: &str) -> u64 {
    let o = JoinOptions {
        client: name.into(),
        user: "ana".into(),
        shared: true,
        ..Default::default()
    };
    c.collab().join("level1", &o).unwrap().member
}

fn wait_bridge(c: &Client, state: u64) {
    assert!(
        eventually(WAIT, || c.collab().stats().unwrap().bridge == state),
        "bridge never reached state {state}"
    );
}

fn wait_for(c: &Client, what: &str, f: impl FnMut(&CollabEvent) -> bool) -> CollabEvent {
    common_collab::wait_for_event(c, what, WAIT, f)
}

#[test]
fn two_daemons_share_presence_messages_state_and_locks_and_a_dead_daemons_locks_expire() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&bin, dir.path());
    let mut da = bridged(&nats, "ws-a", "3");
    let db = bridged(&nats, "ws-b", "3");
    let a = da.client();
    let b = db.client();
    let ma = join(&a, "editor");
    wait_bridge(&a, u64::from(BRIDGE_UP));
    let mb = join(&b, "preview");
    wait_bridge(&b, u64::from(BRIDGE_UP));

    // Presence crosses: each daemon lists the other's member, with its host.
    let e = wait_for(
        &a,
        "remote join",
        |e| matches!(e, CollabEvent::Joined(j) if j.member[0].member == mb),
    );
    let CollabEvent::Joined(j) = e else {
        unreachable!()
    };
    assert_eq!(
        (j.member[0].host.as_str(), j.member[0].client.as_str()),
        ("ws-b", "preview")
    );
    assert!(eventually(WAIT, || b
        .collab()
        .members("level1")
        .unwrap()
        .iter()
        .any(|m| m.member == ma && m.host == "ws-a")));
    b.collab().set_presence("level1", b"camera 3").unwrap();
    wait_for(
        &a,
        "remote presence",
        |e| matches!(e, CollabEvent::Presence(p) if p.member == mb && &p.presence[..] == b"camera 3"),
    );

    // Messages cross.
    let sub = a.collab().subscribe("level1", "chat/*", 0).unwrap();
    b.collab()
        .publish("level1", "chat/general", b"hello from b", true)
        .unwrap();
    let e = wait_for(
        &a,
        "remote message",
        |e| matches!(e, CollabEvent::Message(m) if m.subscription == sub),
    );
    let CollabEvent::Message(m) = e else {
        unreachable!()
    };
    assert_eq!(
        (m.publisher, &m.payload[..], m.topic.as_str()),
        (mb, &b"hello from b"[..], "chat/general")
    );

    // State: one compare-and-set wins across daemons.
    let v = a
        .collab()
        .kv_cas("level1", "build/rev", 0, b"12")
        .unwrap()
        .expect("first create wins");
    assert_eq!(
        b.collab().kv_cas("level1", "build/rev", 0, b"13").unwrap(),
        Err(v)
    );
    assert_eq!(
        b.collab().kv_get("level1", "build/rev").unwrap().unwrap(),
        (v, bytes::Bytes::from_static(b"12"))
    );

    // A lock taken on one daemon is refused on the other, naming the owner.
    assert_eq!(
        a.collab()
            .lock("level1", &["maps/castle.umap"], "lighting")
            .unwrap(),
        LockOutcome::Acquired
    );
    let LockOutcome::Contested(c) = b
        .collab()
        .lock("level1", &["maps/castle.umap", "free.png"], "")
        .unwrap()
    else {
        panic!("b locked what a holds")
    };
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].owner, c[0].host.as_str(), c[0].who.as_str()),
        (ma, "ws-a", "editor/ana")
    );
    assert!(eventually(WAIT, || b
        .collab()
        .locks("level1", "")
        .unwrap()
        .iter()
        .any(|l| l.owner == ma)));
    // Held past several TTLs: the owner's daemon refreshes it.
    std::thread::sleep(Duration::from_secs(7));
    assert!(matches!(
        b.collab()
            .lock("level1", &["maps/castle.umap"], "")
            .unwrap(),
        LockOutcome::Contested(_)
    ));

    // The owner's daemon dies: its member leaves and its lock expires after the TTL, then b can take it.
    da.kill();
    wait_for(
        &b,
        "daemon lost",
        |e| matches!(e, CollabEvent::Left(l) if l.member == ma && l.reason == LEFT_DAEMON_LOST),
    );
    wait_for(
        &b,
        "lock expiry",
        |e| matches!(e, CollabEvent::Lock(l) if l.state == LOCK_EXPIRED && l.lock[0].owner == ma),
    );
    assert_eq!(
        b.collab()
            .lock("level1", &["maps/castle.umap"], "")
            .unwrap(),
        LockOutcome::Acquired
    );
}

#[test]
fn nats_down_degrades_shared_sessions_without_blocking_and_recovers() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(&bin, dir.path());
    let d = bridged(&nats, "ws-a", "30");
    let a = d.client();
    join(&a, "editor");
    a.collab()
        .join(
            "local-only",
            &JoinOptions {
                client: "tool".into(),
                ..Default::default()
            },
        )
        .unwrap();
    wait_bridge(&a, u64::from(BRIDGE_UP));
    assert_eq!(
        a.collab().lock("level1", &["x"], "").unwrap(),
        LockOutcome::Acquired
    );

    nats.stop();
    let e = wait_for(
        &a,
        "degraded status",
        |e| matches!(e, CollabEvent::Status(s) if s.bridge == BRIDGE_DEGRADED),
    );
    let CollabEvent::Status(s) = e else {
        unreachable!()
    };
    assert_eq!(s.session, "level1");
    assert_eq!(
        a.collab().stats().unwrap().bridge,
        u64::from(BRIDGE_DEGRADED)
    );
    assert_eq!(
        a.collab()
            .sessions()
            .unwrap()
            .iter()
            .find(|s| s.name == "level1")
            .unwrap()
            .bridge,
        BRIDGE_DEGRADED
    );
    // Local work goes on; shared locks and state answer at once with an error saying why.
    let sub = a.collab().subscribe("local-only", "*", 0).unwrap();
    a.collab()
        .publish("local-only", "t", b"still here", false)
        .unwrap();
    wait_for(
        &a,
        "local message",
        |e| matches!(e, CollabEvent::Message(m) if m.subscription == sub),
    );
    a.collab()
        .publish("level1", "t", b"local subscribers only", false)
        .unwrap();
    let err = a.collab().lock("level1", &["y"], "").unwrap_err();
    assert!(err.to_string().contains("degraded"), "{err}");
    let err = a.collab().kv_get("level1", "k").unwrap_err();
    assert!(err.to_string().contains("degraded"), "{err}");

    nats.spawn(&bin);
    wait_for(
        &a,
        "recovered status",
        |e| matches!(e, CollabEvent::Status(s) if s.bridge == BRIDGE_UP),
    );
    assert!(a.collab().stats().unwrap().bridge_reconnects >= 1);
    assert_eq!(
        a.collab().lock("level1", &["y"], "").unwrap(),
        LockOutcome::Acquired
    );
}
