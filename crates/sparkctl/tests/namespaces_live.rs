//! `sparkctl stats` against the real daemon, through the Namespaces message (Control 0x000D). The fallback
//! for daemons without it is covered by tests/fake_daemon.rs.

use spark_testkit::Daemon;

#[test]
fn the_daemon_reports_its_namespaces_and_sparkctl_lists_them_all() {
    let d = Daemon::start(&["--memory-only"]);
    let c = d.client();
    let spaces = c.namespaces().expect("the daemon answers Namespaces");
    assert!(spaces.iter().any(|n| n.name == "shader"), "{spaces:?}");
    assert!(spaces.iter().any(|n| n.name == "asset"), "{spaces:?}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sparkctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "stats"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed: Vec<&str> = v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    let reported: Vec<&str> = spaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(listed, reported);
}
