"""The asyncio client: the same verbs as :class:`cloakroom.Client`, as coroutines.

One DEALER socket per client and event loop; any number of coroutines may have requests in
flight on it at once, each matched to its reply by its request id::

    client = cloakroom.aio.AsyncClient("tcp://127.0.0.1:7450", timeout=2.0)
    session = await client.open(cookie)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar

import zmq
import zmq.asyncio

from . import _verbs as v
from . import _wire
from ._errors import Unavailable
from ._transport import CurveKeys, Ids, answer, configure, connect, timed_out
from ._types import Change, Device, Issued, Pong, Record, Revoked, Session, Stats

T = TypeVar("T")
Reply = Tuple[bytes, bytes]


def _now(now: Optional[int]) -> int:
    return int(time.time()) if now is None else now


class AsyncClient:
    """A client of cloakroomd for asyncio code. Bound to the event loop of its first request.

    ``timeout`` (seconds) bounds every request, the wait for a connection included: no reply
    by then raises :class:`cloakroom.Unavailable` (answer 503).
    """

    def __init__(
        self, endpoint: str, *, timeout: float = 2.0, curve: Optional[CurveKeys] = None
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        self.endpoint = endpoint
        self.timeout = timeout
        self._curve = curve
        self._ids = Ids()
        self._ctx: Optional[zmq.asyncio.Context] = None
        self._sock: Optional[zmq.asyncio.Socket] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._reader: Optional["asyncio.Task[None]"] = None
        self._pending: Dict[bytes, "asyncio.Future[Reply]"] = {}
        self._pid = -1
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncClient({self.endpoint!r}, timeout={self.timeout})"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the socket; requests in flight raise ``Unavailable``."""
        self._closed = True
        self._teardown()

    def _teardown(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(Unavailable(f"the client of {self.endpoint} was closed"))
        self._pending.clear()
        if self._sock is not None and self._pid == os.getpid():
            self._sock.close(0)
        if self._ctx is not None and self._pid == os.getpid():
            self._ctx.term()
        self._sock = None
        self._ctx = None

    def _socket(self) -> zmq.asyncio.Socket:
        if self._closed:
            raise Unavailable(f"the client of {self.endpoint} is closed")
        loop = asyncio.get_running_loop()
        if self._sock is not None and self._pid == os.getpid() and self._loop is loop:
            return self._sock
        if self._sock is not None and self._pid == os.getpid():
            raise RuntimeError(
                "this AsyncClient belongs to another event loop; make one client per loop"
            )
        # First use (or first use after fork: start afresh, never touch the parent's).
        self._pending = {}
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.DEALER)
        configure(sock, self._curve)
        connect(sock, self.endpoint)
        self._sock = sock
        self._loop = loop
        self._pid = os.getpid()
        self._reader = loop.create_task(self._read(sock))
        return sock

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            parts = _wire.split_reply(frames)
            if parts is None:
                continue  # not a CRP1 reply: dropped
            rid, status, body = parts
            fut = self._pending.pop(rid, None)
            if fut is not None and not fut.done():  # else late, after a timeout: dropped
                fut.set_result((status, body))

    async def call(self, call: "v.Call[T]", timeout: Optional[float] = None) -> T:
        """Sends one request and awaits its answer (the verb methods all come here)."""
        limit = self.timeout if timeout is None else timeout
        sock = self._socket()
        rid = self._ids.take()
        frames = _wire.request_frames(rid, call.verb, call.body)
        fut: "asyncio.Future[Reply]" = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut

        async def exchange() -> Reply:
            await sock.send_multipart(frames)
            return await fut

        try:
            status, data = await asyncio.wait_for(exchange(), limit)
        except asyncio.TimeoutError:
            raise timed_out(self.endpoint, limit, call.verb) from None
        finally:
            self._pending.pop(rid, None)
        return answer(call, status, data)

    # --- verbs (see cloakroom.Client for what each does) ---------------------------------

    async def ping(self) -> Pong:
        return await self.call(v.ping())

    async def create(self, record: Record, *, now: Optional[int] = None) -> None:
        await self.call(v.create(record, now))

    async def load(self, id_hash: bytes, *, now: Optional[int] = None) -> Record:
        return await self.call(v.load(id_hash, _now(now)))

    async def update(self, record: Record, *, now: Optional[int] = None) -> int:
        return await self.call(v.update(record, _now(now)))

    async def apply(
        self,
        id_hash: bytes,
        changes: Iterable[Change],
        *,
        idle_deadline: int,
        now: Optional[int] = None,
    ) -> int:
        return await self.call(v.apply(id_hash, changes, _now(now), idle_deadline))

    async def touch(self, id_hash: bytes, *, idle_deadline: int, now: Optional[int] = None) -> None:
        await self.call(v.touch(id_hash, _now(now), idle_deadline))

    async def delete(self, id_hash: bytes) -> bool:
        return await self.call(v.delete(id_hash))

    async def sessions_of(self, user_id: str, *, now: Optional[int] = None) -> List[Record]:
        return await self.call(v.sessions_of(user_id, now))

    async def revoke_user_sessions(
        self, user_id: str, *, except_id_hash: Optional[bytes] = None
    ) -> int:
        return await self.call(v.revoke_user_sessions(user_id, except_id_hash))

    async def user_epoch(self, user_id: str) -> int:
        return await self.call(v.user_epoch(user_id))

    async def bump_user_epoch(self, user_id: str) -> int:
        return await self.call(v.bump_user_epoch(user_id))

    async def purge_expired(self, *, limit: int, now: Optional[int] = None) -> int:
        return await self.call(v.purge_expired(_now(now), limit))

    async def find_prefix(self, prefix: str, *, now: Optional[int] = None) -> List[Record]:
        return await self.call(v.find_prefix(prefix, now))

    async def stats(self, *, now: Optional[int] = None) -> Stats:
        return await self.call(v.stats(now))

    async def open(self, cookie: str, *, take_flashes: bool = False) -> Session:
        return await self.call(v.open_(cookie, take_flashes))

    async def issue(
        self,
        *,
        user_id: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
        device: Optional[Device] = None,
    ) -> Issued:
        return await self.call(v.issue(user_id, data, device))

    async def login(
        self, user_id: str, *, cookie: Optional[str] = None, device: Optional[Device] = None
    ) -> Issued:
        return await self.call(v.login(user_id, cookie, device))

    async def logout(self, cookie: str) -> bool:
        return await self.call(v.logout(cookie))

    async def set(self, cookie: Optional[str], changes: Iterable[Change]) -> Optional[str]:
        return await self.call(v.set_(cookie, changes))

    async def remove(self, cookie: str, keys: Iterable[str]) -> Optional[str]:
        return await self.call(v.remove(cookie, keys))

    async def flash(self, cookie: Optional[str], level: str, message: str) -> Optional[str]:
        return await self.call(v.flash(cookie, level, message))

    async def csrf_token(self, cookie: str) -> str:
        return await self.call(v.csrf_token(cookie))

    async def check_csrf(self, cookie: str, token: str) -> bool:
        return await self.call(v.check_csrf(cookie, token))

    async def sign_out_others(self, cookie: str) -> int:
        return await self.call(v.sign_out_others(cookie))

    async def revoke_user(self, user_id: str) -> Revoked:
        return await self.call(v.revoke_user(user_id))

    async def end_session(self, id_hash: bytes, *, user_id: Optional[str] = None) -> bool:
        return await self.call(v.end_session(id_hash, user_id))
