//! The Watch service on a real file system, in temporary directories, through a real `sparkd`: the events
//! of file operations after settling, safe-saves, ignore files, floods, clocks across reconnects and
//! restarts, deleted roots, the inotify watch limit, and that nothing is left behind by a client that goes.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use spark_client::spark_proto::ErrorCode;
use spark_client::spark_proto::watch::{Change, ChangeKind, ENDED_ROOT_DELETED};
use spark_client::{Client, Clock, Error, WatchEvent, WatchSpec};
use spark_testkit::{Daemon, eventually};

/// The two tests that lower an inotify sysctl (for every process of this user) take this exclusively; every
/// other test here shares it, so none of them adds a watch while a limit is lowered.
static SYSCTL: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SYSCTL.read().unwrap_or_else(|p| p.into_inner())
}

fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    SYSCTL.write().unwrap_or_else(|p| p.into_inner())
}

/// How long a test waits for an event before giving up (a bound, not a measurement).
const WAIT: Duration = Duration::from_secs(20);
/// Quiet time after the expected events, to catch extra ones.
const QUIET: Duration = Duration::from_millis(400);

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("spark-watch")
        .tempdir()
        .unwrap()
}

fn c(kind: ChangeKind, p: &str) -> Change {
    Change::new(kind, p)
}

/// Collects the changes of subscription `sub` until `done(changes)` holds, then for [`QUIET`] more.
fn collect(
    cl: &Client,
    sub: u32,
    done: impl Fn(&[Change]) -> bool,
) -> (Vec<Change>, Vec<WatchEvent>) {
    let mut changes = Vec::new();
    let mut others = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut quiet_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let until = quiet_until.unwrap_or(deadline);
        if now >= until {
            break;
        }
        match cl.watch().next_event(until - now).unwrap() {
            Some(WatchEvent::Changes(ch)) if ch.subscription == sub => changes.extend(ch.changes),
            Some(e) => others.push(e),
            None => {}
        }
        if quiet_until.is_none() && (done(&changes) || !others.is_empty()) {
            quiet_until = Some(Instant::now() + QUIET);
        }
    }
    (changes, others)
}

fn subscribe(cl: &Client, root: &Path) -> (u32, Clock) {
    let r = cl.watch().subscribe(root, &WatchSpec::default()).unwrap();
    (
        r.subscription,
        Clock {
            instance: r.instance,
            seq: r.seq,
        },
    )
}

/// Runs `op` and expects exactly `want` (in order) as the settled changes.
fn expect(cl: &Client, sub: u32, op: impl FnOnce(), want: &[Change]) {
    op();
    let n = want.len();
    let (got, others) = collect(cl, sub, |ch| ch.len() >= n);
    assert!(others.is_empty(), "unexpected events: {others:?}");
    assert_eq!(got, want);
}

#[test]
fn file_and_directory_operations_arrive_in_order_after_settling() {
    let _sysctl = shared();
    let d = Daemon::start(&[]);
    let cl = d.client();
    let t = tmp();
    let r = t.path();
    let (sub, _) = subscribe(&cl, r);
    use ChangeKind::*;
    expect(
        &cl,
        sub,
        || fs::write(r.join("a.txt"), b"1").unwrap(),
        &[c(Created, "a.txt")],
    );
    expect(
        &cl,
        sub,
        || fs::write(r.join("a.txt"), b"22").unwrap(),
        &[c(Modified, "a.txt")],
    );
    expect(
        &cl,
        sub,
        || fs::rename(r.join("a.txt"), r.join("b.txt")).unwrap(),
        &[Change::renamed("a.txt", "b.txt")],
    );
    expect(
        &cl,
        sub,
        || {
            fs::create_dir(r.join("d")).unwrap();
            fs::write(r.join("d/x"), b"x").unwrap();
        },
        &[c(Created, "d"), c(Created, "d/x")],
    );
    expect(
        &cl,
        sub,
        || fs::rename(r.join("d"), r.join("e")).unwrap(),
        &[Change::renamed("d", "e"), Change::renamed("d/x", "e/x")],
    );
    // The renamed directory is watched under its new name.
    expect(
        &cl,
        sub,
        || fs::write(r.join("e/y"), b"y").unwrap(),
        &[c(Created, "e/y")],
    );
    // A tree delete: the children (in the order the file system lists them), then the directory.
    fs::remove_dir_all(r.join("e")).unwrap();
    let (mut got, others) = collect(&cl, sub, |ch| ch.len() >= 3);
    assert!(others.is_empty(), "unexpected events: {others:?}");
    assert_eq!(got.pop(), Some(c(Removed, "e")));
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got, [c(Removed, "e/x"), c(Removed, "e/y")]);
    expect(
        &cl,
        sub,
        || fs::remove_file(r.join("b.txt")).unwrap(),
        &[c(Removed, "b.txt")],
    );
}

#[test]
fn an_editor_safe_save_is_one_modified_event() {
    let _sysctl = shared();
    let d = Daemon::start(&[]);
    let cl = d.client();
    let t = tmp();
    let r = t.path();
    fs::write(r.join("scene.json"), b"old").unwrap();
    let (sub, _) = subscribe(&cl, r);
    expect(
        &cl,
        sub,
        || {
            // What vim, VS Code and most editors do: write a temp file, then rename it over the real one.
            fs::write(r.join(".scene.json.swp"), b"new contents").unwrap();
            fs::rename(r.join(".scene.json.swp"), r.join("scene.json")).unwrap();
        },
        &[c(ChangeKind::Modified, "scene.json")],
    );
}

#[test]
fn gitignored_paths_produce_no_events_and_get_no_watch() {
    let _sysctl = shared();
    let d = Daemon::start(&[]);
    let cl = d.client();
    let t = tmp();
    let r = t.path();
    fs::write(r.join(".gitignore"), "*.log\nbuild/\n").unwrap();
    fs::create_dir_all(r.join("build/deep/er")).unwrap();
    let (sub, _) = subscribe(&cl, r);
    let roots = cl.watch().list().unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(
        roots[0].watches, 1,
        "only the root is watched: build/ is ignored"
    );
    expect(
        &cl,
        sub,
        || {
            fs::write(r.join("a.log"), b"x").unwrap();
            fs::write(r.join("build/out.o"), b"x").unwrap();
            fs::create_dir(r.join("build/new")).unwrap();
            fs::write(r.join("real.txt"), b"x").unwrap();
        },
        &[c(ChangeKind::Created, "real.txt")],
    );
    // Switched off, the same paths are reported.
    let spec = WatchSpec {
        no_ignore_files: true,
        ..Default::default()
    };
    let all = cl.watch().subscribe(r, &spec).unwrap();
    expect(
        &cl,
        all.subscription,
        || fs::write(r.join("b.log"), b"x").unwrap(),
        &[c(ChangeKind::Created, "b.log")],
    );
}

#[test]
fn include_and_exclude_globs_filter_a_subscription() {
    let _sysctl = shared();
    let d = Daemon::start(&[]);
    let cl = d.client();
    let t = tmp();
    let r = t.path();
    fs::create_dir(r.join("tmp")).unwrap();
    let spec = WatchSpec {
        include: vec!["*.png".into()],
        exclude: vec!["tmp/**".into()],
        ..Default::default()
    };
    let sub = cl.watch().subscribe(r, &spec).unwrap().subscription;
    expect(
        &cl,
        sub,
        || {
            fs::write(r.join("a.txt"), b"x").unwrap();
            fs::write(r.join("tmp/b.png"), b"x").unwrap();
            fs::write(r.join("c.png"), b"x").unwrap();
        },
        &[c(ChangeKind::Created, "c.png")],
    );
}

#[test]
fn ten_thousand_files_at_once_arrive_in_full_or_as_a_rescan() {
    let _sysctl = shared();
    let d = Daemon::start(&[]);
    let cl = d.client();
    let t = tmp();
    let r = t.path();
    fs::create_dir(r.join("many")).unwrap();
    let (sub, _) = subscribe(&cl, r);
    const N: usize = 10_000;
    for i in 0..N {
        fs::write(r.join(format!("many/f{i:05}")), b"x").unwrap();
    }
    let want: HashSet<String> = (0..N).map(|i| format!("many/f{i:05}")).collect();
    let (got, others) = collect(&cl, sub, |ch| {
        ch.iter().filter(|c| c.kind == ChangeKind::Created).count() >= N
    });
    let created: HashSet<String> = got
        .iter()
        .filter(|c| c.kind == ChangeKind::Created)
        .map(|c| c.path.clone())
        .collect();
    let rescans = others
        .iter()
        .filter(|e| matches!(e, WatchEvent::Rescan(_)))
        .count();
    assert!(
        created.is_superset(&want) || rescans >= 1,
        "{} of {N} creations arrived and no rescan: changes were lost silently",
        created.intersection(&want).count()
    );
    // One storm is one rescan once it has passed; a writer stalled mid-storm on a loaded machine can split it,
    // and then the backoff (250 ms, doubling) bounds how many follow.
    assert!(rescans <= 3, "a rescan flood: got {rescans}");
}

#[test]
fn since_a_clock_after_a_reconnect_misses_no_change() {
    let _sysctl = shared();
    let d = Daemon::start(&[]);
    let t = tmp();
    let r = t.path();
    let clock = {
        let cl = d.client();
        let (sub, _) = subscribe(&cl, r);
        fs::write(r.join("before"), b"x").unwrap();
        let (got, _) = collect(&cl, sub, |ch| !ch.is_empty());
        assert_eq!(got, vec![c(ChangeKind::Created, "before")]);
        let q = cl.watch().query(r, &WatchSpec::default()).unwrap();
        Clock {
            instance: q.instance,
            seq: q.seq,
        }
    };
    // Disconnected: these happen while nobody listens.
    fs::write(r.join("while-away-1"), b"x").unwrap();
    fs::write(r.join("before"), b"changed").unwrap();
    fs::write(r.join("while-away-2"), b"x").unwrap();
    let cl = d.client();
    let want = [
        c(ChangeKind::Created, "while-away-1"),
        c(ChangeKind::Modified, "before"),
        c(ChangeKind::Created, "while-away-2"),
    ];
    let spec = WatchSpec {
        since: Some(clock),
        ..Default::default()
    };
    let mut q = None;
    assert!(eventually(WAIT, || {
        let r = cl.watch().query(r, &spec).unwrap();
        let done = r.changes.len() >= want.len();
        q = Some(r);
        done
    }));
    let q = q.unwrap();
    assert!(!q.fresh_instance);
    let got: HashSet<_> = q.changes.iter().cloned().collect();
    assert_eq!(got, want.iter().cloned().collect::<HashSet<_>>());
    // Subscribing with the clock delivers the same changes first.
    let sub = cl.watch().subscribe(r, &spec).unwrap().subscription;
    match cl.watch().next_event(WAIT).unwrap() {
        Some(WatchEvent::Changes(ch)) => {
            assert_eq!(ch.subscription, sub);
            assert!(!ch.fresh_instance());
            let got: HashSet<_> = ch.changes.into_iter().collect();
            assert_eq!(got, want.iter().cloned().collect::<HashSet<_>>());
        }
        other => panic!("expected the changes since the clock, got {other:?}"),
    }
}

#[test]
fn a_daemon_restart_answers_fresh_instance() {
    let _sysctl = shared();
    let mut d = Daemon::start(&[]);
    let t = tmp();
    let r = t.path();
    let q = d.client().watch().query(r, &WatchSpec::default()).unwrap();
    assert!(q.fresh_instance, "no clock given: nothing to compare with");
    let clock = Clock {
        instance: q.instance,
        seq: q.seq,
    };
    let spec = WatchSpec {
        since: Some(clock),
        ..Default::default()
    };
    let again = d.client().watch().query(r, &spec).unwrap();
    assert!(!again.fresh_instance);
    d.restart();
    let cl = d.client();
    let after = cl.watch().query(r, &spec).unwrap();
    assert!(
        after.fresh_instance,
        "history from before the restart is gone: must say so"
    );
    assert!(after.changes.is_empty());
    let sub = cl.watch().subscribe(r, &spec).unwrap().subscription;
    match cl.watch().next_event(WAIT).unwrap() {
        Some(WatchEvent::Changes(ch)) => {
            assert_eq!(ch.subscription, sub);
            assert!(ch.fresh_instance());
        }
        other => panic!("expected a fresh_instance event, got {other:?}"),
    }
}

/// inotify watches the process holds, from `/proc/<pid>/fdinfo`.
fn inotify_watches(pid: u32) -> usize {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    dir.filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
        .map(|s| s.lines().filter(|l| l.starts_with("inotify wd:")).count())
        .sum()
}

#[test]
fn a_client_that_disconnects_leaves_no_watch_behind() {
    let _sysctl = shared();
    let d = Daemon::start(&["--watch-grace-secs", "0"]);
    let t = tmp();
    let r = t.path();
    for i in 0..5 {
        fs::create_dir_all(r.join(format!("d{i}/sub"))).unwrap();
    }
    {
        let cl = d.client();
        let resp = cl.watch().subscribe(r, &WatchSpec::default()).unwrap();
        assert_eq!(resp.watched_dirs, 11);
        assert_eq!(inotify_watches(d.pid()), 11);
        let roots = cl.watch().list().unwrap();
        assert_eq!(roots[0].subscribers, 1);
    }
    let cl = d.client();
    assert!(
        eventually(WAIT, || cl.watch().list().unwrap().is_empty()
            && inotify_watches(d.pid()) == 0),
        "the root and its OS watches must be released: {:?}, {} inotify watches",
        cl.watch().list().unwrap(),
        inotify_watches(d.pid())
    );
}

#[test]
fn unsubscribe_and_the_grace_period_keep_a_root_for_reconnects() {
    let _sysctl = shared();
    let d = Daemon::start(&[]);
    let cl = d.client();
    let t = tmp();
    let (sub, _) = subscribe(&cl, t.path());
    let (sub2, _) = subscribe(&cl, t.path());
    let roots = cl.watch().list().unwrap();
    assert_eq!(roots.len(), 1, "one OS watch per root, shared");
    assert_eq!(roots[0].subscribers, 2);
    assert!(cl.watch().unsubscribe(sub).unwrap());
    assert!(!cl.watch().unsubscribe(sub).unwrap());
    assert!(
        !d.client().watch().unsubscribe(sub2).unwrap(),
        "not that connection's"
    );
    assert!(cl.watch().unsubscribe(sub2).unwrap());
    let roots = cl.watch().list().unwrap();
    assert_eq!(
        roots.len(),
        1,
        "kept for the grace period (60 s by default)"
    );
    assert_eq!(roots[0].subscribers, 0);
}

#[test]
fn a_deleted_root_ends_its_subscriptions() {
    let _sysctl = shared();
    let d = Daemon::start(&[]);
    let cl = d.client();
    let t = tmp();
    let r = t.path().join("root");
    fs::create_dir_all(r.join("sub")).unwrap();
    fs::write(r.join("sub/f"), b"x").unwrap();
    let (sub, _) = subscribe(&cl, &r);
    fs::remove_dir_all(&r).unwrap();
    let (_, others) = collect(&cl, sub, |_| false);
    match others.as_slice() {
        [WatchEvent::Ended(e)] => {
            assert_eq!(e.subscription, sub);
            assert_eq!(e.reason, ENDED_ROOT_DELETED);
        }
        other => panic!("expected one Ended event, got {other:?}"),
    }
    assert!(cl.watch().list().unwrap().is_empty());
    cl.ping().unwrap();
}

#[test]
fn bad_roots_are_clear_errors() {
    let _sysctl = shared();
    let d = Daemon::start(&[]);
    let cl = d.client();
    let err = cl
        .watch()
        .subscribe(Path::new("relative/path"), &WatchSpec::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Daemon(e) if e.kind() == ErrorCode::InvalidKey),
        "{err}"
    );
    let err = cl
        .watch()
        .subscribe(Path::new("/nonexistent/spark-watch"), &WatchSpec::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Daemon(e) if e.kind() == ErrorCode::Io),
        "{err}"
    );
    let spec = WatchSpec {
        include: vec!["[".into()],
        ..Default::default()
    };
    let t = tmp();
    let err = cl.watch().subscribe(t.path(), &spec).unwrap_err();
    assert!(
        matches!(&err, Error::Daemon(e) if e.kind() == ErrorCode::Malformed),
        "{err}"
    );
}

const MAX_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// Restores the sysctl when dropped, also when the test panics.
struct RestoreSysctl(String);
impl Drop for RestoreSysctl {
    fn drop(&mut self) {
        if let Err(e) = fs::write(MAX_WATCHES, &self.0) {
            eprintln!("FAILED to restore {MAX_WATCHES} to {}: {e}", self.0.trim());
        }
    }
}

/// inotify watches every process of this user holds now.
fn user_watches() -> usize {
    let Ok(procs) = fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .map(inotify_watches)
        .sum()
}

#[test]
fn running_out_of_inotify_watches_is_a_clear_error_and_the_daemon_stays_healthy() {
    let _sysctl = exclusive();
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED running_out_of_inotify_watches: needs root to lower {MAX_WATCHES} (run the suite as root)"
        );
        return;
    }
    let d = Daemon::start(&[]);
    let cl = d.client();
    let t = tmp();
    let r = t.path();
    for i in 0..64 {
        fs::create_dir(r.join(format!("d{i}"))).unwrap();
    }
    let old = fs::read_to_string(MAX_WATCHES).unwrap();
    let err = {
        let _restore = RestoreSysctl(old.clone());
        // Room for what this user already watches plus a few: the 65 directories cannot all be watched.
        fs::write(MAX_WATCHES, format!("{}\n", user_watches() + 8)).unwrap();
        cl.watch().subscribe(r, &WatchSpec::default()).unwrap_err()
    };
    assert_eq!(fs::read_to_string(MAX_WATCHES).unwrap(), old);
    match &err {
        Error::Daemon(e) => {
            assert_eq!(e.kind(), ErrorCode::NoSpace);
            assert!(
                e.message.contains("fs.inotify.max_user_watches"),
                "{}",
                e.message
            );
        }
        other => panic!("expected the daemon's error, got {other}"),
    }
    // Healthy: it answers, holds no half-made watch, and watches the same tree once the limit allows.
    cl.ping().unwrap();
    assert!(cl.watch().list().unwrap().is_empty());
    assert_eq!(inotify_watches(d.pid()), 0);
    let ok = cl.watch().subscribe(r, &WatchSpec::default()).unwrap();
    assert_eq!(ok.watched_dirs, 65);
}

const MAX_QUEUED: &str = "/proc/sys/fs/inotify/max_queued_events";

/// Restores a sysctl file when dropped, also when the test panics.
struct Restore(&'static str, String);
impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = fs::write(self.0, &self.1) {
            eprintln!("FAILED to restore {} to {}: {e}", self.0, self.1.trim());
        }
    }
}

#[test]
fn an_overflow_is_one_rescan_per_storm_and_loses_history_loudly() {
    let _sysctl = exclusive();
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED an_overflow_is_one_rescan: needs root to lower {MAX_QUEUED} (run the suite as root)"
        );
        return;
    }
    let d = Daemon::start(&[]);
    let cl = d.client();
    let t = tmp();
    let r = t.path();
    let resp = {
        // The queue length is fixed when the inotify instance is made: lower it only around the Subscribe.
        let old = fs::read_to_string(MAX_QUEUED).unwrap();
        let _restore = Restore(MAX_QUEUED, old);
        fs::write(MAX_QUEUED, "16\n").unwrap();
        cl.watch().subscribe(r, &WatchSpec::default()).unwrap()
    };
    let before = Clock {
        instance: resp.instance,
        seq: resp.seq,
    };
    // Three storms of 300 files: each overflows a 16-event queue many times over.
    const STORMS: usize = 3;
    let pid = rustix::process::Pid::from_raw(d.pid() as i32).unwrap();
    for s in 0..STORMS {
        // The daemon is stopped during the storm, so the kernel queue overflows whatever the machine's load.
        rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
        for i in 0..300 {
            fs::write(r.join(format!("s{s}-{i}")), b"x").unwrap();
        }
        rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    // Everything until the daemon has been quiet for longer than any backoff it could be waiting out here.
    let mut others = Vec::new();
    while let Some(e) = cl.watch().next_event(Duration::from_secs(3)).unwrap() {
        others.push(e);
    }
    let rescans = others
        .iter()
        .filter(|e| matches!(e, WatchEvent::Rescan(_)))
        .count();
    assert!(rescans >= 1, "the overflow must be reported: {others:?}");
    assert!(
        rescans <= STORMS,
        "at most one rescan per storm (backoff), got {rescans}"
    );
    let list = cl.watch().list().unwrap();
    assert_eq!(list[0].rescans as usize, rescans);
    assert_eq!(
        list[0].files,
        (STORMS * 300) as u64,
        "the rescan learnt the tree"
    );
    // History before the overflow is gone, and says so.
    let spec = WatchSpec {
        since: Some(before),
        ..Default::default()
    };
    assert!(cl.watch().query(r, &spec).unwrap().fresh_instance);
}
