//! The Win32 wrappers against the real API (run under Wine by `scripts/test.d/windows.sh`; on other
//! platforms this file is empty).
#![cfg(windows)]

use spark_platform::windows as win;

#[test]
fn the_current_user_has_a_string_sid_and_the_default_pipe_is_named_after_it() {
    let sid = win::current_user_sid().unwrap();
    assert!(sid.starts_with("S-1-"), "{sid}");
    assert_eq!(
        win::process_user_sid(std::process::id()).unwrap(),
        sid,
        "our own process, looked up by pid, runs as us"
    );
    let pipe = win::default_pipe();
    assert_eq!(
        pipe.to_string_lossy(),
        format!(r"\\.\pipe\spark-{sid}-sparkd")
    );
}

#[test]
fn an_owner_only_descriptor_is_built_for_a_sid_and_refused_for_anything_else() {
    let sid = win::current_user_sid().unwrap();
    let sd = win::OwnerOnly::new(&sid).unwrap();
    assert!(!sd.attributes().lpSecurityDescriptor.is_null());
    for bad in ["", "alice", "S-1-5;(A;;GA;;;WD)", "S-1-5)(A;;GA;;;WD"] {
        let e = win::OwnerOnly::new(bad).err().expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn lock_file_ex_is_exclusive_between_handles_and_released_on_close() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.lock");
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .unwrap()
    };
    let a = open();
    let b = open();
    assert!(win::try_lock_exclusive(&a).unwrap(), "first holder");
    assert!(
        !win::try_lock_exclusive(&b).unwrap(),
        "second handle is refused"
    );
    drop(a);
    assert!(
        win::try_lock_exclusive(&b).unwrap(),
        "free once the holder closed"
    );
}

#[test]
fn process_liveness_follows_the_process() {
    assert!(win::process_alive(std::process::id()));
    let mut child = std::process::Command::new("cmd.exe")
        .args(["/c", "exit", "0"])
        .spawn()
        .expect("cmd.exe runs");
    let pid = child.id();
    child.wait().unwrap();
    // Once reaped and its handle closed, the pid names no process (or, should it be reused meanwhile, a
    // different one: the test would then fail loudly rather than pass wrongly).
    drop(child);
    assert!(!win::process_alive(pid), "pid {pid} exited");
    assert!(!win::process_alive(0));
}
