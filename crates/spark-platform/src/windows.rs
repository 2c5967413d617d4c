//! The Win32 calls, each behind a safe function. Handles and buffers the API hands back are owned by a Rust
//! value (an `OwnedHandle`, a guard calling `LocalFree`) from the moment they exist, so no path leaks them.

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::ptr::null_mut;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_IO_PENDING, ERROR_LOCK_VIOLATION, GetLastError, HANDLE, LocalFree,
    STILL_ACTIVE,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
    TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{
    LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx,
};
use windows_sys::Win32::System::IO::OVERLAPPED;
use windows_sys::Win32::System::Pipes::{GetNamedPipeClientProcessId, PeekNamedPipe};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetExitCodeProcess, OpenProcess, OpenProcessToken,
    PROCESS_QUERY_LIMITED_INFORMATION,
};

/// Frees a buffer the API allocated with `LocalAlloc` (string SIDs, security descriptors).
struct LocalBox(*mut c_void);

impl Drop for LocalBox {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from an API documented to allocate with LocalAlloc, is owned by this
            // guard alone and is freed exactly once, here.
            unsafe { LocalFree(self.0) };
        }
    }
}

fn owned(h: HANDLE) -> io::Result<OwnedHandle> {
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` is a valid handle just returned to us by the API and not owned by anything else; the
    // OwnedHandle closes it once.
    Ok(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) })
}

/// The string SID (`S-1-5-21-…`) of the user the current process runs as.
pub fn current_user_sid() -> io::Result<String> {
    // SAFETY: GetCurrentProcess has no preconditions; its pseudo-handle needs no closing.
    token_user_sid(unsafe { GetCurrentProcess() })
}

/// The string SID of the user process `pid` runs as. Fails for a process we may not query (another user's,
/// when not elevated) or one that is gone.
pub fn process_user_sid(pid: u32) -> io::Result<String> {
    // SAFETY: OpenProcess takes plain values; a null result is handled by `owned`.
    let p = owned(unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) })?;
    token_user_sid(p.as_raw_handle() as HANDLE)
}

fn token_user_sid(process: HANDLE) -> io::Result<String> {
    let mut token: HANDLE = null_mut();
    // SAFETY: `process` is a live process handle (or the current-process pseudo-handle) and `token` a valid
    // out pointer.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let token = owned(token)?;
    let mut len = 0u32;
    // SAFETY: a size query: a null buffer of length 0 is allowed and only `len` is written.
    unsafe {
        GetTokenInformation(
            token.as_raw_handle() as HANDLE,
            TokenUser,
            null_mut(),
            0,
            &mut len,
        )
    };
    if len == 0 {
        return Err(io::Error::last_os_error());
    }
    // u64 elements: TOKEN_USER holds pointers, so the buffer must be pointer-aligned.
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buf` is writable for `len` bytes (rounded up), as the call is told.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle() as HANDLE,
            TokenUser,
            buf.as_mut_ptr().cast(),
            len,
            &mut len,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded, so `buf` starts with a TOKEN_USER (aligned: u64 buffer) whose SID pointer
    // points into `buf`, which outlives this borrow.
    let user = unsafe { &*buf.as_ptr().cast::<TOKEN_USER>() };
    sid_to_string(user.User.Sid)
}

fn sid_to_string(sid: *mut c_void) -> io::Result<String> {
    let mut s: *mut u16 = null_mut();
    // SAFETY: `sid` points to a valid SID (from a successful GetTokenInformation); `s` is an out pointer.
    if unsafe { ConvertSidToStringSidW(sid, &mut s) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let guard = LocalBox(s.cast());
    let mut len = 0;
    // SAFETY: the API returned a NUL-terminated UTF-16 string; we read up to and excluding the NUL.
    while unsafe { *s.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` u16s starting at `s` were just read above and stay alive until `guard` drops.
    let out = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(s, len) });
    drop(guard);
    Ok(out)
}

/// A security descriptor that grants everything to one user and nothing to anyone else: SDDL
/// `D:P(A;;GA;;;<SID>)` — a protected DACL (no inherited entries) with one allow entry. Creator/owner
/// rights, administrators and `Everyone` get nothing by default.
pub struct OwnerOnly {
    sd: LocalBox,
}

impl OwnerOnly {
    pub fn new(user_sid: &str) -> io::Result<OwnerOnly> {
        if !user_sid.starts_with("S-")
            || !user_sid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{user_sid:?} is not a string SID"),
            ));
        }
        let sddl: Vec<u16> = format!("D:P(A;;GA;;;{user_sid})")
            .encode_utf16()
            .chain([0])
            .collect();
        let mut sd: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: `sddl` is NUL-terminated UTF-16 alive for the call; `sd` is an out pointer; the size out
        // pointer may be null.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnerOnly { sd: LocalBox(sd) })
    }

    /// SECURITY_ATTRIBUTES pointing at the descriptor (not inheritable); valid while `self` lives.
    pub fn attributes(&self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.sd.0,
            bInheritHandle: 0,
        }
    }
}

/// Creates one instance of a named pipe with the owner-only descriptor `sd` (whatever `opts` says about
/// first instance, buffers and modes).
#[cfg(feature = "server")]
pub fn create_pipe(
    opts: &tokio::net::windows::named_pipe::ServerOptions,
    path: &std::path::Path,
    sd: &OwnerOnly,
) -> io::Result<tokio::net::windows::named_pipe::NamedPipeServer> {
    let mut attrs = sd.attributes();
    // SAFETY: `attrs` is a correctly sized SECURITY_ATTRIBUTES whose descriptor (owned by `sd`) outlives the
    // call; CreateNamedPipeW copies what it needs.
    unsafe {
        opts.create_with_security_attributes_raw(
            path,
            (&mut attrs as *mut SECURITY_ATTRIBUTES).cast(),
        )
    }
}

/// The process id of the client connected to the server end of a pipe.
pub fn pipe_client_pid(pipe: &impl AsRawHandle) -> io::Result<u32> {
    let mut pid = 0u32;
    // SAFETY: the handle is a live pipe handle borrowed for the call; `pid` is an out pointer.
    if unsafe { GetNamedPipeClientProcessId(pipe.as_raw_handle() as HANDLE, &mut pid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// How many bytes can be read from a pipe without blocking. A pipe whose other end closed is an error
/// (`ERROR_BROKEN_PIPE`), which callers treat as end of stream by reading.
pub fn pipe_bytes_available(pipe: &impl AsRawHandle) -> io::Result<u32> {
    let mut avail = 0u32;
    // SAFETY: the handle is a live pipe handle borrowed for the call; a null buffer of size 0 is allowed;
    // only `avail` is written.
    let ok = unsafe {
        PeekNamedPipe(
            pipe.as_raw_handle() as HANDLE,
            null_mut(),
            0,
            null_mut(),
            &mut avail,
            null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(avail)
}

/// Takes an exclusive `LockFileEx` lock on all of `f` without waiting: `Ok(false)` when another handle
/// holds it. The lock goes with the handle (closing the file, or the process dying, releases it).
pub fn try_lock_exclusive(f: &File) -> io::Result<bool> {
    // SAFETY: OVERLAPPED is plain data for which all-zero is the documented "offset 0, no event" value.
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    // SAFETY: `f` is a live, synchronous file handle borrowed for the call; `ov` outlives it (a
    // synchronous handle completes before returning).
    let ok = unsafe {
        LockFileEx(
            f.as_raw_handle() as HANDLE,
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            u32::MAX,
            u32::MAX,
            &mut ov,
        )
    };
    if ok != 0 {
        return Ok(true);
    }
    // SAFETY: no preconditions; reads this thread's last error right after the failed call.
    match unsafe { GetLastError() } {
        ERROR_LOCK_VIOLATION | ERROR_IO_PENDING => Ok(false),
        e => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// Whether process `pid` is still running: `OpenProcess` + `GetExitCodeProcess`. A process we may not open
/// (another user's) exists, so it counts as alive; one that cannot be found does not.
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: OpenProcess takes plain values; the result is checked for null below.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        // SAFETY: no preconditions; reads this thread's last error right after the failed call.
        return unsafe { GetLastError() } == ERROR_ACCESS_DENIED;
    }
    let Ok(h) = owned(h) else { return false };
    let mut code = 0u32;
    // SAFETY: `h` is a live process handle opened with query rights; `code` is an out pointer.
    if unsafe { GetExitCodeProcess(h.as_raw_handle() as HANDLE, &mut code) } == 0 {
        return true;
    }
    // STILL_ACTIVE (259) is also a legal exit code; a process that really exited with it reads as alive,
    // the safe direction (the daemon stays).
    code == STILL_ACTIVE as u32
}

/// This user's default pipe, `\\.\pipe\spark-<SID>-sparkd` (see [`crate::default_pipe_path`]). Should the
/// token be unreadable (it never is for a normal process) the user name stands in, so the daemon and its
/// clients, which take the same fallback, still agree.
pub fn default_pipe() -> std::path::PathBuf {
    let user = current_user_sid()
        .ok()
        .or_else(|| std::env::var("USERNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    crate::default_pipe_path(&user)
}
