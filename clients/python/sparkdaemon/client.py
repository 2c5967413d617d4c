"""The blocking socket client for ``sparkd``.

Typical use::

    from sparkdaemon import Client

    with Client() as c:                                  # connects and says Hello
        c.shader.put(0x1234ABCD, target=3, stage=1, data=b"...")
        blob = c.shader.get(0x1234ABCD, target=3, stage=1)  # bytes, or None on a miss
        c.asset.put("textures/rock.png", platform=2, data=png)
        with open("big.bin", "rb") as f:
            c.asset.put_from_file("levels/big.bin", 2, f)   # streamed, never all in memory

One :class:`Client` owns one connection. A lock serialises request/reply exchanges, so one client can be shared by
several threads (each exchange, streams included, holds the connection exclusively while it runs). After a
transport failure the connection is closed and the next request opens a new one (nothing is retried
automatically).
"""

from __future__ import annotations

import os
import socket
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Union

from . import protocol as p
from . import winpipe
from .caches import AssetCache, ShaderCache
from .compile_client import CompileApi
# _Simple is re-exported for compile_client; SourceExhausted is public.
from .ops import SourceExhausted, Submit, _Op, _Ping, _Raw, _Simple  # noqa: F401
from .errors import (
    DaemonError,
    DaemonNotRunning,
    SparkError,
    StreamMismatch,
    TransportError,
    UnexpectedMessage,
)

BytesLike = Union[bytes, bytearray, memoryview]

#: Default per-operation socket timeout in seconds.
DEFAULT_TIMEOUT = 30.0

# Parts of a frame at or below this size are copied into one send buffer with the header.
_COALESCE_LIMIT = 64 * 1024


def default_socket_path() -> str:
    """The daemon's default socket: ``$XDG_RUNTIME_DIR/spark/sparkd.sock``, else ``/tmp/spark-<uid>/sparkd.sock``;
    on Windows the named pipe ``\\\\.\\pipe\\spark-<SID>-sparkd``."""
    if os.name == "nt":
        return winpipe.default_path()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "spark", "sparkd.sock")
    return f"/tmp/spark-{os.getuid()}/sparkd.sock"



# ---------------------------------------------------------------------------------------------------------------
# One connection: frame I/O on a socket
# ---------------------------------------------------------------------------------------------------------------


class _Conn:
    """A connected socket and the frame I/O on it. Not locked itself: the owning Client's lock guards it."""

    def __init__(self, sock: socket.socket, timeout: Optional[float], on_event: Optional[Callable]) -> None:
        self.sock = sock
        self.timeout = timeout
        self.on_event = on_event
        self.sent = 0  # bytes written so far (tells whether a failed write left a partial request behind)
        self.pid = os.getpid()  # a connection inherited through fork() is not used by the child
        self.pipelining = False  # set while a pipeline's writer thread and the reader share the socket
        self._hdr = bytearray(p.HEADER_LEN)
        self._chunk = bytearray(0)

    # ---- writing ----

    def send_frame(self, service: int, msg_type: int, *parts: BytesLike) -> None:
        """Sends one frame whose payload is the concatenation of ``parts``."""
        views = [memoryview(x).cast("B") if isinstance(x, memoryview) else x for x in parts]
        total = sum(len(v) for v in views)
        header = p.encode_header(total, service, msg_type)
        if total <= _COALESCE_LIMIT:
            self._send(header + b"".join(views))
            return
        pending = [header]
        for v in views:
            if len(v) <= _COALESCE_LIMIT:
                pending.append(bytes(v))
            else:
                if pending:
                    self._send(b"".join(pending))
                    pending = []
                self._send(v)
        if pending:
            self._send(b"".join(pending))

    def send_message(self, service: int, msg: p.Message) -> None:
        self.send_frame(service, msg.TYPE, msg.encode())

    def _send(self, data: BytesLike) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise TransportError(f"timed out after {self.timeout}s sending to the daemon") from None
        except OSError as e:
            raise TransportError(f"connection to the daemon lost while sending: {e}") from e
        self.sent += len(data)

    # ---- reading ----

    def _recv_into(self, mv: memoryview) -> None:
        while len(mv):
            try:
                n = self.sock.recv_into(mv)
            except socket.timeout:
                raise TransportError(f"timed out after {self.timeout}s waiting for the daemon") from None
            except OSError as e:
                raise TransportError(f"connection to the daemon lost while receiving: {e}") from e
            if n == 0:
                raise TransportError("the daemon closed the connection")
            mv = mv[n:]

    def _recv_some(self, n: int) -> bytes:
        try:
            data = self.sock.recv(n)
        except socket.timeout:
            raise TransportError(f"timed out after {self.timeout}s waiting for the daemon") from None
        except OSError as e:
            raise TransportError(f"connection to the daemon lost while receiving: {e}") from e
        if not data:
            raise TransportError("the daemon closed the connection")
        return data

    def read_payload(self, n: int) -> bytes:
        if n == 0:
            return b""
        first = self._recv_some(n)  # usually the whole payload: no extra copy
        if len(first) == n:
            return first
        buf = bytearray(n)
        buf[: len(first)] = first
        self._recv_into(memoryview(buf)[len(first) :])
        return bytes(buf)

    def read_header(self) -> p.FrameHeader:
        """The next reply frame's header; server-initiated events are read and handed to ``on_event``."""
        while True:
            self._recv_into(memoryview(self._hdr))
            h = p.decode_header(self._hdr)
            if not p.is_event(h.msg_type):
                return h
            payload = self.read_payload(h.length)
            if self.on_event is not None:
                try:
                    self.on_event(p.Frame(h.service, h.msg_type, payload))
                except Exception:  # an event handler must not break the exchange in flight
                    pass

    def read_frame(self) -> p.Frame:
        h = self.read_header()
        return p.Frame(h.service, h.msg_type, self.read_payload(h.length))

    def read_reply(self, service: int, cls: type) -> Any:
        """Reads one reply frame and decodes it as ``cls``; an ErrorResponse raises :class:`DaemonError`."""
        f = self.read_frame()
        if f.msg_type == p.MSG_ERROR:
            raise p.ErrorResponse.decode(f.payload).to_exception(f.service)
        if f.service != service or f.msg_type != cls.TYPE:
            raise UnexpectedMessage(f.service, f.msg_type, expected=f"{cls.__name__} on service 0x{service:04x}")
        return cls.decode(f.payload)

    def read_stream(
        self,
        service: int,
        total_len: int,
        write: Optional[Callable[[memoryview], Any]] = None,
        into: Optional[bytearray] = None,
    ) -> None:
        """Reads STREAM_CHUNK frames up to the STREAM_END, handing each chunk to ``write`` or receiving the
        blob straight into ``into`` (a buffer of ``total_len`` bytes).

        Raises :class:`DaemonError` when the daemon ends the stream with an ErrorResponse and
        :class:`StreamMismatch` on a length or checksum mismatch (both after the whole stream was consumed).
        """
        hasher = p.new_hasher()
        received = 0
        overflow = False
        while True:
            h = self.read_header()
            if h.msg_type == p.MSG_ERROR:
                raise p.ErrorResponse.decode(self.read_payload(h.length)).to_exception(h.service)
            if h.service != service or h.msg_type not in (p.MSG_STREAM_CHUNK, p.MSG_STREAM_END):
                raise UnexpectedMessage(h.service, h.msg_type, expected="STREAM_CHUNK or STREAM_END")
            if h.msg_type == p.MSG_STREAM_END:
                end = p.StreamEnd.decode(self.read_payload(h.length))
                if received != total_len:
                    raise StreamMismatch(f"stream carried {received} bytes but {total_len} were announced")
                if hasher is not None and end.checksum and hasher.intdigest() != end.checksum:
                    raise StreamMismatch(
                        f"stream checksum mismatch: got {hasher.intdigest():032x}, daemon sent {end.checksum:032x}"
                    )
                return
            if not overflow and received + h.length > total_len:
                overflow = True  # keep draining to the end so the connection stays in sync
            if into is not None and not overflow:
                mv = memoryview(into)[received : received + h.length]
                self._recv_into(mv)
            else:
                if len(self._chunk) < h.length:
                    self._chunk = bytearray(h.length)
                mv = memoryview(self._chunk)[: h.length]
                self._recv_into(mv)
                if write is not None and not overflow:
                    write(mv)
            if not overflow and hasher is not None:
                hasher.update(mv)
            received += h.length

    def pending_error(self, wait: float = 0.5) -> Optional[DaemonError]:
        """After a failed send: the ErrorResponse the daemon sent before hanging up, if there is one."""
        if self.pipelining:
            return None
        try:
            self.sock.settimeout(wait)
            f = self.read_frame()
            if f.msg_type == p.MSG_ERROR:
                return p.ErrorResponse.decode(f.payload).to_exception(f.service)
        except (SparkError, OSError):
            pass
        return None

    def abort(self) -> None:
        """Shuts the socket down, waking any thread blocked on it."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------------------
# Operations: each writes its request frames and reads its reply
# ---------------------------------------------------------------------------------------------------------------

# Exceptions raised while reading a reply that leave the connection in sync (the whole reply was consumed).
_IN_SYNC = (DaemonError, StreamMismatch, SourceExhausted)


class WatchApi:
    """The Watch service (7): file-system watches kept by the daemon, with clocks (see docs/protocol.md §12).

    Clocks are ``(instance, seq)`` tuples; ``protocol.format_clock`` / ``parse_clock`` give the ``c:<hex>:<seq>``
    form. Events of a subscription (``protocol.WatchChanges``, ``WatchRescan``, ``WatchEnded``) reach the
    client's ``on_event`` while it talks to the daemon; a tool that polls uses :meth:`query` instead."""

    SERVICE = p.SERVICE_WATCH

    def __init__(self, submit: Submit) -> None:
        self._submit = submit

    @staticmethod
    def _args(root: str, include, exclude, no_ignore_files: bool, since) -> tuple:
        inst, seq = since if since is not None else (0, 0)
        flags = p.WATCH_FLAG_NO_IGNORE_FILES if no_ignore_files else 0
        return (os.path.abspath(root), flags, list(include or []), list(exclude or []), inst, seq)

    def subscribe(self, root: str, include=None, exclude=None, no_ignore_files: bool = False, since=None):
        """Subscribes this connection to ``root``; returns a ``protocol.WatchSubscribeResponse``."""
        m = p.WatchSubscribe(*self._args(root, include, exclude, no_ignore_files, since))
        return self._submit(_Simple(self.SERVICE, m, p.WatchSubscribeResponse))

    def unsubscribe(self, subscription: int) -> bool:
        m = p.WatchUnsubscribe(subscription)
        return self._submit(_Simple(self.SERVICE, m, p.WatchUnsubscribeResponse, lambda r: r.existed))

    def query(self, root: str, since=None, include=None, exclude=None, no_ignore_files: bool = False):
        """Files under ``root`` matching the globs changed since the clock: a ``protocol.WatchQueryResponse``
        (``.fresh_instance`` true: no history back to the clock -- rescan; ``(.instance, .seq)`` is the clock
        to pass next time)."""
        m = p.WatchQuery(*self._args(root, include, exclude, no_ignore_files, since))
        return self._submit(_Simple(self.SERVICE, m, p.WatchQueryResponse))

    def list(self):
        """Every watched root: a list of ``protocol.WatchRoot`` (subscribers, OS watches, files, rescans)."""
        return self._submit(_Simple(self.SERVICE, p.WatchList(), p.WatchListResponse, lambda r: r.roots))


class _ControlApi:
    """Control requests that can run alone or in a pipeline."""

    _submit: Submit

    def ping(self, data: BytesLike = b"") -> float:
        """Round trip time in seconds of a Ping carrying ``data`` (which the daemon echoes)."""
        return self._submit(_Ping(bytes(data)))

    def version(self) -> p.VersionResponse:
        """The daemon's protocol version and version string (``.protocol_version``, ``.daemon_version``)."""
        return self._submit(_Simple(p.SERVICE_CONTROL, p.Version(), p.VersionResponse))

    def stats(self) -> Dict[str, Any]:
        """Daemon-wide statistics: uptime_secs, protocol_version, services, current_connections,
        total_connections."""
        return self._submit(_Simple(p.SERVICE_CONTROL, p.StatsRequest(), p.StatsResponse, lambda m: m.to_dict()))

    def register_sponsor(self, pid: Optional[int] = None) -> int:
        """Registers ``pid`` (default: this process) as a sponsor; returns the number of live sponsors."""
        pid = os.getpid() if pid is None else pid
        return self._submit(
            _Simple(p.SERVICE_CONTROL, p.RegisterSponsor(pid), p.RegisterSponsorAck, lambda m: m.sponsors)
        )

    def namespaces(self) -> List[p.NamespaceStats]:
        """Every namespace the daemon serves (``.name``, ``.service``, ``.counters`` as (name, value) pairs)."""
        return self._submit(
            _Simple(p.SERVICE_CONTROL, p.Namespaces(), p.NamespacesResponse, lambda m: m.namespaces)
        )

    def request_raw(self, service: int, msg_type: int, payload: BytesLike = b"") -> p.Frame:
        """Sends one raw frame and returns the first reply frame (low level: tests, new messages).

        An ErrorResponse raises :class:`DaemonError`. Only for requests answered by a single frame.
        """
        return self._submit(_Raw(service, msg_type, bytes(payload)))


class Client(_ControlApi, CompileApi):
    """A connection to ``sparkd``.

    Args:
        socket_path: the daemon's Unix socket (default: :func:`default_socket_path`).
        timeout: seconds any single socket operation may block (None: forever). A timeout raises
            :class:`TransportError` and closes the connection.
        client_name: sent in Hello, shown in the daemon's logs.
        sponsor: sets the Hello sponsor flag (the daemon then lives as long as this process, with
            ``--exit-with-sponsors``).
        on_event: optional callable receiving server-initiated event frames (message type >= 0x8000) as raw
            :class:`~sparkdaemon.protocol.Frame` objects; :func:`~sparkdaemon.protocol.decode_message` turns
            the ones this package knows (e.g. :class:`~sparkdaemon.protocol.EventsLost`) into messages. It runs
            while the connection is locked: it must not call this client.

    The connection opens on :meth:`connect` (or ``with Client() as c``), or lazily on the first request.
    Attributes: ``hello`` is the :class:`~sparkdaemon.protocol.HelloResponse` of the current connection;
    ``shader`` and ``asset`` are the two caches.
    """

    def __init__(
        self,
        socket_path: Optional[Union[str, "os.PathLike[str]"]] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        client_name: str = "python",
        *,
        sponsor: bool = False,
        on_event: Optional[Callable[[p.Frame], Any]] = None,
    ) -> None:
        self.socket_path = os.fspath(socket_path) if socket_path is not None else default_socket_path()
        self.timeout = timeout
        self.client_name = client_name
        self.sponsor = sponsor
        self.on_event = on_event
        self.hello: Optional[p.HelloResponse] = None
        self._conn: Optional[_Conn] = None
        self._lock = threading.Lock()
        self.shader = ShaderCache(self._submit)
        self.asset = AssetCache(self._submit)
        self.watch = WatchApi(self._submit)
        _live_clients.add(self)

    def _after_fork_in_child(self) -> None:
        # Another thread may have held the lock at fork time; the child has only this thread.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "not connected"
        return f"<sparkdaemon.Client {self.socket_path!r} {state}>"

    # ---- connection ----

    def connect(self) -> "Client":
        """Connects and performs the Hello handshake (no-op when already connected). Returns ``self``.

        Raises :class:`DaemonNotRunning` at once when the socket is missing or refuses connections.
        """
        with self._lock:
            self._ensure_conn()
        return self

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def close(self) -> None:
        """Closes the connection (waits for an exchange in flight). A later request reconnects."""
        with self._lock:
            self._drop()

    def __enter__(self) -> "Client":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _open_pipe(self, path: str) -> Any:
        try:
            return winpipe.connect(path, self.timeout)
        except FileNotFoundError as e:
            raise DaemonNotRunning(path, e.strerror or str(e)) from None
        except OSError as e:
            raise TransportError(f"cannot open pipe {path}: {e}") from e

    def _open(self) -> _Conn:
        path = self.socket_path
        if winpipe.is_pipe_path(path):
            return self._handshake(self._open_pipe(path))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
            sock.close()
            raise DaemonNotRunning(path, e.strerror or str(e)) from None
        except socket.timeout:
            sock.close()
            raise TransportError(f"timed out connecting to {path}") from None
        except OSError as e:
            sock.close()
            raise TransportError(f"cannot connect to {path}: {e}") from e
        return self._handshake(sock)

    def _handshake(self, sock: Any) -> _Conn:
        conn = _Conn(sock, self.timeout, self.on_event)
        try:
            flags = p.HELLO_FLAG_SPONSOR if self.sponsor else 0
            conn.send_message(
                p.SERVICE_CONTROL, p.Hello(p.PROTOCOL_VERSION, flags, os.getpid() & 0xFFFFFFFF, self.client_name)
            )
            self.hello = conn.read_reply(p.SERVICE_CONTROL, p.HelloResponse)
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_conn(self) -> _Conn:
        conn = self._conn
        if conn is not None and conn.pid != os.getpid():
            # Inherited through fork(): the parent owns that stream. Close our copy of the descriptor only.
            conn.close()
            conn = self._conn = None
        if conn is None:
            conn = self._conn = self._open()
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ---- exchanges ----

    def _submit(self, op: _Op) -> Any:
        """Runs one request/reply exchange under the lock."""
        with self._lock:
            conn = self._ensure_conn()
            sent_before = conn.sent
            try:
                op.write(conn)
            except BaseException as e:
                # A request cut off half way leaves the connection unusable; one refused before anything was
                # sent (bad arguments, a short inline file) does not.
                if conn.sent != sent_before or isinstance(e, (TransportError, DaemonError)):
                    self._drop()
                raise
            try:
                return op.read(conn)
            except _IN_SYNC:
                raise
            except BaseException:
                self._drop()
                raise

    def _submit_many(self, ops: List[_Op], return_exceptions: bool) -> List[Any]:
        """Writes every request (from a helper thread) while reading the replies in order."""
        if not ops:
            return []
        with self._lock:
            conn = self._ensure_conn()
            writer_error: List[BaseException] = []

            def writer() -> None:
                try:
                    for op in ops:
                        op.write(conn)
                except BaseException as e:  # noqa: B036 - reported to the reading thread
                    writer_error.append(e)
                    conn.abort()

            t = threading.Thread(target=writer, name="sparkdaemon-pipeline-writer", daemon=True)
            conn.pipelining = True
            t.start()
            results: List[Any] = []
            try:
                for op in ops:
                    try:
                        results.append(op.read(conn))
                    except _IN_SYNC as e:
                        results.append(e)
            except BaseException:
                conn.abort()  # wakes the writer if it is blocked sending
                t.join()
                self._drop()
                if writer_error:
                    raise writer_error[0] from None
                raise
            finally:
                conn.pipelining = False
            t.join()
            if writer_error:
                self._drop()
                raise writer_error[0]
        if not return_exceptions:
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        return results

    # ---- control requests not available in a pipeline ----

    def shutdown(self) -> None:
        """Asks the daemon to finish in-flight requests and exit; closes this connection once acknowledged."""
        try:
            self._submit(_Simple(p.SERVICE_CONTROL, p.Shutdown(), p.ShutdownAck))
        finally:
            self.close()

    def pipeline(self) -> "Pipeline":
        """A :class:`Pipeline` that sends several requests before reading their replies."""
        return Pipeline(self)


class Pipeline(_ControlApi):
    """Queues requests, then sends them all at once and reads the replies in order (fewer round trips)::

        pipe = client.pipeline()
        for h in hashes:
            pipe.shader.get(h, 3, 1)
        blobs = pipe.execute()          # one result per request, in order

    Queuing methods mirror the client's (``ping``, ``version``, ``stats``, ``register_sponsor``,
    ``request_raw``, ``shader.*``, ``asset.*``) and return the request's index in the results. The connection is
    held for the whole of :meth:`execute`.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._ops: List[_Op] = []
        self.shader = ShaderCache(self._submit)
        self.asset = AssetCache(self._submit)
        self.watch = WatchApi(self._submit)

    def _submit(self, op: _Op) -> int:
        self._ops.append(op)
        return len(self._ops) - 1

    def __len__(self) -> int:
        return len(self._ops)

    def execute(self, return_exceptions: bool = False) -> List[Any]:
        """Sends every queued request and returns their results in order; the queue is then empty.

        A request answered by an ErrorResponse raises its :class:`DaemonError` after every reply was read, unless
        ``return_exceptions`` is true, in which case the exception object takes that request's place in the list.
        Transport and protocol errors always raise.
        """
        ops, self._ops = self._ops, []
        return self._client._submit_many(ops, return_exceptions)


_live_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for c in list(_live_clients):
        c._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def connect(socket_path: Optional[str] = None, **kwargs: Any) -> Client:
    """Creates a :class:`Client` and connects it (see :class:`Client` for the arguments)."""
    return Client(socket_path, **kwargs).connect()
