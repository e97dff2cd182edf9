"""The revocation feed (docs/protocol.md, "The revocation feed"): the resync rules as a
sans-IO tracker, a session cache they keep honest, and a subscriber thread."""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Union

import zmq

from . import _wire
from ._transport import CurveKeys, connect
from ._types import Reader, Session

#: No message for this long (three heartbeats) means the feed is dead: resync.
SILENCE = 3.0


@dataclass(frozen=True)
class SessionRevoked:
    """``revoke.session``: one session ended."""

    seq: int
    id_hash: bytes
    user_id: Optional[str]
    epoch: int


@dataclass(frozen=True)
class UserRevoked:
    """``revoke.user``: every session of the user ended except ``except_id_hash``."""

    seq: int
    user_id: str
    epoch: int
    except_id_hash: Optional[bytes]


Revocation = Union[SessionRevoked, UserRevoked]


@dataclass(frozen=True)
class Step:
    """What one feed message means: whether to empty the cache first (``resync``), the
    revocation to apply (if any), and whether caching may go on (``live``)."""

    resync: bool
    revocation: Optional[Revocation]
    live: bool
    reason: str = ""


class FeedTracker:
    """The subscriber's rules, with no socket and no clock of its own."""

    def __init__(self) -> None:
        self.stream: Optional[bytes] = None
        self.seq = 0
        self.last_message: Optional[float] = None

    def message(self, frames: Sequence[bytes], now: float) -> Step:
        """One message from the feed, received at ``now`` (seconds, any monotonic clock)."""
        self.last_message = now
        try:
            topic, stream, seq, rev = _decode(frames)
        except ValueError as e:
            self.stream = None  # the next good message starts afresh
            return Step(True, None, False, f"a feed message does not decode: {e}")
        reason = ""
        if self.stream is None:
            reason = "first message"
        elif stream != self.stream:
            reason = "the stream changed (the daemon restarted)"
        elif topic == "feed.heartbeat" and seq != self.seq:
            reason = f"heartbeat at {seq}, last revocation seen was {self.seq}"
        elif topic != "feed.heartbeat" and seq != self.seq + 1:
            reason = f"revocation {seq} after {self.seq}: a message was lost"
        self.stream = stream
        self.seq = seq
        return Step(bool(reason), rev, True, reason)

    def silent(self, now: float) -> bool:
        """True (and forgets the stream) when no message came for :data:`SILENCE` seconds."""
        if self.stream is None or self.last_message is None:
            return False
        if now - self.last_message < SILENCE:
            return False
        self.stream = None
        return True


def _decode(frames: Sequence[bytes]) -> "tuple[str, bytes, int, Optional[Revocation]]":
    if len(frames) != 3 or frames[1] != _wire.PROTOCOL:
        raise ValueError("not three frames with CRP1 in frame 1")
    topic = frames[0].decode("ascii", "replace")
    try:
        body = _wire.unpack(frames[2])
    except Exception as e:
        raise ValueError(str(e)) from e
    if not isinstance(body, dict):
        raise ValueError("the body is not a map")
    r = Reader(topic, body)
    try:
        stream = body.get("stream")
        if not isinstance(stream, bytes) or len(stream) != 8:
            raise ValueError("'stream' is not bin of 8 bytes")
        seq = r.u64("seq")
        rev: Optional[Revocation]
        if topic == "revoke.session":
            rev = SessionRevoked(seq, r.bin32("id_hash"), r.opt_text("user_id"), r.u64("epoch"))
        elif topic == "revoke.user":
            exc = body.get("except")
            rev = UserRevoked(
                seq, r.text("user_id"), r.u64("epoch"), None if exc is None else r.bin32("except")
            )
        elif topic == "feed.heartbeat":
            rev = None
        else:
            raise ValueError(f"unknown topic {topic!r}")
    except ValueError:
        raise
    except Exception as e:  # Internal from the reader: a missing or mistyped field
        raise ValueError(str(e)) from e
    return topic, stream, seq, rev


class SessionCache:
    """``OPEN`` answers by cookie value, dropped by revocations and emptied on every resync.

    It answers only while its :class:`Subscriber` says the feed is live, never past the
    session's ``expires_at``, and never an answer older than ``max_age`` seconds: the feed
    announces revocations only, not data written by other nodes, so cached ``data`` can be
    that old. Keep ``max_age`` short, or use the cache only where that is acceptable.
    """

    def __init__(self, *, max_entries: int = 10_000, max_age: float = 5.0) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._lock = threading.Lock()
        self._entries: "OrderedDict[str, tuple[Session, float]]" = OrderedDict()
        self._by_hash: Dict[bytes, Set[str]] = {}
        self._by_user: Dict[str, Set[bytes]] = {}
        self._live = False
        self._generation = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def live(self) -> bool:
        """Whether the cache may answer (the feed is up and in sequence)."""
        return self._live

    def epoch(self) -> int:
        """A generation to hand back to :meth:`put`: an answer fetched while a revocation
        or a resync happened is not cached."""
        with self._lock:
            return self._generation

    def get(self, cookie: str) -> Optional[Session]:
        with self._lock:
            if not self._live:
                return None
            hit = self._entries.get(cookie)
            if hit is None:
                return None
            session, at = hit
            now = time.time()
            if now >= session.expires_at or time.monotonic() - at > self.max_age:
                self._drop_cookie(cookie)
                return None
            return copy.deepcopy(session)

    def put(self, cookie: str, session: Session, epoch: int) -> None:
        with self._lock:
            if not self._live or epoch != self._generation or session.cookie is not None:
                return  # not live, something was revoked meanwhile, or a reissued cookie
            self._drop_cookie(cookie)
            self._entries[cookie] = (copy.deepcopy(session), time.monotonic())
            self._by_hash.setdefault(session.id_hash, set()).add(cookie)
            if session.user_id is not None:
                self._by_user.setdefault(session.user_id, set()).add(session.id_hash)
            while len(self._entries) > self.max_entries:
                self._drop_cookie(next(iter(self._entries)))

    def forget_cookie(self, cookie: str) -> None:
        """Drops one cookie's entry (this node is about to change or end that session)."""
        with self._lock:
            self._generation += 1
            self._drop_cookie(cookie)

    def clear(self, *, live: bool) -> None:
        """Empties the cache; ``live`` says whether it may fill again."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._by_hash.clear()
            self._by_user.clear()
            self._live = live

    def set_live(self, live: bool) -> None:
        with self._lock:
            self._live = live

    def revoke(self, rev: Revocation) -> None:
        with self._lock:
            self._generation += 1
            if isinstance(rev, SessionRevoked):
                self._drop_hash(rev.id_hash)
            else:
                for h in list(self._by_user.get(rev.user_id, ())):
                    if h != rev.except_id_hash:
                        self._drop_hash(h)

    def _drop_hash(self, id_hash: bytes) -> None:
        for cookie in list(self._by_hash.get(id_hash, ())):
            self._drop_cookie(cookie)

    def _drop_cookie(self, cookie: str) -> None:
        hit = self._entries.pop(cookie, None)
        if hit is None:
            return
        session = hit[0]
        cookies = self._by_hash.get(session.id_hash)
        if cookies is not None:
            cookies.discard(cookie)
            if not cookies:
                del self._by_hash[session.id_hash]
                if session.user_id is not None:
                    hashes = self._by_user.get(session.user_id)
                    if hashes is not None:
                        hashes.discard(session.id_hash)
                        if not hashes:
                            del self._by_user[session.user_id]


class Subscriber:
    """Subscribes to the daemon's revocation feed on a thread of its own.

    ``cache``, when given, is kept honest: revocations drop their sessions, and every resync
    (first message, daemon restart, a sequence gap, an undecodable message, 3 s of silence)
    empties it. ``on_revocation`` and ``on_resync`` are called on the subscriber's thread.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        cache: Optional[SessionCache] = None,
        curve: Optional[CurveKeys] = None,
        on_revocation: Optional[Callable[[Revocation], None]] = None,
        on_resync: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.endpoint = endpoint
        self.cache = cache
        self.on_revocation = on_revocation
        self.on_resync = on_resync
        self.tracker = FeedTracker()
        self.revocations: List[Revocation] = []  # the most recent, for inspection
        self.resyncs: List[str] = []  # why each resync happened
        self._curve = curve
        self._stop = threading.Event()
        self._live = threading.Event()
        self._ctx = zmq.Context()
        self._sock: "zmq.Socket[Any]" = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self._sock.setsockopt(zmq.MAXMSGSIZE, 1 << 16)
        if curve is not None:
            curve.apply(self._sock)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        connect(self._sock, endpoint, what="the feed ", ctx=self._ctx)
        self._thread = threading.Thread(target=self._run, name=f"cloakroom feed {endpoint}", daemon=True)
        self._thread.start()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def live(self) -> bool:
        """Whether the feed is up and in sequence (a cache may answer)."""
        return self._live.is_set()

    def wait_live(self, timeout: float) -> bool:
        """Waits until the first message arrived (the daemon heartbeats every second)."""
        return self._live.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._sock.poll(200, zmq.POLLIN):
                    frames = self._sock.recv_multipart()
                    self._step(self.tracker.message(frames, time.monotonic()))
                elif self.tracker.silent(time.monotonic()):
                    self._resync("no message for 3 s: the feed is down", live=False)
        finally:
            self._live.clear()
            if self.cache is not None:
                self.cache.clear(live=False)
            self._sock.close(0)
            self._ctx.term()

    def _step(self, step: Step) -> None:
        if step.resync:
            self._resync(step.reason, live=step.live)
        if step.revocation is not None:
            if self.cache is not None:
                self.cache.revoke(step.revocation)
            self.revocations = (self.revocations + [step.revocation])[-1000:]
            if self.on_revocation is not None:
                self.on_revocation(step.revocation)

    def _resync(self, reason: str, *, live: bool) -> None:
        if self.cache is not None:
            self.cache.clear(live=live)
        if live:
            self._live.set()
        else:
            self._live.clear()
        self.resyncs = (self.resyncs + [reason])[-1000:]
        if self.on_resync is not None:
            self.on_resync(reason)
