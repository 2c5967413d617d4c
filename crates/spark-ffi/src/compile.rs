//! Shader compilation: through the daemon ([`spark_compile`]) or tiered ([`spark_shader_cache_get_or_compile`]:
//! the daemon, else the local compile cache, else naga in this process).

use std::ffi::{CString, c_char};

use spark_client::spark_proto::compile::{
    Backend, CompileRequest, CompileResult, Language, Origin, Stage, Target,
};
use spark_client::{CompileSource, TieredShaderCache};

use crate::connection::daemon_call;
use crate::memory::{
    buffer_from, c_string, empty_buffer, free_buffer, opt_str, req_str, write_out,
};
use crate::status::{SparkStatus, fail, guard, status_guard};
use crate::tiered::SparkShaderCache;

/// What to compile: borrowed from the caller for the duration of the call. Enumerations are the protocol's
/// bytes (docs/protocol.md §13): language 1 WGSL, 2 GLSL, 3 HLSL; stage 1 vertex, 2 fragment, 3 compute;
/// target 1 SPIR-V, 2 MSL, 3 HLSL, 4 GLSL; backend 0 auto, 1 naga, 2 glslang.
#[repr(C)]
#[derive(Debug)]
pub struct SparkCompileDesc {
    pub language: u8,
    pub stage: u8,
    pub target: u8,
    pub backend: u8,
    /// Bit 0: debug info.
    pub flags: u8,
    /// `major << 8 | minor`; 0 = the backend's default.
    pub spirv_version: u16,
    /// NUL-terminated UTF-8; NULL means `main`.
    pub entry: *const c_char,
    /// NUL-terminated UTF-8 source text.
    pub source: *const c_char,
    /// `define_count` NUL-terminated strings, `NAME` or `NAME=VALUE`; NULL when the count is 0.
    pub defines: *const *const c_char,
    pub define_count: usize,
    /// `include_dir_count` absolute directories; NULL when the count is 0.
    pub include_dirs: *const *const c_char,
    pub include_dir_count: usize,
}

/// A compile's outcome; owned by the caller until [`spark_compile_result_free`]. Strings are never NULL after
/// `SPARK_STATUS_OK`.
#[repr(C)]
#[derive(Debug)]
pub struct SparkCompileResult {
    /// 0 ok, 1 compile error (see `diagnostics`), 2 failed (did not run to an answer; see `diagnostics`).
    pub status: u8,
    /// 0 fresh, 1 cache hit, 2 joined a compile in flight (as the daemon or local tier saw it).
    pub origin: u8,
    /// 0 the daemon, 1 the local compile cache, 2 compiled in this process.
    pub source: u8,
    /// The BLAKE3 cache key.
    pub key: [u8; 32],
    /// Backend identity and version, e.g. `naga 25.0.1`.
    pub compiler: *mut c_char,
    /// One diagnostic per line, like a compiler: `file:line:column: error: message`.
    pub diagnostics: *mut c_char,
    /// The compiled bytes (SPIR-V words little-endian, or text); empty unless `status` is 0.
    pub output: crate::memory::SparkBuffer,
    /// Compute shaders: the workgroup size; zeros otherwise.
    pub workgroup_size: [u32; 3],
    /// Resource bindings the entry point uses.
    pub binding_count: u32,
}

fn empty_result() -> SparkCompileResult {
    SparkCompileResult {
        status: 0,
        origin: 0,
        source: 0,
        key: [0; 32],
        compiler: std::ptr::null_mut(),
        diagnostics: std::ptr::null_mut(),
        output: empty_buffer(),
        workgroup_size: [0; 3],
        binding_count: 0,
    }
}

/// # Safety
/// `list` holds `n` valid NUL-terminated strings (or is NULL with `n` 0).
unsafe fn strings(
    list: *const *const c_char,
    n: usize,
    what: &str,
) -> Result<Vec<String>, SparkStatus> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if list.is_null() {
        return Err(fail(
            SparkStatus::InvalidArgument,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: `list` points to `n` pointers per the caller.
    let ptrs = unsafe { std::slice::from_raw_parts(list, n) };
    ptrs.iter()
        // SAFETY: each is a valid NUL-terminated string per the caller.
        .map(|p| unsafe { req_str(*p, what) }.map(str::to_string))
        .collect()
}

/// # Safety
/// `desc` is NULL or valid as documented on [`SparkCompileDesc`].
unsafe fn request(desc: *const SparkCompileDesc) -> Result<CompileRequest, SparkStatus> {
    if desc.is_null() {
        return Err(fail(SparkStatus::InvalidArgument, "desc is NULL"));
    }
    // SAFETY: non-NULL and valid per the caller.
    let d = unsafe { &*desc };
    let bad = |what: &str, v: u8| fail(SparkStatus::InvalidArgument, format!("unknown {what} {v}"));
    let language = Language::from_u8(d.language).ok_or_else(|| bad("language", d.language))?;
    let stage = Stage::from_u8(d.stage).ok_or_else(|| bad("stage", d.stage))?;
    let target = Target::from_u8(d.target).ok_or_else(|| bad("target", d.target))?;
    let backend = Backend::from_u8(d.backend).ok_or_else(|| bad("backend", d.backend))?;
    // SAFETY: forwarded caller guarantees for each pointer.
    let (source, entry, defines, include_dirs) = unsafe {
        (
            req_str(d.source, "source")?,
            opt_str(d.entry, "entry")?,
            strings(d.defines, d.define_count, "defines")?,
            strings(d.include_dirs, d.include_dir_count, "include_dirs")?,
        )
    };
    let mut r = CompileRequest::new(language, stage, target, source);
    r.backend = backend;
    r.flags = d.flags;
    r.spirv_version = d.spirv_version;
    if let Some(e) = entry {
        r.entry = e.to_string();
    }
    r.permutations = vec![defines];
    r.include_dirs = include_dirs;
    Ok(r)
}

fn to_c(r: CompileResult, source: u8) -> SparkCompileResult {
    let diagnostics: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    SparkCompileResult {
        status: r.status as u8,
        origin: r.origin as u8,
        source,
        key: r.key,
        compiler: c_string(&r.compiler),
        diagnostics: c_string(&diagnostics.join("\n")),
        output: buffer_from(r.output.to_vec()),
        workgroup_size: r.workgroup_size,
        binding_count: r.bindings.len() as u32,
    }
}

/// Compiles through the process-wide daemon connection (no local fallback: see
/// [`spark_shader_cache_get_or_compile`] for that). `SPARK_STATUS_OK` with `out` filled (a compile error is
/// `OK` with `out->status` 1), `SPARK_STATUS_NOT_CONNECTED` without a daemon.
///
/// # Safety
/// `desc` is valid as documented on [`SparkCompileDesc`]; `out` is valid for writing a `SparkCompileResult`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_compile(
    desc: *const SparkCompileDesc,
    out: *mut SparkCompileResult,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantee; emptied first so every later status leaves `out` safe to free.
        unsafe { write_out(out, empty_result(), "out") }?;
        // SAFETY: forwarded caller guarantee.
        let req = unsafe { request(desc) }?;
        let r = daemon_call(|c| c.compile_one(&req))?;
        // SAFETY: as above.
        unsafe { write_out(out, to_c(r, 0), "out") }?;
        Ok(SparkStatus::Ok)
    })
}

/// Compiles through the tiered cache: the daemon when attached and reachable, else the local compile cache,
/// else naga in this process (so no daemon means slower, never broken). Always `SPARK_STATUS_OK` for a valid
/// request; see `out->status` and `out->source`.
///
/// # Safety
/// `cache` is an open cache; `desc` and `out` as for [`spark_compile`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_shader_cache_get_or_compile(
    cache: *const SparkShaderCache,
    desc: *const SparkCompileDesc,
    out: *mut SparkCompileResult,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: as in spark_compile.
        unsafe { write_out(out, empty_result(), "out") }?;
        // SAFETY: forwarded caller guarantee.
        let cache: &TieredShaderCache = unsafe { crate::tiered::cache_ref(cache) }?;
        // SAFETY: forwarded caller guarantee.
        let req = unsafe { request(desc) }?;
        let t = cache.get_or_compile(&req);
        let (source, origin) = match t.source {
            CompileSource::Daemon(o) => (0, o),
            CompileSource::LocalCache => (1, Origin::Hit),
            CompileSource::LocalCompile => (2, Origin::Fresh),
        };
        let mut r = to_c(t.result, source);
        r.origin = origin as u8;
        // SAFETY: as above.
        unsafe { write_out(out, r, "out") }?;
        Ok(SparkStatus::Ok)
    })
}

/// Releases what a [`SparkCompileResult`] holds and empties it. NULL, or an empty result, is fine.
///
/// # Safety
/// `r` is NULL or a result filled by this library and not freed since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_compile_result_free(r: *mut SparkCompileResult) {
    guard((), || {
        if r.is_null() {
            return;
        }
        // SAFETY: non-NULL and valid per the caller.
        let r = unsafe { &mut *r };
        // SAFETY: the buffer came from `buffer_from` and is freed once (emptied by free_buffer).
        unsafe { free_buffer(&mut r.output) };
        for p in [&mut r.compiler, &mut r.diagnostics] {
            if !p.is_null() {
                // SAFETY: made by CString::into_raw in `c_string`, freed once: nulled right after.
                drop(unsafe { CString::from_raw(*p) });
            }
            *p = std::ptr::null_mut();
        }
    })
}
