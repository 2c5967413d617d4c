//! The engine's tiered shader cache: local directory, with the daemon in front when attached.

use std::ffi::{CString, c_char};

use spark_client::{CompiledShader, ShaderReflection, TieredShaderCache};

use crate::caches::shader_key;
use crate::connection::conn;
use crate::memory::{
    SparkBuffer, buffer_from, bytes_arg, c_string, empty_buffer, free_buffer, opt_str, req_str,
    write_out,
};
use crate::status::{SparkStatus, fail, guard, set_error, status_guard};

/// Shader reflection counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SparkShaderReflection {
    pub uniform_count: u32,
    pub texture_count: u32,
    pub sampler_count: u32,
    pub storage_buffer_count: u32,
}

/// A shader to store: borrowed from the caller for the duration of the call. NULL strings mean empty.
#[repr(C)]
#[derive(Debug)]
pub struct SparkShaderDesc {
    pub bytecode: *const u8,
    pub bytecode_len: usize,
    pub entry_point: *const c_char,
    pub errors: *const c_char,
    pub warnings: *const c_char,
    pub reflection: SparkShaderReflection,
}

/// A shader found by [`spark_shader_cache_lookup`]; owned by the caller until [`spark_compiled_shader_free`].
/// Strings are NUL-terminated UTF-8, never NULL after a hit.
#[repr(C)]
#[derive(Debug)]
pub struct SparkCompiledShader {
    pub bytecode: SparkBuffer,
    pub entry_point: *mut c_char,
    pub errors: *mut c_char,
    pub warnings: *mut c_char,
    pub reflection: SparkShaderReflection,
}

/// Counters of a tiered shader cache. Each lookup ends as one of daemon_hits, local_hits or misses.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SparkShaderCacheStats {
    pub daemon_hits: u64,
    pub daemon_misses: u64,
    pub daemon_errors: u64,
    pub local_hits: u64,
    pub misses: u64,
}

/// An engine's shader disk cache with the daemon in front of it (opaque).
pub struct SparkShaderCache {
    inner: TieredShaderCache,
}

/// Opens (creating it if needed) a local shader cache directory; with `use_daemon`, the process-wide daemon
/// connection sits in front of it. NULL on failure (see `spark_last_error`). Close with
/// [`spark_shader_cache_close`].
///
/// # Safety
/// `dir` is a NUL-terminated UTF-8 string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_shader_cache_open(
    dir: *const c_char,
    use_daemon: bool,
) -> *mut SparkShaderCache {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded caller guarantee.
        let Ok(dir) = (unsafe { req_str(dir, "dir") }) else {
            return std::ptr::null_mut();
        };
        match TieredShaderCache::open(dir) {
            Ok(c) => {
                if use_daemon {
                    c.set_daemon(Some(conn()));
                }
                Box::into_raw(Box::new(SparkShaderCache { inner: c }))
            }
            Err(e) => {
                set_error(format!("cannot open shader cache {dir}: {e}"));
                std::ptr::null_mut()
            }
        }
    })
}

/// Closes a cache from [`spark_shader_cache_open`]. NULL is fine.
///
/// # Safety
/// `cache` is NULL or an open cache, used by no other thread now and never again after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_shader_cache_close(cache: *mut SparkShaderCache) {
    guard((), || {
        if !cache.is_null() {
            // SAFETY: made by Box::into_raw in spark_shader_cache_open, closed once per the caller.
            drop(unsafe { Box::from_raw(cache) });
        }
    })
}

/// # Safety
/// `cache` is NULL or an open cache that outlives `'a`.
pub(crate) unsafe fn cache_ref<'a>(
    cache: *const SparkShaderCache,
) -> Result<&'a TieredShaderCache, SparkStatus> {
    if cache.is_null() {
        return Err(fail(SparkStatus::InvalidArgument, "cache is NULL"));
    }
    // SAFETY: non-NULL; open and alive per the caller. Shared use from many threads is fine (Sync).
    Ok(unsafe { &(*cache).inner })
}

/// Looks a shader up: the daemon first, then the local directory (a local hit is pushed to the daemon).
/// `SPARK_STATUS_OK` with `out` filled (free it with [`spark_compiled_shader_free`]) or
/// `SPARK_STATUS_MISS`. Daemon trouble is never an error here: it falls through to the local disk.
///
/// # Safety
/// `cache` is an open cache; `out` is valid for writing a `SparkCompiledShader`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_shader_cache_lookup(
    cache: *const SparkShaderCache,
    source_hash: u64,
    target: u8,
    stage: u8,
    out: *mut SparkCompiledShader,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantee.
        let cache = unsafe { cache_ref(cache) }?;
        let empty = SparkCompiledShader {
            bytecode: empty_buffer(),
            entry_point: std::ptr::null_mut(),
            errors: std::ptr::null_mut(),
            warnings: std::ptr::null_mut(),
            reflection: SparkShaderReflection::default(),
        };
        // SAFETY: forwarded caller guarantee; `write_out` rejects NULL. Emptied first so every later
        // status leaves `out` safe to free.
        unsafe { write_out(out, empty, "out") }?;
        let Some(s) = cache.lookup(&shader_key(source_hash, target, stage)) else {
            return Ok(SparkStatus::Miss);
        };
        let r = s.reflection;
        let found = SparkCompiledShader {
            entry_point: c_string(&s.entry_point),
            errors: c_string(&s.errors),
            warnings: c_string(&s.warnings),
            bytecode: buffer_from(s.bytecode),
            reflection: SparkShaderReflection {
                uniform_count: r.uniform_count,
                texture_count: r.texture_count,
                sampler_count: r.sampler_count,
                storage_buffer_count: r.storage_buffer_count,
            },
        };
        // SAFETY: as above.
        unsafe { write_out(out, found, "out") }?;
        Ok(SparkStatus::Ok)
    })
}

/// Stores a shader: local directory first (its failure is `SPARK_STATUS_IO`), then the daemon,
/// best-effort.
///
/// # Safety
/// `cache` is an open cache; `shader` points to a valid `SparkShaderDesc` whose pointers are NULL or valid
/// as documented there.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_shader_cache_store(
    cache: *const SparkShaderCache,
    source_hash: u64,
    target: u8,
    stage: u8,
    shader: *const SparkShaderDesc,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantee.
        let cache = unsafe { cache_ref(cache) }?;
        if shader.is_null() {
            return Err(fail(SparkStatus::InvalidArgument, "shader is NULL"));
        }
        // SAFETY: non-NULL and valid per the caller.
        let d = unsafe { &*shader };
        // SAFETY: the descriptor's pointers are NULL or valid per the caller.
        let s = unsafe {
            CompiledShader {
                bytecode: bytes_arg(d.bytecode, d.bytecode_len, "bytecode")?.to_vec(),
                entry_point: opt_str(d.entry_point, "entry_point")?
                    .unwrap_or_default()
                    .into(),
                errors: opt_str(d.errors, "errors")?.unwrap_or_default().into(),
                warnings: opt_str(d.warnings, "warnings")?.unwrap_or_default().into(),
                reflection: ShaderReflection {
                    uniform_count: d.reflection.uniform_count,
                    texture_count: d.reflection.texture_count,
                    sampler_count: d.reflection.sampler_count,
                    storage_buffer_count: d.reflection.storage_buffer_count,
                },
            }
        };
        cache
            .store(&shader_key(source_hash, target, stage), &s)
            .map_err(|e| {
                fail(
                    SparkStatus::Io,
                    format!("cannot write to the local shader cache: {e}"),
                )
            })?;
        Ok(SparkStatus::Ok)
    })
}

/// The cache's counters.
///
/// # Safety
/// `cache` is an open cache; `out` is valid for writing a `SparkShaderCacheStats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_shader_cache_stats(
    cache: *const SparkShaderCache,
    out: *mut SparkShaderCacheStats,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantee.
        let s = unsafe { cache_ref(cache) }?.stats();
        let st = SparkShaderCacheStats {
            daemon_hits: s.daemon_hits,
            daemon_misses: s.daemon_misses,
            daemon_errors: s.daemon_errors,
            local_hits: s.local_hits,
            misses: s.misses,
        };
        // SAFETY: forwarded caller guarantee on `out`.
        unsafe { write_out(out, st, "out") }?;
        Ok(SparkStatus::Ok)
    })
}

/// Releases what [`spark_shader_cache_lookup`] returned and empties `shader`. NULL is fine; so is an
/// empty result (after a miss).
///
/// # Safety
/// `shader` is NULL or points to a `SparkCompiledShader` filled by this library and not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_compiled_shader_free(shader: *mut SparkCompiledShader) {
    guard((), || {
        if shader.is_null() {
            return;
        }
        // SAFETY: non-NULL and valid per the caller.
        let s = unsafe { &mut *shader };
        // SAFETY: the buffer came from `buffer_from` in spark_shader_cache_lookup and is freed once.
        unsafe { free_buffer(&mut s.bytecode) };
        for p in [&mut s.entry_point, &mut s.errors, &mut s.warnings] {
            if !p.is_null() {
                // SAFETY: made by CString::into_raw in `c_string` and freed once: nulled right after.
                drop(unsafe { CString::from_raw(*p) });
            }
            *p = std::ptr::null_mut();
        }
    })
}
