//! `sparkctl compile` against a real daemon: a shader to a file, diagnostics like a compiler with exit 5 on
//! an error, and a batch from JSON.

use std::path::Path;
use std::process::{Command, Output};

use spark_testkit::Daemon;

fn sparkctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparkctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const FRAG: &str = "#version 450\n#include \"inc/color.glsl\"\nlayout(location = 0) out vec4 o;\n\
                    void main() { o = vec4(COLOR * GAIN, 1.0); }\n";

#[test]
fn compiles_a_file_with_defines_and_includes() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "a.frag", FRAG);
    let inc = dir.path().join("lib");
    write(
        &inc,
        "inc/color.glsl",
        "const vec3 COLOR = vec3(1.0, 0.5, 0.25);\n",
    );
    let out = dir.path().join("a.spv");
    let r = sparkctl(
        &d.socket,
        &[
            "compile",
            &src,
            "--stage",
            "frag",
            "--target",
            "spirv",
            "-D",
            "GAIN=2.0",
            "-I",
            inc.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let spirv = std::fs::read(&out).unwrap();
    assert_eq!(&spirv[..4], &0x0723_0203u32.to_le_bytes());
    assert!(String::from_utf8_lossy(&r.stdout).contains("compiled"));
    // Again: a hit, same bytes.
    let r = sparkctl(
        &d.socket,
        &[
            "compile",
            &src,
            "-D",
            "GAIN=2.0",
            "-I",
            inc.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stdout).contains("cache hit"));
    assert_eq!(std::fs::read(&out).unwrap(), spirv);
}

#[test]
fn a_compile_error_prints_file_and_line_and_exits_5() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "bad.frag",
        "#version 450\nlayout(location = 0) out vec4 o;\nvoid main() {\n  o = nope;\n}\n",
    );
    let r = sparkctl(&d.socket, &["compile", &src]);
    assert_eq!(r.status.code(), Some(5));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains(&format!("{src}:4")), "{err}");
    assert!(err.contains("error"), "{err}");
}

#[test]
fn a_batch_compiles_every_permutation() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s/a.frag", FRAG);
    write(
        dir.path(),
        "s/inc/color.glsl",
        "const vec3 COLOR = vec3(1.0);\n",
    );
    let json = write(
        dir.path(),
        "perms.json",
        r#"{"file": "s/a.frag", "stage": "frag", "output_dir": "out", "defines": ["UNUSED=1"],
            "permutations": [{"name": "dim", "defines": ["GAIN=0.5"]}, {"name": "bright", "defines": ["GAIN=2.0"]},
                             {"name": "broken", "defines": []}]}"#,
    );
    let r = sparkctl(&d.socket, &["compile", "--batch", &json]);
    // "broken" leaves GAIN undefined: a compile error, so the batch exits 5 but writes the others.
    assert_eq!(
        r.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let dim = std::fs::read(dir.path().join("out/dim.spv")).unwrap();
    let bright = std::fs::read(dir.path().join("out/bright.spv")).unwrap();
    assert_ne!(dim, bright);
    assert!(!dir.path().join("out/broken.spv").exists());
    assert!(String::from_utf8_lossy(&r.stdout).contains("2 of 3 permutations compiled"));
    let stats = sparkctl(&d.socket, &["--json", "compile-stats"]);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["compiles"], 3);
    assert_eq!(v["failures"], 1);
}
