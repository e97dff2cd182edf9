"""What the blocking and the asyncio client share: socket options, CURVE keys, reading a
reply into the verb's answer."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any, Optional, TypeVar, Union

import zmq

from . import _wire
from ._errors import Unavailable, error_for
from ._types import Reader
from ._verbs import Call

T = TypeVar("T")
Key = Union[str, bytes]


@dataclass(frozen=True)
class CurveKeys:
    """CURVE keys for a daemon on a non-loopback address (Z85 text or 32 raw bytes each):
    the daemon's public key, and this client's key pair (its public key must be on the
    daemon's allow-list)."""

    server_public: Key
    public: Key
    secret: Key

    def __repr__(self) -> str:  # the secret key never prints
        return "CurveKeys(server_public=..., public=..., secret=<redacted>)"

    def apply(self, sock: "zmq.Socket[Any]") -> None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, _key(self.server_public))
        sock.setsockopt(zmq.CURVE_PUBLICKEY, _key(self.public))
        sock.setsockopt(zmq.CURVE_SECRETKEY, _key(self.secret))


def _key(k: Key) -> bytes:
    return k.encode("ascii") if isinstance(k, str) else k


def configure(sock: "zmq.Socket[Any]", curve: Optional[CurveKeys]) -> None:
    """Options every client socket gets before it connects.

    - ``IMMEDIATE``: queue a request only on a connection that is up. Without it a DEALER
      queues requests while the daemon is down and delivers them when it returns, long
      after the caller gave up on them (a write that answered 503 would happen later).
    - ``LINGER`` 0: closing drops unsent requests instead of hanging.
    - reconnect every 100 ms, backing off to 1 s, while the daemon is away.
    - ``MAXMSGSIZE``: a reply frame over the reply limit closes the connection.
    """
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    sock.setsockopt(zmq.MAXMSGSIZE, _wire.MAX_REPLY)
    if curve is not None:
        curve.apply(sock)


def connect(
    sock: "zmq.Socket[Any]",
    endpoint: str,
    *,
    what: str = "",
    ctx: "Optional[zmq.Context[Any]]" = None,
) -> None:
    """Connects ``sock``. An endpoint ZeroMQ refuses is a ``ValueError`` (``what`` names the
    endpoint in it), raised after the socket is closed and ``ctx``, the context made for
    it, terminated."""
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        if ctx is not None:
            ctx.term()
        raise ValueError(f"cannot connect to {what}{endpoint!r}: {e}") from e


def timed_out(endpoint: str, limit: float, verb: str) -> Unavailable:
    """The error of a request that had no reply within ``limit`` seconds."""
    return Unavailable(f"no reply from {endpoint} within {limit:g} s", verb=verb, timed_out=True)


class Ids:
    """Request ids: a 64-bit counter, unique among the requests in flight."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def take(self) -> bytes:
        with self._lock:
            return _wire.request_id(next(self._next))


def answer(call: Call[T], status: bytes, data: bytes) -> T:
    """The verb's answer for an ``OK`` reply; the status's exception otherwise."""
    try:
        word = status.decode("ascii")
    except UnicodeDecodeError:
        word = repr(status)
    body = _wire.decode_body(word, call.verb, data)
    if word == "OK":
        return call.read(Reader(call.verb, body))
    message = body.get("error")
    if not isinstance(message, str):
        message = "(the error reply has no message)"
    raise error_for(word, message, call.verb)
