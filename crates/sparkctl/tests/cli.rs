//! sparkctl end to end: output and exit codes with the daemon up and down.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use spark_testkit::Daemon;

fn sparkctl(socket: &std::path::Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sparkctl"));
    c.arg("--socket").arg(socket).args(args);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

#[test]
fn exit_codes_with_the_daemon_up() {
    let d = Daemon::start(&[]);
    let s = &d.socket;
    let o = sparkctl(s, &["ping"], None);
    assert_eq!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("pong"));
    assert_eq!(code(&sparkctl(s, &["version"], None)), 0);
    let o = sparkctl(
        s,
        &["shader", "put", "0123abcd", "1", "2"],
        Some(b"blob from stdin"),
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let o = sparkctl(s, &["shader", "get", "0123abcd", "1", "2"], None);
    assert_eq!(
        (code(&o), o.stdout.as_slice()),
        (0, &b"blob from stdin"[..])
    );
    assert_eq!(
        code(&sparkctl(s, &["shader", "get", "0123abcd", "1", "3"], None)),
        3,
        "miss"
    );
    assert_eq!(
        code(&sparkctl(
            s,
            &["shader", "exists", "0123abcd", "1", "2"],
            None
        )),
        0
    );
    assert_eq!(
        code(&sparkctl(s, &["shader", "exists", "ffff", "1", "2"], None)),
        3
    );
    // Files in and out, through the streaming path.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("in.bin");
    let dst = tmp.path().join("out.bin");
    let data: Vec<u8> = (0..(20usize << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    assert_eq!(
        code(&sparkctl(
            s,
            &["asset", "put", "tex/a.png", "2", src.to_str().unwrap()],
            None
        )),
        0
    );
    assert_eq!(
        code(&sparkctl(
            s,
            &[
                "asset",
                "get",
                "tex/a.png",
                "2",
                "-o",
                dst.to_str().unwrap()
            ],
            None
        )),
        0
    );
    assert!(std::fs::read(&dst).unwrap() == data);
    let o = sparkctl(s, &["--json", "asset", "invalidate", "tex/a.png"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dropped"], 1);
    // A daemon error: an empty asset path.
    let o = sparkctl(s, &["asset", "put", "", "0"], Some(b"x"));
    assert_eq!(code(&o), 1);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("empty"),
        "says what is wrong"
    );
    stats_as_table_and_json(s);
    // A bad hash is a local usage error; a bad command is a usage error.
    assert_eq!(
        code(&sparkctl(s, &["shader", "get", "xyz", "1", "2"], None)),
        4
    );
    assert_eq!(code(&sparkctl(s, &["frobnicate"], None)), 64);
    assert_eq!(code(&sparkctl(s, &["shutdown"], None)), 0);
}

/// After one shader put and one stored asset put (plus a rejected one): the fallback per-service stats, as
/// this branch's daemon has no Namespaces handler yet, rendered as namespaces.
fn stats_as_table_and_json(s: &std::path::Path) {
    let o = sparkctl(s, &["stats"], None);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("shader (service 0x0002)")
            && t.contains("asset (service 0x0003)")
            && t.contains("connections"),
        "{t}"
    );
    let o = sparkctl(s, &["--json", "stats"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["daemon"]["services"],
        serde_json::json!([1, 2, 3, 4, 5, 7])
    );
    let ns = |name: &str| {
        v["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("namespace {name} in {v}"))
            .clone()
    };
    assert_eq!(ns("shader")["counters"]["entries"], 1);
    assert_eq!(
        ns("asset")["counters"]["puts"],
        1,
        "the rejected put never reached the store"
    );
}

#[test]
fn exit_code_2_with_the_daemon_down() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("nobody.sock");
    for args in [
        &["ping"][..],
        &["stats"],
        &["shader", "get", "1", "1", "1"],
        &["shutdown"],
    ] {
        let o = sparkctl(&s, args, None);
        assert_eq!(code(&o), 2, "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("not running"),
            "{args:?}: says so"
        );
    }
}

#[test]
fn watch_prints_live_changes_queries_since_a_clock_and_lists_roots() {
    let d = Daemon::start(&[]);
    let s = &d.socket;
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_str().unwrap();
    let live = Command::new(env!("CARGO_BIN_EXE_sparkctl"))
        .arg("--socket")
        .arg(s)
        .args(["--json", "watch", root, "--glob", "*.txt", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the subscription shows in `watch list`, a write is seen.
    assert!(spark_testkit::eventually(
        std::time::Duration::from_secs(20),
        || {
            let o = sparkctl(s, &["--json", "watch", "list"], None);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            v["roots"][0]["subscribers"] == 1
        }
    ));
    let o = sparkctl(s, &["watch", "list"], None);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains(root) && table.contains("subscribers"),
        "{table}"
    );
    let first = sparkctl(s, &["--json", "watch", "--since", "c:1:1", root], None);
    let q: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(q["fresh_instance"], true, "a foreign clock: fresh instance");
    let clock = q["clock"].as_str().unwrap().to_string();
    std::fs::write(t.path().join("skipped.bin"), b"x").unwrap();
    std::fs::write(t.path().join("a.txt"), b"x").unwrap();
    let out = live.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "the subscription line and one batch: {lines:?}"
    );
    assert_eq!(
        lines[1]["changes"],
        serde_json::json!([{"kind": "created", "path": "a.txt"}])
    );
    let o = sparkctl(s, &["watch", "--since", &clock, root], None);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(code(&o), 0);
    assert!(
        text.contains("created   a.txt") && text.contains("created   skipped.bin"),
        "{text}"
    );
    assert_eq!(
        code(&sparkctl(s, &["watch", "--since", "nonsense", root], None)),
        4
    );
}

#[test]
fn a_reader_that_stops_early_ends_output_quietly() {
    let d = Daemon::start(&["--memory-only"]);
    // `sparkctl stats | head -0`: the pipe's reader is gone before sparkctl writes a line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparkctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["stats", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(&o), 0, "a closed stdout is not an error: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
