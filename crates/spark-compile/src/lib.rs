//! Shader compilation shared by `sparkd` and its clients.
//!
//! - [`include`](mod@include): `#include` expansion that never reads outside the include directories a request names (or
//!   its include map), with a line map so diagnostics point at the file and line they are about;
//! - [`key`]: the canonical encoding and BLAKE3 cache key of one compile (specified in `docs/protocol.md`
//!   §13.5, so other tools can compute it);
//! - [`naga_backend`]: the in-process backend (WGSL and GLSL in; SPIR-V, MSL, HLSL and GLSL out) with
//!   reflection;
//! - [`glslang`]: the command line and output parsing for `glslangValidator` (Debian `glslang-tools`); running
//!   it as a subprocess is the daemon's business, so this crate stays free of processes and async.
//!
//! The daemon runs these behind its pool and cache; the client's `TieredShaderCache` uses the same code to
//! compile locally when no daemon answers, so a local compile and a daemon compile agree byte for byte.

pub mod glslang;
pub mod include;
pub mod key;
pub mod naga_backend;

pub use spark_proto::compile::{
    Backend, Binding, BindingKind, Diagnostic, Language, Severity, Stage, Target,
};

/// Default limit on a request's source plus every included file, in bytes.
pub const DEFAULT_MAX_INPUT: usize = 4 * 1024 * 1024;

/// One permutation of a compile, with its includes already expanded: what a backend runs.
#[derive(Debug, Clone)]
pub struct Job {
    pub language: Language,
    pub stage: Stage,
    pub target: Target,
    /// Never [`Backend::Auto`]: see [`resolve_backend`].
    pub backend: Backend,
    pub flags: u8,
    pub spirv_version: u16,
    pub entry: String,
    /// Sorted, without duplicates (`NAME` or `NAME=VALUE`).
    pub defines: Vec<String>,
    pub expanded: include::Expanded,
}

impl Job {
    /// The job for one permutation of `req`, whose defines are already canonical and whose includes are
    /// already expanded: the daemon and the client's local fallback build their jobs the same way.
    pub fn for_permutation(
        req: &spark_proto::compile::CompileRequest,
        backend: Backend,
        defines: Vec<String>,
        expanded: include::Expanded,
    ) -> Job {
        Job {
            language: req.language,
            stage: req.stage,
            target: req.target,
            backend,
            flags: req.flags,
            spirv_version: req.spirv_version,
            entry: req.entry.clone(),
            defines,
            expanded,
        }
    }

    /// The defines as (name, value) pairs; a bare `NAME` has the value `1`, as in C preprocessors.
    pub fn define_pairs(&self) -> Vec<(String, String)> {
        self.defines
            .iter()
            .map(|d| match d.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (d.clone(), "1".to_string()),
            })
            .collect()
    }
}

/// The successful output of a backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub output: Vec<u8>,
    /// Warnings (a successful compile has no errors).
    pub diagnostics: Vec<Diagnostic>,
    pub bindings: Vec<Binding>,
    pub workgroup_size: [u32; 3],
}

/// What a backend says about a job: compiled, or the source's errors (a deterministic answer, cached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Compiled(Compiled),
    Errors(Vec<Diagnostic>),
}

/// Sorts and de-duplicates defines, and checks each is `NAME` or `NAME=VALUE` with a C identifier as name.
pub fn canonical_defines(defines: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(defines.len());
    for d in defines {
        let name = d.split_once('=').map_or(d.as_str(), |(n, _)| n);
        let ident = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident || d.contains('\n') {
            return Err(format!("define {d:?} is not NAME or NAME=VALUE"));
        }
        out.push(d.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Picks the backend for `Auto`, and checks an explicit choice can do the job. Returns the reason when no
/// backend can.
pub fn resolve_backend(
    requested: Backend,
    language: Language,
    target: Target,
) -> Result<Backend, String> {
    let naga_ok = matches!(language, Language::Wgsl | Language::Glsl);
    let glslang_ok = matches!(language, Language::Glsl | Language::Hlsl) && target == Target::SpirV;
    match requested {
        Backend::Auto if naga_ok => Ok(Backend::Naga),
        Backend::Auto if glslang_ok => Ok(Backend::Glslang),
        Backend::Naga if naga_ok => Ok(Backend::Naga),
        Backend::Glslang if glslang_ok => Ok(Backend::Glslang),
        b => Err(format!(
            "no backend compiles {} to {} (asked for {}): naga reads WGSL and GLSL; glslangValidator reads \
             GLSL and HLSL and writes SPIR-V only",
            language.name(),
            target.name(),
            b.name()
        )),
    }
}

/// An error diagnostic with no position.
pub fn error_at(file: &str, line: u32, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        line,
        column: 0,
        message: message.into(),
    }
}

/// The result message for `outcome` (index 0, origin fresh): what the daemon stores and a local compile
/// returns, so both give the same bytes.
pub fn result_message(
    outcome: Outcome,
    key: [u8; 32],
    compiler: String,
    entry: String,
) -> spark_proto::compile::CompileResult {
    use spark_proto::compile::{CompileResult, Origin, ResultStatus};
    let mut res = CompileResult {
        index: 0,
        status: ResultStatus::Ok,
        origin: Origin::Fresh,
        key,
        compiler,
        entry,
        workgroup_size: [0; 3],
        bindings: Vec::new(),
        diagnostics: Vec::new(),
        output: Default::default(),
    };
    match outcome {
        Outcome::Compiled(c) => {
            res.output = c.output.into();
            res.diagnostics = c.diagnostics;
            res.bindings = c.bindings;
            res.workgroup_size = c.workgroup_size;
        }
        Outcome::Errors(d) => {
            res.status = ResultStatus::CompileError;
            res.diagnostics = d;
        }
    }
    res
}
