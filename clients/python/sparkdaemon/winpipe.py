"""Windows named pipes for the client, standard library only (``_winapi``, ``msvcrt``; ``ctypes`` for the SID).

sparkd on Windows listens on ``\\\\.\\pipe\\spark-<SID>-sparkd`` (the user's SID: names are not unique across
domains; same rule as ``spark_platform::default_pipe_path`` in Rust). A pipe is opened like a file; this module
wraps the handle in :class:`PipeSocket`, the part of the ``socket.socket`` interface the client uses, so the
framing code is the same on every platform. Timeouts poll ``PeekNamedPipe`` (a synchronous pipe handle has no
read timeout) and read only once bytes are there.

Only the pure parts (path rules, :class:`PipeSocket` over any raw stream) run in the Linux CI; the Win32 calls
need a Windows CPython, which Wine cannot provide here (docs/reliability.md).
"""

from __future__ import annotations

import os
import re
import socket
import time
from typing import Any, Callable, Optional

PIPE_PREFIX = "\\\\.\\pipe\\"
ERROR_PIPE_BUSY = 231
ERROR_BROKEN_PIPE = 109
#: How long a connect keeps retrying while every pipe instance is busy (a burst of clients).
BUSY_WAIT = 2.0


def is_pipe_path(path: str) -> bool:
    """Whether ``path`` names a Windows named pipe (``\\\\.\\pipe\\NAME``), without regard to case."""
    return len(path) > len(PIPE_PREFIX) and path[: len(PIPE_PREFIX)].lower() == PIPE_PREFIX


def default_pipe_path(user_sid: str) -> str:
    """``\\\\.\\pipe\\spark-<SID>-sparkd``; anything but ``[A-Za-z0-9-]`` becomes ``_``."""
    return f"{PIPE_PREFIX}spark-{re.sub(r'[^A-Za-z0-9-]', '_', user_sid)}-sparkd"


def current_user_sid() -> str:
    """The string SID of the user this process runs as (Windows only), through advapi32 with ``ctypes``."""
    import ctypes
    from ctypes import wintypes

    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    kernel32.LocalFree.argtypes = [wintypes.HLOCAL]
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    advapi32.OpenProcessToken.argtypes = [wintypes.HANDLE, wintypes.DWORD, ctypes.POINTER(wintypes.HANDLE)]
    advapi32.GetTokenInformation.argtypes = [
        wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, wintypes.DWORD, ctypes.POINTER(wintypes.DWORD),
    ]
    advapi32.ConvertSidToStringSidW.argtypes = [ctypes.c_void_p, ctypes.POINTER(wintypes.LPWSTR)]
    token_query, token_user = 0x0008, 1

    token = wintypes.HANDLE()
    if not advapi32.OpenProcessToken(kernel32.GetCurrentProcess(), token_query, ctypes.byref(token)):
        raise ctypes.WinError(ctypes.get_last_error())
    try:
        size = wintypes.DWORD()
        advapi32.GetTokenInformation(token, token_user, None, 0, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        if not advapi32.GetTokenInformation(token, token_user, buf, size, ctypes.byref(size)):
            raise ctypes.WinError(ctypes.get_last_error())
        sid = ctypes.cast(buf, ctypes.POINTER(ctypes.c_void_p))[0]  # TOKEN_USER.User.Sid
        text = wintypes.LPWSTR()
        if not advapi32.ConvertSidToStringSidW(sid, ctypes.byref(text)):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            return str(text.value)
        finally:
            kernel32.LocalFree(ctypes.cast(text, wintypes.HLOCAL))
    finally:
        kernel32.CloseHandle(token)


def default_path() -> str:
    """This user's default pipe; the user name stands in should the token be unreadable (as in Rust)."""
    try:
        user = current_user_sid()
    except OSError:
        user = os.environ.get("USERNAME") or "unknown"
    return default_pipe_path(user)


class PipeSocket:
    """``sendall``/``recv``/``recv_into``/``settimeout``/``shutdown``/``close`` over a pipe.

    ``raw`` is an unbuffered binary stream (``open(path, "r+b", buffering=0)``); ``available()`` says how
    many bytes can be read without blocking and raises :class:`BrokenPipeError` once the daemon closed its end.
    """

    def __init__(self, raw: Any, available: Callable[[], int], timeout: Optional[float] = None) -> None:
        self._raw = raw
        self._available = available
        self._timeout = timeout

    def settimeout(self, timeout: Optional[float]) -> None:
        self._timeout = timeout

    def _wait_readable(self) -> None:
        # Polls even without a timeout: I/O on a synchronous pipe handle is serialised, so a ReadFile blocked
        # in one thread would hold up the pipeline writer's WriteFile in another.
        deadline = float("inf") if self._timeout is None else time.monotonic() + self._timeout
        polls = 0
        while True:
            try:
                if self._available() > 0:
                    return
            except BrokenPipeError:
                return  # the read that follows sees end of stream
            now = time.monotonic()
            if now >= deadline:
                raise socket.timeout("timed out")
            polls += 1
            time.sleep(0 if polls < 50 else min(0.001, max(0.0, deadline - now)))

    def recv(self, n: int) -> bytes:
        self._wait_readable()
        try:
            return self._raw.read(n) or b""
        except BrokenPipeError:
            return b""

    def recv_into(self, mv: memoryview) -> int:
        self._wait_readable()
        try:
            return self._raw.readinto(mv) or 0
        except BrokenPipeError:
            return 0

    def sendall(self, data: Any) -> None:
        mv = memoryview(data).cast("B")
        while len(mv):
            n = self._raw.write(mv)
            if not n:
                raise BrokenPipeError("the daemon's end of the pipe is closed")
            mv = mv[n:]

    def shutdown(self, how: int) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._raw.close()
        except OSError:
            pass


def connect(path: str, timeout: Optional[float], opener: Callable[..., Any] = open) -> PipeSocket:
    """Opens the pipe: ``FileNotFoundError`` at once when no daemon listens; a busy pipe is retried for up to
    :data:`BUSY_WAIT` seconds."""
    deadline = time.monotonic() + BUSY_WAIT
    while True:
        try:
            raw = opener(path, "r+b", buffering=0)
            break
        except OSError as e:
            if getattr(e, "winerror", None) != ERROR_PIPE_BUSY or time.monotonic() >= deadline:
                raise
            _wait_named_pipe(path, deadline)
    return PipeSocket(raw, _peek_available(raw), timeout)


def _wait_named_pipe(path: str, deadline: float) -> None:
    ms = max(1, int((deadline - time.monotonic()) * 1000))
    try:
        import _winapi

        _winapi.WaitNamedPipe(path, min(ms, 50))
    except (ImportError, OSError):
        time.sleep(0.002)


def _peek_available(raw: Any) -> Callable[[], int]:
    if os.name != "nt":  # a stand-in stream in tests provides its own
        return getattr(raw, "available", lambda: 1)
    import _winapi
    import msvcrt

    handle = msvcrt.get_osfhandle(raw.fileno())

    def available() -> int:
        try:
            navail, _left = _winapi.PeekNamedPipe(handle, 0)
        except OSError as e:
            if getattr(e, "winerror", None) == ERROR_BROKEN_PIPE:
                raise BrokenPipeError(str(e)) from None
            raise
        return navail

    return available
