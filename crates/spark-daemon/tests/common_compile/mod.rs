//! Helpers the compile tests share: the shader corpus, requests, and the external tools (`spirv-val`,
//! `glslangValidator`), which are reported loudly when missing.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use spark_client::spark_proto::compile::{
    Backend, CompileRequest, CompileResult, Language, ResultStatus, Stage, Target,
};

pub fn shaders() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shaders")
}

pub fn read(name: &str) -> String {
    std::fs::read_to_string(shaders().join(name)).unwrap()
}

/// A request for corpus file `name` with the corpus as include directory.
pub fn request(name: &str, language: Language, stage: Stage, target: Target) -> CompileRequest {
    let mut r = CompileRequest::new(language, stage, target, read(name));
    r.include_dirs = vec![shaders().to_string_lossy().into_owned()];
    r
}

pub fn with_defines(mut r: CompileRequest, defines: &[&str]) -> CompileRequest {
    r.permutations = vec![defines.iter().map(|s| s.to_string()).collect()];
    r
}

pub fn with_backend(mut r: CompileRequest, b: Backend) -> CompileRequest {
    r.backend = b;
    r
}

/// Asserts success, printing the diagnostics otherwise.
pub fn ok(r: &CompileResult) -> &CompileResult {
    assert_eq!(
        r.status,
        ResultStatus::Ok,
        "compile failed: {:#?}",
        r.diagnostics
    );
    assert!(!r.output.is_empty());
    r
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

/// Whether `glslangValidator` runs here; says so loudly when it does not.
pub fn have_glslang(test: &str) -> bool {
    let h = have("glslangValidator");
    if !h {
        eprintln!(
            "SKIPPED ({test}): glslangValidator not found; install the Debian package glslang-tools \
             (scripts/test does)"
        );
    }
    h
}

/// Runs `spirv-val` on `spirv`; returns false (after saying so loudly) when spirv-val is missing, panics when
/// the module is invalid.
pub fn spirv_val(spirv: &[u8], what: &str) -> bool {
    if !have("spirv-val") {
        eprintln!(
            "SKIPPED spirv-val on {what}: spirv-val not found; install the Debian package spirv-tools \
             (scripts/test does)"
        );
        return false;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.spv");
    std::fs::write(&f, spirv).unwrap();
    let out = Command::new("spirv-val").arg(&f).output().unwrap();
    assert!(
        out.status.success(),
        "spirv-val rejects {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
