"""The blocking client: one DEALER socket owned by one I/O thread, shared by any number of
threads, each request matched to its reply by its request id."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Deque, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar

import zmq

from . import _verbs as v
from . import _wire
from ._errors import CloakroomError, Unavailable
from ._feed import SessionCache
from ._transport import CurveKeys, Ids, answer, configure, connect, timed_out
from ._types import Change, Device, Issued, Pong, Record, Revoked, Session, Stats

T = TypeVar("T")
Reply = Tuple[bytes, bytes]  # status, body


def _now(now: Optional[int]) -> int:
    return int(time.time()) if now is None else now


class Client:
    """A client of cloakroomd (protocol CRP1), safe to share between threads.

    ``endpoint`` is the daemon's request socket (``ipc:///run/cloakroomd/cloakroomd.sock``,
    ``tcp://127.0.0.1:7450``). ``timeout`` (seconds) bounds every request: a request without
    a reply by then raises :class:`cloakroom.Unavailable`, and the application should answer
    503. ZeroMQ reconnects by itself; nothing to do when the daemon restarts.

    ``cache`` (a :class:`cloakroom.SessionCache`, kept fresh by a
    :class:`cloakroom.Subscriber`) lets :meth:`open` answer from memory while the
    revocation feed is live.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 2.0,
        curve: Optional[CurveKeys] = None,
        cache: Optional[SessionCache] = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        self.endpoint = endpoint
        self.timeout = timeout
        self.cache = cache
        self._curve = curve
        self._ids = Ids()
        self._lock = threading.Lock()
        self._closed = False
        self._pid = -1
        self._io: Optional[_IoThread] = None

    def __repr__(self) -> str:
        return f"Client({self.endpoint!r}, timeout={self.timeout})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops the I/O thread; requests still in flight raise ``Unavailable``."""
        with self._lock:
            self._closed = True
            io, self._io = self._io, None
        if io is not None and self._pid == os.getpid():
            io.stop()

    def _thread(self) -> "_IoThread":
        with self._lock:
            if self._closed:
                raise Unavailable(f"the client of {self.endpoint} is closed")
            if self._io is None or self._pid != os.getpid():
                # First use, or first use in a forked child (a ZeroMQ context does not
                # survive fork: start afresh and never touch the parent's).
                self._io = _IoThread(self.endpoint, self._curve)
                self._pid = os.getpid()
            return self._io

    def call(self, call: "v.Call[T]", timeout: Optional[float] = None) -> T:
        """Sends one request and waits for its answer (the verb methods all come here)."""
        limit = self.timeout if timeout is None else timeout
        rid = self._ids.take()
        frames = _wire.request_frames(rid, call.verb, call.body)
        fut = self._thread().submit(rid, frames)
        try:
            status, data = fut.result(limit)
        except FutureTimeout:
            self._thread().forget(rid)
            raise timed_out(self.endpoint, limit, call.verb) from None
        except CloakroomError as e:
            e.verb = e.verb or call.verb
            raise
        return answer(call, status, data)

    # --- verbs --------------------------------------------------------------------------

    def ping(self) -> Pong:
        """``PING``: the protocol and the daemon's version."""
        return self.call(v.ping())

    def create(self, record: Record, *, now: Optional[int] = None) -> None:
        """``CREATE`` a record; ``Conflict`` if one live at ``now`` has that id hash.

        ``now`` defaults to the record's ``last_seen`` (the protocol's default), not to this
        machine's clock: a record made for a moment is judged at that moment.
        """
        self.call(v.create(record, now))

    def load(self, id_hash: bytes, *, now: Optional[int] = None) -> Record:
        """``LOAD`` the record live at ``now`` (default: this machine's clock); ``NotFound``."""
        return self.call(v.load(id_hash, _now(now)))

    def update(self, record: Record, *, now: Optional[int] = None) -> int:
        """``UPDATE`` (compare-and-swap on ``record.version``); the new version."""
        return self.call(v.update(record, _now(now)))

    def apply(
        self,
        id_hash: bytes,
        changes: Iterable[Change],
        *,
        idle_deadline: int,
        now: Optional[int] = None,
    ) -> int:
        """``APPLY`` per-key changes atomically; the new version; ``NotFound`` if gone."""
        return self.call(v.apply(id_hash, changes, _now(now), idle_deadline))

    def touch(self, id_hash: bytes, *, idle_deadline: int, now: Optional[int] = None) -> None:
        """``TOUCH``: moves the idle deadline only."""
        self.call(v.touch(id_hash, _now(now), idle_deadline))

    def delete(self, id_hash: bytes) -> bool:
        """``DELETE`` one record; whether one was there."""
        return self.call(v.delete(id_hash))

    def sessions_of(self, user_id: str, *, now: Optional[int] = None) -> List[Record]:
        """``SESSIONS_OF``: the user's live sessions (at the daemon's clock unless ``now``)."""
        return self.call(v.sessions_of(user_id, now))

    def revoke_user_sessions(self, user_id: str, *, except_id_hash: Optional[bytes] = None) -> int:
        """``REVOKE_USER_SESSIONS``: ends the user's sessions but one; how many ended."""
        return self.call(v.revoke_user_sessions(user_id, except_id_hash))

    def user_epoch(self, user_id: str) -> int:
        """``USER_EPOCH`` (0 until bumped)."""
        return self.call(v.user_epoch(user_id))

    def bump_user_epoch(self, user_id: str) -> int:
        """``BUMP_USER_EPOCH``: the new epoch."""
        return self.call(v.bump_user_epoch(user_id))

    def purge_expired(self, *, limit: int, now: Optional[int] = None) -> int:
        """``PURGE_EXPIRED``: removes up to ``limit`` expired records; how many."""
        return self.call(v.purge_expired(_now(now), limit))

    def find_prefix(self, prefix: str, *, now: Optional[int] = None) -> List[Record]:
        """``FIND_PREFIX``: the live records whose id hash, in hex, starts with ``prefix``
        (1 to 64 lower-case hex digits; ``ValueError`` otherwise), at the daemon's clock
        unless ``now``. For operators: it may walk the whole store. ``Unsupported`` if the
        daemon's store cannot list its records (memcached)."""
        return self.call(v.find_prefix(prefix, now))

    def stats(self, *, now: Optional[int] = None) -> Stats:
        """``STATS``: live and expired-not-purged counts, and bytes where the store can tell
        (at the daemon's clock unless ``now``). For operators; ``Unsupported`` as
        :meth:`find_prefix`."""
        return self.call(v.stats(now))

    def open(self, cookie: str, *, take_flashes: bool = False) -> Session:
        """``OPEN`` a cookie value: its session with the policy applied.

        Raises ``Invalid`` (does not verify), ``Expired`` or ``NotFound`` (no live session):
        the visitor is anonymous. ``Unavailable``: answer 503.
        """
        cache = self.cache
        if cache is not None and not take_flashes:
            hit = cache.get(cookie)
            if hit is not None:
                return hit
            epoch = cache.epoch()
            session = self.call(v.open_(cookie, False))
            cache.put(cookie, session, epoch)
            return session
        return self.call(v.open_(cookie, take_flashes))

    def issue(
        self,
        *,
        user_id: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
        device: Optional[Device] = None,
    ) -> Issued:
        """``ISSUE`` a new session (optionally logged in, with data) and its cookie."""
        return self.call(v.issue(user_id, data, device))

    def login(
        self, user_id: str, *, cookie: Optional[str] = None, device: Optional[Device] = None
    ) -> Issued:
        """``LOGIN``: a new session id for ``user_id``, carrying the data of ``cookie``'s
        session over; the old id is dead. Send the returned cookie."""
        self._forget(cookie)
        return self.call(v.login(user_id, cookie, device))

    def logout(self, cookie: str) -> bool:
        """``LOGOUT``: ends the cookie's session; clear the cookie whatever the answer."""
        self._forget(cookie)
        return self.call(v.logout(cookie))

    def set(self, cookie: Optional[str], changes: Iterable[Change]) -> Optional[str]:
        """``SET`` changes atomically (creating a session without one); a cookie to send
        when a session was created, else None."""
        self._forget(cookie)
        return self.call(v.set_(cookie, changes))

    def remove(self, cookie: str, keys: Iterable[str]) -> Optional[str]:
        """``REMOVE`` keys; like :meth:`set`."""
        self._forget(cookie)
        return self.call(v.remove(cookie, keys))

    def flash(self, cookie: Optional[str], level: str, message: str) -> Optional[str]:
        """``FLASH``: queues a flash message (creating a session like :meth:`set`)."""
        self._forget(cookie)
        return self.call(v.flash(cookie, level, message))

    def csrf_token(self, cookie: str) -> str:
        """``CSRF``: a freshly masked token for a page."""
        return self.call(v.csrf_token(cookie))

    def check_csrf(self, cookie: str, token: str) -> bool:
        """``CSRF`` with ``verify``: whether the token matches the session's secret."""
        return self.call(v.check_csrf(cookie, token))

    def sign_out_others(self, cookie: str) -> int:
        """``SIGN_OUT_OTHERS``: ends the user's other sessions; how many."""
        return self.call(v.sign_out_others(cookie))

    def revoke_user(self, user_id: str) -> Revoked:
        """``REVOKE_USER``: ends all of the user's sessions and bumps the epoch."""
        return self.call(v.revoke_user(user_id))

    def end_session(self, id_hash: bytes, *, user_id: Optional[str] = None) -> bool:
        """``END_SESSION`` by id hash (only if it is ``user_id``'s, when given)."""
        return self.call(v.end_session(id_hash, user_id))

    def _forget(self, cookie: Optional[str]) -> None:
        if self.cache is not None and cookie is not None:
            self.cache.forget_cookie(cookie)


class _IoThread:
    """Owns the DEALER socket: sends queued requests, routes replies to their futures."""

    def __init__(self, endpoint: str, curve: Optional[CurveKeys]) -> None:
        self.endpoint = endpoint
        self._ctx = zmq.Context()
        self._sock: "zmq.Socket[Any]" = self._ctx.socket(zmq.DEALER)
        configure(self._sock, curve)
        connect(self._sock, endpoint, ctx=self._ctx)
        self._lock = threading.Lock()
        self._pending: Dict[bytes, "Future[Reply]"] = {}
        self._outbox: Deque[Tuple[bytes, List[bytes]]] = deque()
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name=f"cloakroom {endpoint}", daemon=True)
        self._thread.start()

    def submit(self, rid: bytes, frames: List[bytes]) -> "Future[Reply]":
        fut: "Future[Reply]" = Future()
        with self._lock:
            if self._stopping:
                raise Unavailable(f"the client of {self.endpoint} is closed")
            self._pending[rid] = fut
            self._outbox.append((rid, frames))
        self._wake()
        return fut

    def forget(self, rid: bytes) -> None:
        """The caller gave up: a late reply to ``rid`` will be dropped."""
        with self._lock:
            self._pending.pop(rid, None)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._wake()
        self._thread.join(5)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the thread is awake anyway

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        break
                    # Requests whose caller gave up are not sent.
                    while self._outbox and self._outbox[0][0] not in self._pending:
                        self._outbox.popleft()
                    want_out = bool(self._outbox)
                poller.modify(self._sock, zmq.POLLIN | (zmq.POLLOUT if want_out else 0))
                events = dict(poller.poll(1000))
                if self._wake_r in events:
                    os.read(self._wake_r, 4096)
                ev = events.get(self._sock, 0)
                if ev & zmq.POLLIN:
                    self._receive()
                if ev & zmq.POLLOUT:
                    self._send()
        finally:
            self._shutdown()

    def _receive(self) -> None:
        for _ in range(256):  # a budget, so sends are not starved by a flood of replies
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            parts = _wire.split_reply(frames)
            if parts is None:
                continue  # not a CRP1 reply: dropped
            rid, status, body = parts
            with self._lock:
                fut = self._pending.pop(rid, None)
            if fut is not None:  # else a late reply after a timeout: dropped
                fut.set_result((status, body))

    def _send(self) -> None:
        while True:
            with self._lock:
                if not self._outbox:
                    return
                rid, frames = self._outbox[0]
                if rid not in self._pending:
                    self._outbox.popleft()
                    continue
            try:
                self._sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                return  # no connection up (IMMEDIATE) or the queue is full: wait for POLLOUT
            with self._lock:
                self._outbox.popleft()

    def _shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            pending, self._pending = self._pending, {}
            self._outbox.clear()
        for fut in pending.values():
            fut.set_exception(Unavailable(f"the client of {self.endpoint} was closed"))
        self._sock.close(0)
        self._ctx.term()
        os.close(self._wake_r)
        os.close(self._wake_w)

