//! The asset pipeline for C engines: `spark_asset_get_or_import`, which runs the engine's importer at most
//! once across every process asking for the same variant, and `spark_asset_declare_deps`.

use std::ffi::{c_char, c_void};
use std::path::Path;

use spark_client::{AssetKey, ImportSpec};

use crate::connection::daemon_call;
use crate::memory::{SparkBuffer, buffer_from, empty_buffer, req_str, write_opt, write_out};
use crate::status::{SparkStatus, fail, status_guard};

/// Where an importer writes its result (opaque; see [`spark_import_sink_write`]).
pub struct SparkImportSink {
    data: Vec<u8>,
}

/// An importer: writes the imported variant with [`spark_import_sink_write`] (any number of times) and
/// returns 0, or returns non-zero when the import failed (nothing is stored; another waiting process then
/// imports). Called on the calling thread, at most once per `spark_asset_get_or_import` call.
pub type SparkImportFn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, sink: *mut SparkImportSink) -> i32>;

/// Appends `len` bytes to an importer's result.
///
/// # Safety
/// `sink` is the pointer the importer was called with; `data` is NULL (with `len` 0) or points to `len`
/// readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_import_sink_write(
    sink: *mut SparkImportSink,
    data: *const u8,
    len: usize,
) -> SparkStatus {
    status_guard(|| {
        if sink.is_null() {
            return Err(fail(SparkStatus::InvalidArgument, "sink is NULL"));
        }
        // SAFETY: forwarded caller guarantee on `data`.
        let bytes = unsafe { crate::memory::bytes_arg(data, len, "data") }?;
        // SAFETY: non-NULL, and the caller passes the sink it was given, which lives for the importer call.
        unsafe { &mut *sink }.data.extend_from_slice(bytes);
        Ok(SparkStatus::Ok)
    })
}

/// `count` C strings as paths.
///
/// # Safety
/// `paths` is NULL (with `count` 0) or points to `count` NUL-terminated UTF-8 strings.
unsafe fn path_list<'a>(
    paths: *const *const c_char,
    count: usize,
) -> Result<Vec<&'a Path>, SparkStatus> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if paths.is_null() {
        return Err(fail(SparkStatus::InvalidArgument, "deps is NULL"));
    }
    // SAFETY: non-NULL and the caller guarantees `count` readable pointers.
    let ptrs = unsafe { std::slice::from_raw_parts(paths, count) };
    ptrs.iter()
        // SAFETY: each is a NUL-terminated UTF-8 string (caller guarantee).
        .map(|p| unsafe { req_str(*p, "dependency path") }.map(Path::new))
        .collect()
}

/// The variant of `source_path` imported by (`importer_id`, `importer_version`) for `platform`: from the
/// daemon's asset cache, or made by `import_fn(user_data, sink)`, which runs at most once across every
/// process asking at the same time (the others wait for its result). The key is the BLAKE3 of the source's
/// and the `deps`' contents (not mtimes), the importer and the platform; once stored, the source and deps
/// are watched and a change drops the variant. `SPARK_STATUS_OK` with `out` filled (free it with
/// `spark_buffer_free`) and `*ran_out` (unless NULL) telling whether this call ran the importer.
///
/// # Safety
/// `source_path` and `importer_id` are NUL-terminated UTF-8 strings; `deps` is NULL (with `dep_count` 0) or
/// points to `dep_count` such strings; `import_fn` is callable with `user_data`; `ran_out` is NULL or valid
/// for writing a `bool`; `out` is valid for writing a `SparkBuffer`.
#[allow(clippy::too_many_arguments)] // The C signature: one flat call an engine can make without structs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_asset_get_or_import(
    source_path: *const c_char,
    platform: u8,
    importer_id: *const c_char,
    importer_version: u32,
    deps: *const *const c_char,
    dep_count: usize,
    import_fn: SparkImportFn,
    user_data: *mut c_void,
    ran_out: *mut bool,
    out: *mut SparkBuffer,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantee; emptied first so the caller may free `out` whatever the status.
        unsafe { write_out(out, empty_buffer(), "out") }?;
        // SAFETY: forwarded caller guarantees on the strings and the list.
        let (source, importer_id, deps) = unsafe {
            (
                req_str(source_path, "source_path")?,
                req_str(importer_id, "importer_id")?,
                path_list(deps, dep_count)?,
            )
        };
        let Some(f) = import_fn else {
            return Err(fail(SparkStatus::InvalidArgument, "import_fn is NULL"));
        };
        let spec = ImportSpec {
            source: Path::new(source),
            platform,
            importer_id,
            importer_version,
            deps: &deps,
        };
        let r = daemon_call(|c| {
            c.asset().get_or_import(&spec, || {
                let mut sink = SparkImportSink { data: Vec::new() };
                // SAFETY: the caller guarantees `import_fn` may be called with `user_data`; the sink lives
                // until it returns.
                let rc = unsafe { f(user_data, &mut sink) };
                if rc == 0 {
                    Ok(sink.data)
                } else {
                    Err(format!("the importer returned {rc}"))
                }
            })
        })?;
        // SAFETY: forwarded caller guarantees on `ran_out` and `out` (non-NULL, checked above).
        unsafe {
            write_opt(ran_out, r.ran);
            write_out(out, buffer_from(r.data.to_vec()), "out")?;
        }
        Ok(SparkStatus::Ok)
    })
}

/// Declares the source files (`dep_count` paths) the asset variant `(path, platform)` was built from: when
/// one changes, the daemon drops the variant (and tells editors that subscribed). The number of files now
/// watched goes to `watched_out` unless NULL.
///
/// # Safety
/// `path` is a NUL-terminated UTF-8 string; `deps` is NULL (with `dep_count` 0) or points to `dep_count`
/// such strings; `watched_out` is NULL or valid for writing a `uint32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_asset_declare_deps(
    path: *const c_char,
    platform: u8,
    deps: *const *const c_char,
    dep_count: usize,
    watched_out: *mut u32,
) -> SparkStatus {
    status_guard(|| {
        // SAFETY: forwarded caller guarantees.
        let (path, deps) = unsafe { (req_str(path, "path")?, path_list(deps, dep_count)?) };
        let key = AssetKey {
            path: path.into(),
            platform,
        };
        let n = daemon_call(|c| c.asset().declare_deps(&key, &deps))?;
        // SAFETY: forwarded caller guarantee.
        unsafe { write_opt(watched_out, n) };
        Ok(SparkStatus::Ok)
    })
}
