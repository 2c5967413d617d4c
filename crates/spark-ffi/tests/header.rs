//! The committed C header must match the code.
//!
//! Always: every exported function appears in `include/sparkdaemon.h` and the header declares nothing the
//! library does not export. With cbindgen (the pinned version, as `./scripts/gen-header` installs it): the
//! regenerated header is byte-identical to the committed one. Without it the second check prints a loud
//! SKIP, unless `SPARK_REQUIRE_CBINDGEN=1` (set by the test suite's ffi hook), which makes it a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Keep in step with scripts/gen-header.
const CBINDGEN_VERSION: &str = "0.29.4";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../../include/sparkdaemon.h")
}

fn exported_fns(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = src.lines().peekable();
    while let Some(l) = lines.next() {
        if l.trim() != "#[unsafe(no_mangle)]" {
            continue;
        }
        let sig = lines.next().expect("a fn after #[no_mangle]");
        let name = sig
            .split("fn ")
            .nth(1)
            .and_then(|r| r.split('(').next())
            .expect("fn name");
        out.push(name.trim().to_string());
    }
    out.sort();
    out
}

fn declared_fns(header: &str) -> Vec<String> {
    let mut out: Vec<String> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with("//") && !l.starts_with('#'))
        .filter_map(|l| l.find("spark_").map(|i| &l[i..]))
        .filter_map(|r| r.split_once('(').map(|(name, _)| name.to_string()))
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every source file of the crate, concatenated: the entry points live in modules by concern.
fn all_sources() -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(crate_dir().join("src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    assert!(files.len() > 1, "the modules are found: {files:?}");
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    let src = all_sources();
    let header =
        std::fs::read_to_string(header_path()).expect("include/sparkdaemon.h is committed");
    let exported = exported_fns(&src);
    assert!(exported.len() > 20, "found the exports: {exported:?}");
    assert_eq!(
        declared_fns(&header),
        exported,
        "include/sparkdaemon.h is stale: run ./scripts/gen-header"
    );
}

fn find_cbindgen() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(home) = std::env::var_os("CARGO_HOME").or_else(|| {
        std::env::var_os("HOME").map(|h| {
            let mut p = PathBuf::from(h);
            p.push(".cargo");
            p.into_os_string()
        })
    }) {
        dirs.push(Path::new(&home).join("bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("cbindgen"))
        .find(|p| p.is_file())
}

#[test]
fn header_is_what_cbindgen_generates() {
    let required = std::env::var_os("SPARK_REQUIRE_CBINDGEN").is_some_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "SPARK_REQUIRE_CBINDGEN=1 but {why}");
        eprintln!(
            "\n**** SKIP header_is_what_cbindgen_generates: {why}; install it with ./scripts/gen-header ****\n"
        );
        println!("SKIP: cbindgen header drift check ({why})");
    };
    let Some(cbindgen) = find_cbindgen() else {
        return skip("cbindgen is not installed".into());
    };
    let version = Command::new(&cbindgen)
        .arg("--version")
        .output()
        .expect("run cbindgen --version");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if !version.ends_with(CBINDGEN_VERSION) {
        return skip(format!(
            "{version} is installed, the header is pinned to cbindgen {CBINDGEN_VERSION}"
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sparkdaemon.h");
    let st = Command::new(&cbindgen)
        .arg("--config")
        .arg(crate_dir().join("cbindgen.toml"))
        .arg("--output")
        .arg(&out)
        .arg(crate_dir().join("src/lib.rs"))
        .status()
        .expect("run cbindgen");
    assert!(st.success(), "cbindgen failed");
    let fresh = std::fs::read_to_string(&out).unwrap();
    let committed = std::fs::read_to_string(header_path()).unwrap();
    assert!(
        fresh == committed,
        "include/sparkdaemon.h differs from what cbindgen generates from the code: run ./scripts/gen-header and \
         commit the result\n--- generated ---\n{fresh}"
    );
}
