//! The daemon's shader and asset caches, blob in, blob out.

use std::ffi::c_char;

use spark_client::{AssetKey, ShaderKey};

use crate::connection::daemon_call;
use crate::memory::{
    SparkBuffer, buffer_from, bytes_arg, empty_buffer, req_str, write_opt, write_out,
};
use crate::status::{SparkStatus, status_guard};

pub(crate) fn shader_key(source_hash: u64, target: u8, stage: u8) -> ShaderKey {
    ShaderKey {
        source_hash,
        target,
        stage,
    }
}

fn asset_key(path: &str, platform: u8) -> AssetKey {
    AssetKey {
        path: path.into(),
        platform,
    }
}

fn stored_status(stored: bool) -> SparkStatus {
    if stored {
        SparkStatus::Ok
    } else {
        SparkStatus::NotStored
    }
}

/// Every blob get: `out` is emptied before anything can fail, so the caller may free it whatever the
/// status, then filled on a hit.
///
/// # Safety
/// `out` is NULL or valid for writing a `SparkBuffer`.
unsafe fn get_into<B: AsRef<[u8]>>(
    out: *mut SparkBuffer,
    get: impl FnOnce() -> Result<Option<B>, SparkStatus>,
) -> Result<SparkStatus, SparkStatus> {
    // SAFETY: forwarded caller guarantee; `write_out` rejects NULL.
    unsafe { write_out(out, empty_buffer(), "out") }?;
    let Some(blob) = get()? else {
        return Ok(SparkStatus::Miss);
    };
    // SAFETY: as above (and known non-NULL by now). The empty buffer it replaces owns nothing.
    unsafe { write_out(out, buffer_from(blob.as_ref().to_vec()), "out") }?;
    Ok(SparkStatus::Ok)
}

/// Fetches a shader blob: `SPARK_STATUS_OK` with `out` filled (free it with `spark_buffer_free`), or
/// `SPARK_STATUS_MISS` with `out` empty.
///
/// # Safety
/// `out` is valid for writing a `SparkBuffer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_shader_get(
    source_hash: u64,
    target: u8,
    stage: u8,
    out: *mut SparkBuffer,
) -> SparkStatus {
    let key = shader_key(source_hash, target, stage);
    // SAFETY: forwarded caller guarantee on `out`.
    status_guard(|| unsafe { get_into(out, || daemon_call(|c| c.shader().get(&key))) })
}

/// Stores a shader blob. `SPARK_STATUS_NOT_STORED` when the daemon declined it (too large).
///
/// # Safety
/// `data` is NULL (with `len` 0) or points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_shader_put(
    source_hash: u64,
    target: u8,
    stage: u8,
    data: *const u8,
    len: usize,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantee.
        let data = unsafe { bytes_arg(data, len, "data") }?;
        let key = shader_key(source_hash, target, stage);
        daemon_call(|c| c.shader().put(&key, data)).map(stored_status)
    })
}

/// Whether a shader is cached (`SPARK_STATUS_OK`, its size to `size_out` unless NULL) or not
/// (`SPARK_STATUS_MISS`). Counts neither a hit nor a miss.
///
/// # Safety
/// `size_out` is NULL or valid for writing a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_shader_exists(
    source_hash: u64,
    target: u8,
    stage: u8,
    size_out: *mut u64,
) -> SparkStatus {
    status_guard(|| {
        let key = shader_key(source_hash, target, stage);
        let Some(n) = daemon_call(|c| c.shader().exists(&key))? else {
            return Ok(SparkStatus::Miss);
        };
        // SAFETY: forwarded caller guarantee on `size_out`.
        unsafe { write_opt(size_out, n) };
        Ok(SparkStatus::Ok)
    })
}

/// Fetches one platform variant of an asset; as [`spark_shader_get`].
///
/// # Safety
/// `path` is a NUL-terminated UTF-8 string; `out` is valid for writing a `SparkBuffer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_asset_get(
    path: *const c_char,
    platform: u8,
    out: *mut SparkBuffer,
) -> SparkStatus {
    // SAFETY: forwarded caller guarantees on `out` and `path` (read inside, after `out` is emptied).
    status_guard(|| unsafe {
        get_into(out, || {
            let key = asset_key(req_str(path, "path")?, platform);
            daemon_call(|c| c.asset().get(&key))
        })
    })
}

/// Stores one platform variant of an asset; as [`spark_shader_put`].
///
/// # Safety
/// `path` is a NUL-terminated UTF-8 string; `data` is NULL (with `len` 0) or points to `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_asset_put(
    path: *const c_char,
    platform: u8,
    data: *const u8,
    len: usize,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantees.
        let (path, data) = unsafe { (req_str(path, "path")?, bytes_arg(data, len, "data")?) };
        let key = asset_key(path, platform);
        daemon_call(|c| c.asset().put(&key, data)).map(stored_status)
    })
}

/// Drops every platform variant of `path`; how many there were goes to `dropped_out` unless NULL.
///
/// # Safety
/// `path` is a NUL-terminated UTF-8 string; `dropped_out` is NULL or valid for writing a `uint32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_asset_invalidate(
    path: *const c_char,
    dropped_out: *mut u32,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantee.
        let path = unsafe { req_str(path, "path") }?;
        let n = daemon_call(|c| c.asset().invalidate(path))?;
        // SAFETY: forwarded caller guarantee on `dropped_out`.
        unsafe { write_opt(dropped_out, n) };
        Ok(SparkStatus::Ok)
    })
}
