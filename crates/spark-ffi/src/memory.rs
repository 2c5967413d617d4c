//! Memory handed to C: byte buffers and strings the caller frees through this library, and the helpers
//! that read the caller's pointers.

use std::ffi::{CStr, CString, c_char};

use crate::status::{SparkStatus, fail, guard};

/// Bytes owned by the library until [`spark_buffer_free`].
#[repr(C)]
#[derive(Debug)]
pub struct SparkBuffer {
    pub data: *mut u8,
    pub len: usize,
}

/// A C string argument: `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and unmodified for `'a`.
pub(crate) unsafe fn opt_str<'a>(
    p: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, SparkStatus> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, and the caller guarantees NUL termination and validity for 'a.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map(Some).map_err(|_| {
        fail(
            SparkStatus::InvalidArgument,
            format!("{what} is not valid UTF-8"),
        )
    })
}

/// A required C string argument.
///
/// # Safety
/// As [`opt_str`].
pub(crate) unsafe fn req_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, SparkStatus> {
    // SAFETY: forwarded caller guarantee.
    unsafe { opt_str(p, what) }?
        .ok_or_else(|| fail(SparkStatus::InvalidArgument, format!("{what} is NULL")))
}

/// A byte-range argument; NULL is allowed only with length 0.
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes that stay valid and unmodified for `'a`.
pub(crate) unsafe fn bytes_arg<'a>(
    p: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], SparkStatus> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(fail(
            SparkStatus::InvalidArgument,
            format!("{what} is NULL but its length is {len}"),
        ));
    }
    // SAFETY: non-NULL; the caller guarantees `len` readable bytes valid for 'a.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Writes `v` through an out-pointer, or fails on NULL.
///
/// # Safety
/// `out` is NULL or valid for writing one `T` (its old contents are not dropped).
pub(crate) unsafe fn write_out<T>(out: *mut T, v: T, what: &str) -> Result<(), SparkStatus> {
    if out.is_null() {
        return Err(fail(
            SparkStatus::InvalidArgument,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: non-NULL and valid for writes per the caller; `write` does not read or drop the old value.
    unsafe { out.write(v) };
    Ok(())
}

/// Writes `v` through an optional out-pointer; NULL means the caller does not want the value.
///
/// # Safety
/// `out` is NULL or valid for writing one `T` (its old contents are not dropped).
pub(crate) unsafe fn write_opt<T>(out: *mut T, v: T) {
    if !out.is_null() {
        // SAFETY: non-NULL and valid for writes per the caller; `write` does not drop the old value.
        unsafe { out.write(v) };
    }
}

pub(crate) fn buffer_from(v: Vec<u8>) -> SparkBuffer {
    let b: Box<[u8]> = v.into_boxed_slice();
    let len = b.len();
    SparkBuffer {
        data: Box::into_raw(b).cast::<u8>(),
        len,
    }
}

pub(crate) fn empty_buffer() -> SparkBuffer {
    SparkBuffer {
        data: std::ptr::null_mut(),
        len: 0,
    }
}

pub(crate) fn c_string(s: &str) -> *mut c_char {
    CString::new(s.replace('\0', ""))
        .unwrap_or_default()
        .into_raw()
}

/// Releases a buffer returned by this library and empties it. NULL, or an empty buffer, is fine.
///
/// # Safety
/// `buf` is NULL or points to a `SparkBuffer` that is empty or was filled by this library and not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_buffer_free(buf: *mut SparkBuffer) {
    guard((), || {
        if buf.is_null() {
            return;
        }
        // SAFETY: non-NULL and valid per the caller.
        let b = unsafe { &mut *buf };
        // SAFETY: per the caller, `data` came from `buffer_from` (a leaked Box<[u8]> of exactly `len`
        // bytes) and is freed only once: it is nulled right after.
        unsafe { free_buffer(b) };
    })
}

/// # Safety
/// `b.data` is NULL or a pointer made by [`buffer_from`] with this `len`, not yet freed.
pub(crate) unsafe fn free_buffer(b: &mut SparkBuffer) {
    if !b.data.is_null() {
        // SAFETY: the caller's guarantee: this is the Box<[u8]> `buffer_from` leaked.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(b.data, b.len)) });
    }
    b.data = std::ptr::null_mut();
    b.len = 0;
}
