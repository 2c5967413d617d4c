//! The Compile service under stress: eight processes asking for one compile, a worker killed mid-job, a worker
//! that hangs past `--compile-timeout`, and a backend that is not installed.

mod common_compile;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common_compile::*;
use spark_client::Client;
use spark_client::spark_proto::compile::{
    Backend, CompileRequest, Language, Origin, ResultStatus, Stage, Target,
};
use spark_testkit::{Daemon, eventually};

const CHILD_ENV: &str = "SPARK_COMPILE_CHILD_SOCKET";

fn shared_request() -> CompileRequest {
    with_defines(
        request("lit.frag", Language::Glsl, Stage::Fragment, Target::SpirV),
        &["LIGHTS=4", "FOG"],
    )
}

/// The child role of `eight_processes_share_one_compile`: compiles the shared request and writes the bytes
/// to the file named by the test. Ignored in a normal run; the parent runs it with `--ignored`.
#[test]
#[ignore = "the child role of eight_processes_share_one_compile"]
fn child_compiles_the_shared_request() {
    let socket = std::env::var(CHILD_ENV).expect("run by eight_processes_share_one_compile");
    let out = std::env::var("SPARK_COMPILE_CHILD_OUT").unwrap();
    let c = Client::connect(&socket).unwrap();
    let res = c.compile_one(&shared_request()).unwrap();
    ok(&res);
    std::fs::write(out, &res.output).unwrap();
}

#[test]
fn eight_processes_share_one_compile() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_compiles_the_shared_request",
                    "--ignored",
                    "--quiet",
                ])
                .stdout(std::process::Stdio::null())
                .env(CHILD_ENV, &d.socket)
                .env(
                    "SPARK_COMPILE_CHILD_OUT",
                    dir.path().join(format!("out{i}")),
                )
                .spawn()
                .unwrap()
        })
        .collect();
    for mut ch in children {
        assert!(ch.wait().unwrap().success());
    }
    let outputs: Vec<Vec<u8>> = (0..8)
        .map(|i| std::fs::read(dir.path().join(format!("out{i}"))).unwrap())
        .collect();
    assert!(!outputs[0].is_empty());
    assert!(
        outputs.iter().all(|o| o == &outputs[0]),
        "all eight get identical bytes"
    );
    spirv_val(&outputs[0], "the shared compile");
    let s = d.client().compile_stats().unwrap();
    assert_eq!(s.compiles, 1, "exactly one compile ran: {s:?}");
    assert_eq!(s.hits + s.joins, 7, "{s:?}");
}

/// A glslangValidator stand-in: hangs on a source containing SPARK_TEST_HANG, writes its pid and waits to be
/// killed on SPARK_TEST_CRASH, otherwise runs the real tool.
fn wrapper(dir: &Path, pidfile: &Path) -> std::path::PathBuf {
    let script = dir.join("glslang-wrapper");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a; do last=$a; done\n\
             if [ \"$1\" = --version ]; then exec glslangValidator --version; fi\n\
             if grep -q SPARK_TEST_HANG \"$last\"; then exec sleep 30; fi\n\
             if grep -q SPARK_TEST_CRASH \"$last\"; then echo $$ > {pid}.tmp; mv {pid}.tmp {pid}; exec sleep 30; fi\n\
             exec glslangValidator \"$@\"\n",
            pid = pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn glslang_request(marker: &str) -> CompileRequest {
    let src = format!(
        "#version 450\n// {marker}\nlayout(location = 0) out vec4 o;\nvoid main() {{ o = vec4(1.0); }}\n"
    );
    let mut r = CompileRequest::new(Language::Glsl, Stage::Fragment, Target::SpirV, src);
    r.backend = Backend::Glslang;
    r
}

#[test]
fn a_killed_worker_fails_its_job_and_the_pool_carries_on() {
    if !have_glslang("a_killed_worker_fails_its_job_and_the_pool_carries_on") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("worker.pid");
    let script = wrapper(tmp.path(), &pidfile);
    let d = Daemon::start(&["--glslang", script.to_str().unwrap(), "--compile-jobs", "2"]);
    // The test kills the worker while it runs.
    let socket = d.socket.clone();
    let crashing = std::thread::spawn(move || {
        Client::connect(&socket)
            .unwrap()
            .compile_one(&glslang_request("SPARK_TEST_CRASH"))
            .unwrap()
    });
    assert!(eventually(Duration::from_secs(30), || pidfile.exists()));
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    // Other compiles carry on while that worker is stuck.
    let c = d.client();
    let fine = c.compile_one(&glslang_request("fine")).unwrap();
    ok(&fine);
    spirv_val(&fine.output, "a compile beside a stuck worker");
    assert!(
        Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    let crashed = crashing.join().unwrap();
    assert_eq!(crashed.status, ResultStatus::Failed);
    assert!(
        crashed.diagnostics[0]
            .message
            .contains("killed by signal 9"),
        "{:?}",
        crashed.diagnostics
    );
    // Not cached, and the pool still compiles with a new worker per job.
    let after = c.compile_one(&glslang_request("after")).unwrap();
    ok(&after);
    assert_eq!(after.origin, Origin::Fresh);
    let s = c.compile_stats().unwrap();
    assert_eq!(
        (s.worker_crashes, s.timeouts, s.compiles),
        (1, 0, 2),
        "{s:?}"
    );
    assert_eq!((s.running, s.queue_depth), (0, 0));
}

#[test]
fn a_hung_worker_is_stopped_at_the_timeout_and_the_pool_carries_on() {
    if !have_glslang("a_hung_worker_is_stopped_at_the_timeout_and_the_pool_carries_on") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = wrapper(tmp.path(), &tmp.path().join("unused.pid"));
    let d = Daemon::start(&[
        "--glslang",
        script.to_str().unwrap(),
        "--compile-timeout",
        "1",
    ]);
    let c = d.client();
    let hung = c.compile_one(&glslang_request("SPARK_TEST_HANG")).unwrap();
    assert_eq!(hung.status, ResultStatus::Failed);
    assert!(
        hung.diagnostics[0].message.contains("--compile-timeout"),
        "{:?}",
        hung.diagnostics
    );
    // Failures are not cached: asking again runs again (and times out again).
    let again = c.compile_one(&glslang_request("SPARK_TEST_HANG")).unwrap();
    assert_eq!(
        (again.status, again.origin),
        (ResultStatus::Failed, Origin::Fresh)
    );
    // The daemon and the pool carry on (an in-process compile: milliseconds, far inside the 1 s limit even on
    // a loaded machine, where a glslangValidator process start might not be).
    let naga = c
        .compile_one(&request(
            "blur.wgsl",
            Language::Wgsl,
            Stage::Compute,
            Target::SpirV,
        ))
        .unwrap();
    ok(&naga);
    let s = c.compile_stats().unwrap();
    assert_eq!(
        (s.timeouts, s.worker_crashes, s.compiles),
        (2, 0, 1),
        "{s:?}"
    );
    assert_eq!((s.running, s.queue_depth), (0, 0));
    assert!(c.ping().is_ok(), "the daemon is alive");
}

#[test]
fn a_missing_backend_is_a_clear_error_and_not_a_capability() {
    let d = Daemon::start(&["--glslang", "/nonexistent/glslangValidator"]);
    let c = d.client();
    let caps = &c.hello().capabilities;
    assert!(caps.iter().any(|x| x == "compile-naga"), "{caps:?}");
    assert!(!caps.iter().any(|x| x == "compile-glslang"), "{caps:?}");
    let mut r = request("shade.hlsl", Language::Hlsl, Stage::Fragment, Target::SpirV);
    r.entry = "PSMain".into();
    let res = c.compile_one(&r).unwrap();
    assert_eq!(res.status, ResultStatus::Failed);
    assert!(
        res.diagnostics[0].message.contains("glslang-tools"),
        "{:?}",
        res.diagnostics
    );
    // naga still works.
    ok(&c
        .compile_one(&request(
            "blur.wgsl",
            Language::Wgsl,
            Stage::Compute,
            Target::SpirV,
        ))
        .unwrap());
}
