"""A scripted in-process stand-in for sparkd, to test client behaviour the real daemon cannot be made to show
(corrupt streams, dropped connections, events, timeouts). Each accepted connection runs the Hello handshake and
then ``handler(peer)`` in its own thread.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from typing import Callable, Dict, List, Optional, Tuple

from sparkdaemon import protocol as p


class Closed(Exception):
    pass


class Peer:
    """The daemon side of one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.dec = p.FrameDecoder()
        self.pending: List[p.Frame] = []

    def read_frame(self) -> p.Frame:
        while not self.pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise Closed()
            self.pending += self.dec.feed(data)
        return self.pending.pop(0)

    def send_frame(self, service: int, msg_type: int, payload: bytes = b"") -> None:
        self.sock.sendall(p.encode_frame(service, msg_type, payload))

    def send(self, service: int, msg: p.Message) -> None:
        self.sock.sendall(msg.to_frame(service))

    def error(self, service: int, code: int, message: str) -> None:
        self.send(service, p.ErrorResponse(code, message))

    def read_stream(self, service: int) -> Tuple[bytes, int, List[int]]:
        """Reads chunk frames up to STREAM_END: (data, checksum, chunk sizes)."""
        parts, sizes = [], []
        while True:
            f = self.read_frame()
            assert f.service == service
            if f.msg_type == p.MSG_STREAM_CHUNK:
                parts.append(f.payload)
                sizes.append(len(f.payload))
            elif f.msg_type == p.MSG_STREAM_END:
                return b"".join(parts), p.StreamEnd.decode(f.payload).checksum, sizes
            else:
                raise AssertionError(f"unexpected frame in stream: {f}")

    def send_stream(self, service: int, data: bytes, chunk: int, checksum: Optional[int] = None) -> None:
        for off in range(0, len(data), chunk):
            self.send_frame(service, p.MSG_STREAM_CHUNK, data[off : off + chunk])
        if checksum is None:
            checksum = p.blob_checksum(data)
        self.send(service, p.StreamEnd(checksum))


class FakeDaemon:
    def __init__(self, handler: Callable[[Peer], None], hello: Optional[p.HelloResponse] = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="sparkfake-")
        self.path = os.path.join(self.dir, "f.sock")
        self.handler = handler
        self.hello = hello or p.HelloResponse(1, "fake-0.0", os.getpid(), [1, 2, 3], ["stream"])
        self.hellos: List[p.Hello] = []
        self.accepted = 0
        self.errors: List[BaseException] = []
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        self.lsock.listen(16)
        self.conns: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        peer = Peer(c)
        try:
            f = peer.read_frame()
            self.hellos.append(p.Hello.decode(f.payload))
            peer.send(p.SERVICE_CONTROL, self.hello)
            self.handler(peer)
        except (Closed, ConnectionError, OSError):
            pass
        except BaseException as e:  # surfaced by the tests through .errors
            self.errors.append(e)
        finally:
            c.close()

    def close(self) -> None:
        self.lsock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def cache_handler(store: Dict[Tuple[int, object], bytes], inline_max: int = p.MAX_PAYLOAD - 1, chunk: int = 1 << 20):
    """A handler implementing Ping and the cache basics over ``store``, streaming gets above ``inline_max``."""

    def handler(peer: Peer) -> None:
        while True:
            f = peer.read_frame()
            svc = f.service
            if svc == p.SERVICE_CONTROL and f.msg_type == p.CONTROL_PING:
                peer.send(svc, p.Pong(f.payload))
                continue
            if svc not in (p.SERVICE_SHADER, p.SERVICE_ASSET):
                peer.error(svc, 1, f"unknown service 0x{svc:04x}")
                continue
            m = p.decode_message(f)
            if isinstance(m, p.Get):
                blob = store.get((svc, m.key))
                if blob is None:
                    peer.send(svc, p.GetResponse(p.GetStatus.MISS))
                elif len(blob) <= inline_max:
                    peer.send(svc, p.GetResponse(p.GetStatus.INLINE, data=blob))
                else:
                    peer.send(svc, p.GetResponse(p.GetStatus.STREAMED, total_len=len(blob)))
                    peer.send_stream(svc, blob, chunk)
            elif isinstance(m, p.PutStream):
                data, checksum, _ = peer.read_stream(svc)
                if len(data) != m.total_len:
                    peer.error(svc, 11, "length mismatch")
                elif checksum and p.HAVE_XXHASH and checksum != p.blob_checksum(data):
                    peer.error(svc, 11, "checksum mismatch")
                else:
                    store[(svc, m.key)] = data
                    peer.send(svc, p.PutResponse(True))
            elif isinstance(m, p.Put):
                store[(svc, m.key)] = m.data
                peer.send(svc, p.PutResponse(True))
            elif isinstance(m, p.Exists):
                blob = store.get((svc, m.key))
                peer.send(svc, p.ExistsResponse(blob is not None, len(blob) if blob is not None else 0))
            else:
                peer.error(svc, 2, "unknown message")

    return handler
