"""Pure-Python client for SparkDaemon (``sparkd``), the per-user local cache daemon.

Standard library only (Python >= 3.9). If the optional ``xxhash`` package is installed, streamed blobs carry and
are checked against their XXH3-128 checksum; without it the client sends checksum 0 ("not supplied") and checks
only lengths.

Quick start::

    import sparkdaemon

    with sparkdaemon.Client() as c:
        print(c.hello.daemon_version, c.ping())
        c.shader.put(0xDEADBEEF, 3, 1, b"compiled bytes")
        assert c.shader.get(0xDEADBEEF, 3, 1) == b"compiled bytes"

Modules: :mod:`sparkdaemon.protocol` (pure frame and message codecs, no I/O), :mod:`sparkdaemon.client` (the
socket client), :mod:`sparkdaemon.errors` (exceptions).
"""

from . import protocol  # first: it loads compile_messages, which builds on it
from . import compile_messages  # noqa: I001
from .client import (
    DEFAULT_TIMEOUT,
    AssetCache,
    Client,
    Pipeline,
    ShaderCache,
    SourceExhausted,
    connect,
    default_socket_path,
)
from .errors import (
    DaemonError,
    DaemonNotRunning,
    ErrorCode,
    ProtocolError,
    SparkError,
    StreamMismatch,
    TransportError,
)
from .protocol import HAVE_XXHASH, MAX_PAYLOAD, PROTOCOL_VERSION

__version__ = "0.1.0"

__all__ = [
    "AssetCache",
    "Client",
    "DEFAULT_TIMEOUT",
    "DaemonError",
    "DaemonNotRunning",
    "ErrorCode",
    "HAVE_XXHASH",
    "MAX_PAYLOAD",
    "PROTOCOL_VERSION",
    "Pipeline",
    "ProtocolError",
    "ShaderCache",
    "SourceExhausted",
    "SparkError",
    "StreamMismatch",
    "TransportError",
    "connect",
    "default_socket_path",
    "compile_messages",
    "protocol",
]
