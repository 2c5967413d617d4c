//! `sparkctl collab` against a real daemon, with a Rust client as the other member.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use spark_client::spark_proto::collab::LOCK_FORCED;
use spark_client::{CollabEvent, JoinOptions, LockOutcome};
use spark_testkit::Daemon;

fn sparkctl(socket: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparkctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    assert!(
        o.status.success(),
        "sparkctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn sessions_members_locks_publish_subscribe_and_force_unlock() {
    let d = Daemon::start(&["--memory-only"]);
    let s = &d.socket;
    let editor = d.client();
    let opts = JoinOptions {
        client: "editor".into(),
        user: "ana".into(),
        presence: b"viewport 1".to_vec().into(),
        ..Default::default()
    };
    editor.collab().join("level1", &opts).unwrap();
    assert_eq!(
        editor
            .collab()
            .lock("level1", &["maps/castle.umap"], "lighting")
            .unwrap(),
        LockOutcome::Acquired
    );

    let t = out(&sparkctl(s, &["collab", "sessions"]));
    assert!(
        t.lines()
            .any(|l| l.starts_with("level1") && l.contains(" 1 ")),
        "{t}"
    );
    let t = out(&sparkctl(s, &["collab", "members", "level1"]));
    assert!(
        t.contains("editor (ana@") && t.contains("presence: viewport 1"),
        "{t}"
    );
    let t = out(&sparkctl(s, &["--json", "collab", "locks", "level1"]));
    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v[0]["resource"], "maps/castle.umap");
    assert_eq!(v[0]["who"], "editor/ana");
    assert_eq!(v[0]["note"], "lighting");

    // A live subscriber prints what is published after it subscribed.
    let mut sub = Command::new(env!("CARGO_BIN_EXE_sparkctl"))
        .arg("--socket")
        .arg(s)
        .args(["collab", "subscribe", "level1", "chat/*", "--count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while editor.collab().stats().unwrap().subscriptions == 0 {
        assert!(
            Instant::now() < deadline,
            "sparkctl collab subscribe never subscribed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    out(&sparkctl(
        s,
        &["collab", "publish", "level1", "chat/general", "hello"],
    ));
    out(&sparkctl(
        s,
        &["collab", "publish", "level1", "other", "not for it"],
    ));
    out(&sparkctl(
        s,
        &[
            "collab",
            "publish",
            "level1",
            "chat/lighting",
            "baking now",
            "--persistent",
        ],
    ));
    let lines: Vec<String> = BufReader::new(sub.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(sub.wait().unwrap().success());
    assert_eq!(lines, ["chat/general hello", "chat/lighting baking now"]);
    let t = out(&sparkctl(s, &["collab", "activity", "level1"]));
    assert!(
        t.contains("message") && t.contains("baking now") && !t.contains("not for it"),
        "{t}"
    );

    // Unlock needs --force; with it the owner is told why.
    let o = sparkctl(s, &["collab", "unlock", "level1", "maps/castle.umap"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    let t = out(&sparkctl(
        s,
        &[
            "collab",
            "unlock",
            "--force",
            "--reason",
            "build needs it",
            "level1",
            "maps/castle.umap",
        ],
    ));
    assert!(t.contains("released 1"), "{t}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the owner was not told");
        if let Some(CollabEvent::Lock(l)) = editor
            .collab()
            .next_event(Duration::from_millis(200))
            .unwrap()
            && l.state == LOCK_FORCED
        {
            assert_eq!(l.reason, "build needs it");
            break;
        }
    }
    assert!(out(&sparkctl(s, &["collab", "locks", "level1"])).is_empty());
    let o = sparkctl(s, &["collab", "members", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no collab session"));
}
