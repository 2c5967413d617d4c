//! Server events for C: polled one at a time and copied into the caller's buffer.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use spark_client::Event;

use crate::connection::daemon_call;
use crate::memory::write_out;
use crate::status::{SparkStatus, fail, status_guard};

/// An event that did not fit the caller's buffer, handed out first by the next poll so that no event is
/// lost to a short buffer. (Inside a function so cbindgen, which sees every top-level static, skips it.)
fn pending() -> MutexGuard<'static, Option<Event>> {
    static PENDING: Mutex<Option<Event>> = Mutex::new(None);
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the next server event (protocol §4.4: frames the daemon sends on its own, `type >= 0x8000`),
/// waiting up to `timeout_ms` for one (0: only what has already arrived; an engine can call this once a
/// frame).
///
/// - `SPARK_STATUS_OK`: `*out_service`, `*out_type` and `*out_len` are set and the payload is in
///   `buf[0 .. *out_len]`.
/// - `SPARK_STATUS_NO_EVENT`: none arrived in time; nothing is written.
/// - `SPARK_STATUS_BUFFER_TOO_SMALL`: the payload needs `*out_len` bytes (service and type are set too);
///   the event is kept and the next call returns it. Pass `buf` NULL with `buf_len` 0 to ask for the size.
/// - `SPARK_STATUS_NOT_CONNECTED`, `SPARK_STATUS_TRANSPORT`, …: as for any daemon call.
///
/// The Control event EventsLost (service 1, type `0x8001`, payload a little-endian `uint64_t`: events
/// the daemon dropped for this connection) arrives here like any other. Events wait in a queue of 4096 in
/// the library; past that, new ones are dropped. While another thread's request is in flight the wait
/// uses what that request reads, so polling never stalls cache calls for longer than a few milliseconds.
///
/// # Safety
/// `out_service`, `out_type` and `out_len` are valid for writing; `buf` is NULL (with `buf_len` 0) or
/// valid for writing `buf_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spark_poll_event(
    timeout_ms: u32,
    out_service: *mut u16,
    out_type: *mut u16,
    buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> SparkStatus {
    status_guard(|| {
        if buf.is_null() && buf_len > 0 {
            let msg = format!("buf is NULL but buf_len is {buf_len}");
            return Err(fail(SparkStatus::InvalidArgument, msg));
        }
        if out_service.is_null() || out_type.is_null() || out_len.is_null() {
            let msg = "out_service, out_type and out_len must not be NULL";
            return Err(fail(SparkStatus::InvalidArgument, msg));
        }
        // Held across the wait: concurrent pollers take events in order, and a kept event goes first.
        let mut slot = pending();
        let event = match slot.take() {
            Some(e) => e,
            None => {
                let wait = Duration::from_millis(timeout_ms.into());
                match daemon_call(|c| c.next_event(wait))? {
                    Some(e) => e,
                    None => return Ok(SparkStatus::NoEvent),
                }
            }
        };
        let len = event.payload.len();
        // SAFETY: the three out-pointers were checked non-NULL above and are writable per the caller.
        unsafe {
            write_out(out_service, event.service, "out_service")?;
            write_out(out_type, event.msg_type, "out_type")?;
            write_out(out_len, len, "out_len")?;
        }
        if len > buf_len {
            *slot = Some(event);
            let msg = format!("the event needs {len} bytes, the buffer has {buf_len}");
            return Err(fail(SparkStatus::BufferTooSmall, msg));
        }
        if len > 0 {
            // SAFETY: `buf` is non-NULL (buf_len >= len > 0, and NULL with a length was refused above)
            // and writable for `buf_len >= len` bytes per the caller; the payload is the library's own
            // memory, so the two cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(event.payload.as_ptr(), buf, len) };
        }
        Ok(SparkStatus::Ok)
    })
}
