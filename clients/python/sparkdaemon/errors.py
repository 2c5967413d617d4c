"""Exceptions raised by the SparkDaemon client.

Every exception derives from :class:`SparkError`, so ``except SparkError`` catches anything the daemon or the
wire can throw at you. The hierarchy::

    SparkError
    +-- DaemonNotRunning     no socket, or nobody listening on it (raised at once, never retried)
    +-- TransportError       the connection dropped or timed out mid-exchange
    +-- ProtocolError        a reply could not be decoded or was not the expected message
    |   +-- FrameTooLarge, Truncated, TrailingBytes, InvalidUtf8, InvalidValue, UnexpectedMessage
    |   +-- StreamMismatch   a streamed blob did not match its announced length or checksum
    +-- DaemonError          the daemon answered with an ErrorResponse (.code, .code_name, .message)
"""

from __future__ import annotations

import enum
from typing import Optional


class SparkError(Exception):
    """Base class of every error raised by this package."""


class DaemonNotRunning(SparkError):
    """The daemon's socket does not exist or nothing accepts connections on it."""

    def __init__(self, socket_path: str, reason: str = "") -> None:
        self.socket_path = socket_path
        self.reason = reason
        msg = f"sparkd is not running (socket {socket_path!r})"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)

    def __reduce__(self):
        return (type(self), (self.socket_path, self.reason))


class TransportError(SparkError):
    """The connection failed mid-exchange: dropped by the daemon, reset, or timed out.

    The client closes its connection when this is raised; the next request opens a new one.
    """


class ProtocolError(SparkError):
    """A frame or payload could not be decoded, or a reply was not the message expected.

    ``kind`` is a short machine-readable name (``frame_too_large``, ``truncated``, ``trailing_bytes``,
    ``invalid_utf8``, ``invalid_value``, ``unexpected_message``, ``stream_mismatch``), matching the error names
    used by ``docs/protocol-vectors.json``.
    """

    kind = "protocol"


class FrameTooLarge(ProtocolError):
    """A frame announces (or would carry) a payload above the 16 MiB frame limit."""

    kind = "frame_too_large"

    def __init__(self, length: int) -> None:
        self.length = length
        super().__init__(f"frame payload of {length} bytes exceeds the 16 MiB frame limit")


class Truncated(ProtocolError):
    """A frame or payload ended before the message did."""

    kind = "truncated"

    def __init__(self, msg: str = "payload ended before the message did") -> None:
        super().__init__(msg)


class TrailingBytes(ProtocolError):
    """A payload has bytes after the end of a message with an exact layout."""

    kind = "trailing_bytes"

    def __init__(self, msg: str = "payload has bytes after the end of the message") -> None:
        super().__init__(msg)


class InvalidUtf8(ProtocolError):
    """A string field is not valid UTF-8."""

    kind = "invalid_utf8"

    def __init__(self, msg: str = "string field is not valid UTF-8") -> None:
        super().__init__(msg)


class InvalidValue(ProtocolError):
    """A field holds a value the protocol does not define (e.g. an unknown GetResponse status)."""

    kind = "invalid_value"

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"invalid field value: {what}")


class UnexpectedMessage(ProtocolError):
    """A reply arrived with a service id or message type other than the one the request calls for."""

    kind = "unexpected_message"

    def __init__(self, service: int, msg_type: int, expected: Optional[str] = None) -> None:
        self.service = service
        self.msg_type = msg_type
        msg = f"unexpected message type 0x{msg_type:04x} on service 0x{service:04x}"
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)


class StreamMismatch(ProtocolError):
    """A streamed blob received from the daemon did not match its announced length or its checksum.

    The whole stream was consumed, so the connection stays usable.
    """

    kind = "stream_mismatch"


class ErrorCode(enum.IntEnum):
    """Error codes carried by an ErrorResponse (``crates/spark-proto/src/error.rs``). Stable numbers."""

    UNKNOWN = 0
    UNKNOWN_SERVICE = 1
    UNKNOWN_MESSAGE = 2
    MALFORMED = 3
    UNSUPPORTED_VERSION = 4
    TOO_LARGE = 5
    NO_SPACE = 6
    IO = 7
    SHUTTING_DOWN = 8
    CORRUPT = 9
    INVALID_KEY = 10
    STREAM_MISMATCH = 11
    PERMISSION_DENIED = 12
    INTERNAL = 13

    @classmethod
    def from_code(cls, code: int) -> "ErrorCode":
        """The enum member for a raw code; :attr:`UNKNOWN` for codes this client does not know."""
        try:
            return cls(code)
        except ValueError:
            return cls.UNKNOWN

    @property
    def code_name(self) -> str:
        """The daemon's name for the code, e.g. ``"unknown-service"``."""
        return self.name.lower().replace("_", "-")


class DaemonError(SparkError):
    """The daemon answered a request with an ErrorResponse.

    Attributes:
        code: the raw numeric code (kept even when this client does not know it).
        code_name: the daemon's name for it, e.g. ``"no-space"`` (``"unknown"`` for codes newer than this client).
        error_code: the :class:`ErrorCode` member (``ErrorCode.UNKNOWN`` for unknown codes).
        message: the daemon's human-readable explanation.
        service: the service id of the ErrorResponse frame, when known.

    The exchange that produced it is complete, so the connection stays usable.
    """

    def __init__(self, code: int, message: str, service: Optional[int] = None) -> None:
        self.code = int(code)
        self.error_code = ErrorCode.from_code(self.code)
        self.code_name = self.error_code.code_name
        self.message = message
        self.service = service
        super().__init__(f"{self.code_name} ({self.code}): {message}")

    def __reduce__(self):  # keep pickling (multiprocessing) working with the custom __init__
        return (type(self), (self.code, self.message, self.service))
