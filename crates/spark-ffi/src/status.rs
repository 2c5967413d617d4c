//! Statuses, the per-thread error message, and the guard that keeps panics on this side of the boundary.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use spark_client::Error;

/// Bumped on any incompatible change to this ABI.
pub const SPARK_ABI_VERSION: u32 = 1;

/// The result of a call. Zero and positive values are not errors.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparkStatus {
    Ok = 0,
    /// Not in the cache.
    Miss = 1,
    /// The daemon answered but did not keep the blob (larger than its budgets allow).
    NotStored = 2,
    /// `spark_poll_event`: no event arrived within the timeout.
    NoEvent = 3,
    /// A NULL where a value is required, a string that is not UTF-8, or a similar caller mistake.
    InvalidArgument = -1,
    /// No daemon: disabled, not initialised, not running, or not reachable right now.
    NotConnected = -2,
    /// The connection failed mid-call (it is re-established on a later call).
    Transport = -3,
    /// The daemon sent something this library cannot understand.
    Protocol = -4,
    /// The daemon answered with an error (see spark_last_error).
    Daemon = -5,
    /// A local file-system error (tiered shader cache), or a local reader/writer failing mid-call.
    Io = -6,
    /// A bug inside the library was caught before it could cross into C.
    Panic = -7,
    /// `spark_poll_event`: the event does not fit the buffer; its size was written to `out_len`
    /// and it is kept for the next call.
    BufferTooSmall = -8,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_error(msg: impl std::fmt::Display) {
    let s = msg.to_string().replace('\0', " ");
    let c = CString::new(s).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

pub(crate) fn fail(status: SparkStatus, msg: impl std::fmt::Display) -> SparkStatus {
    set_error(msg);
    status
}

pub(crate) fn from_client_error(e: &Error) -> SparkStatus {
    let status = match e {
        Error::NotRunning { .. } => SparkStatus::NotConnected,
        Error::Transport(_) => SparkStatus::Transport,
        Error::Protocol(_) => SparkStatus::Protocol,
        Error::Daemon(_) => SparkStatus::Daemon,
        Error::Local(_) => SparkStatus::Io,
    };
    fail(status, e)
}

/// Runs an entry point's body; a panic becomes `on_panic` and a last-error message instead of unwinding
/// into C (which would abort the engine).
pub(crate) fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            set_error(format!("internal error in libsparkdaemon (panic: {what})"));
            on_panic
        }
    }
}

pub(crate) fn status_guard(f: impl FnOnce() -> Result<SparkStatus, SparkStatus>) -> SparkStatus {
    guard(SparkStatus::Panic, || f().unwrap_or_else(|e| e))
}

/// The library version, e.g. "0.1.0" (static storage).
#[unsafe(no_mangle)]
pub extern "C" fn spark_version() -> *const c_char {
    static V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    V.as_ptr()
}

/// The calling thread's message for the last failed call ("" if none). Valid until the next call into
/// this library on the same thread.
#[unsafe(no_mangle)]
pub extern "C" fn spark_last_error() -> *const c_char {
    guard(c"".as_ptr(), || LAST_ERROR.with(|e| e.borrow().as_ptr()))
}

/// A constant name for a status, e.g. "SPARK_STATUS_MISS" (static storage).
#[unsafe(no_mangle)]
pub extern "C" fn spark_status_name(status: SparkStatus) -> *const c_char {
    let s: &'static CStr = match status {
        SparkStatus::Ok => c"SPARK_STATUS_OK",
        SparkStatus::Miss => c"SPARK_STATUS_MISS",
        SparkStatus::NotStored => c"SPARK_STATUS_NOT_STORED",
        SparkStatus::NoEvent => c"SPARK_STATUS_NO_EVENT",
        SparkStatus::InvalidArgument => c"SPARK_STATUS_INVALID_ARGUMENT",
        SparkStatus::NotConnected => c"SPARK_STATUS_NOT_CONNECTED",
        SparkStatus::Transport => c"SPARK_STATUS_TRANSPORT",
        SparkStatus::Protocol => c"SPARK_STATUS_PROTOCOL",
        SparkStatus::Daemon => c"SPARK_STATUS_DAEMON",
        SparkStatus::Io => c"SPARK_STATUS_IO",
        SparkStatus::Panic => c"SPARK_STATUS_PANIC",
        SparkStatus::BufferTooSmall => c"SPARK_STATUS_BUFFER_TOO_SMALL",
    };
    s.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let st = status_guard(|| panic!("boom"));
        assert_eq!(st, SparkStatus::Panic);
        // SAFETY: spark_last_error returns a valid NUL-terminated string owned by this thread.
        let msg = unsafe { CStr::from_ptr(spark_last_error()) }
            .to_str()
            .unwrap();
        assert!(msg.contains("boom"), "{msg}");
        assert!(guard(std::ptr::null_mut::<u8>(), || panic!("x")).is_null());
    }

    #[test]
    fn every_status_has_a_name() {
        for s in [
            SparkStatus::Ok,
            SparkStatus::Miss,
            SparkStatus::NotStored,
            SparkStatus::NoEvent,
            SparkStatus::InvalidArgument,
            SparkStatus::NotConnected,
            SparkStatus::Transport,
            SparkStatus::Protocol,
            SparkStatus::Daemon,
            SparkStatus::Io,
            SparkStatus::Panic,
            SparkStatus::BufferTooSmall,
        ] {
            // SAFETY: static NUL-terminated strings.
            let n = unsafe { CStr::from_ptr(spark_status_name(s)) }
                .to_str()
                .unwrap();
            assert!(n.starts_with("SPARK_STATUS_"));
        }
    }
}
