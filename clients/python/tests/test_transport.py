"""The client's request machinery against a scripted ROUTER in the test (not a daemon):
replies out of order, late replies dropped, timeouts, reconnecting, garbage replies."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, List, Optional

import pytest
import zmq

import cloakroom
from cloakroom import _wire
from cloakroom.aio import AsyncClient


class Router:
    """A ROUTER on a free loopback port that hands each request to ``handle``."""

    def __init__(self, handle: Callable[["Router", List[bytes]], None], port: int = 0) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if port:
            self.sock.bind(f"tcp://127.0.0.1:{port}")
        else:
            port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.port = port
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.handle = handle
        self.seen: List[List[bytes]] = []
        self.held: List[List[bytes]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def reply(self, req: List[bytes], status: bytes, body: Any) -> None:
        with self._lock:
            self.sock.send_multipart(
                [req[0], b"", b"CRP1", req[3], status, _wire.pack(body)]
            )

    def send_raw(self, frames: List[bytes]) -> None:
        with self._lock:
            self.sock.send_multipart(frames)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ready = self.sock.poll(20)
                frames = self.sock.recv_multipart() if ready else None
            if frames is not None:
                self.seen.append(frames)
                self.handle(self, frames)
            else:
                time.sleep(0.001)

    def close(self) -> None:
        self._stop.set()
        self.thread.join()
        self.sock.close(0)
        self.ctx.term()


def pong(r: Router, req: List[bytes]) -> None:
    r.reply(req, b"OK", {"protocol": "CRP1", "version": "test"})


def test_requests_are_the_documented_frames() -> None:
    r = Router(pong)
    try:
        with cloakroom.Client(r.endpoint, timeout=5) as c:
            assert c.ping() == cloakroom.Pong("CRP1", "test")
            c.ping()
        first, second = r.seen
        assert first[1:3] == [b"", b"CRP1"]
        assert first[3] == (1).to_bytes(8, "big") and second[3] == (2).to_bytes(8, "big")
        assert first[4:] == [b"PING", b"\x80"]
    finally:
        r.close()


def answer_reversed_after(n: int) -> Callable[[Router, List[bytes]], None]:
    """A router handler that holds the first `n` requests, then answers them in reverse
    order, each with an epoch that is its user id, so a mismatch would show."""

    def hold(r: Router, req: List[bytes]) -> None:
        r.held.append(req)
        if len(r.held) == n:
            for h in reversed(r.held):
                r.reply(h, b"OK", {"epoch": int(_wire.unpack(h[5])["user_id"])})

    return hold


def test_many_in_flight_replies_in_any_order() -> None:
    # Hold the first 8 requests, then answer them in reverse order, each with its own verb
    # echoed back in the body so a mismatch would show.
    r = Router(answer_reversed_after(8))
    try:
        with cloakroom.Client(r.endpoint, timeout=10) as c:
            results: List[Optional[int]] = [None] * 8

            def one(i: int) -> None:
                results[i] = c.user_epoch(str(i))

            threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert results == list(range(8))
    finally:
        r.close()


def test_timeout_is_unavailable_and_a_late_reply_is_dropped() -> None:
    r = Router(lambda r, req: r.held.append(req))
    try:
        with cloakroom.Client(r.endpoint, timeout=0.3) as c:
            with pytest.raises(cloakroom.Unavailable, match="no reply .* within 0.3 s") as e:
                c.user_epoch("a")
            assert e.value.timed_out and e.value.verb == "USER_EPOCH"
            # The late reply to the first request must not answer the second one.
            r.handle = lambda r, req: None
            r.reply(r.held[0], b"OK", {"epoch": 1})
            r.handle = lambda r, req: r.reply(req, b"OK", {"epoch": 2})
            assert c.user_epoch("b") == 2
    finally:
        r.close()


def test_statuses_raise_their_exception() -> None:
    answers = {b"NOT_FOUND": cloakroom.NotFound, b"UNAVAILABLE": cloakroom.Unavailable,
               b"CORRUPT": cloakroom.Corrupt,
               b"INVALID": cloakroom.Invalid, b"EXPIRED": cloakroom.Expired,
               b"CONFLICT": cloakroom.Conflict, b"TOO_LARGE": cloakroom.TooLarge,
               b"BAD_REQUEST": cloakroom.BadRequest, b"UNKNOWN_VERB": cloakroom.UnknownVerb,
               b"INTERNAL": cloakroom.Internal, b"SOMETHING_NEW": cloakroom.Internal}
    queue = list(answers)
    r = Router(lambda r, req: r.reply(req, queue.pop(0), {"error": "the daemon's line"}))
    try:
        with cloakroom.Client(r.endpoint, timeout=5) as c:
            for status, cls in answers.items():
                with pytest.raises(cls) as e:
                    c.ping()
                assert "the daemon's line" in str(e.value)
                assert isinstance(e.value, cloakroom.CloakroomError)
    finally:
        r.close()


def test_corrupt_fails_closed_as_unavailable() -> None:
    # A damaged store is down, not empty: code that answers 503 on Unavailable must catch it.
    r = Router(lambda r, req: r.reply(req, b"CORRUPT", {"error": "a corrupt record"}))
    try:
        with cloakroom.Client(r.endpoint, timeout=5) as c:
            with pytest.raises(cloakroom.Unavailable) as e:
                c.ping()
            assert type(e.value) is cloakroom.Corrupt
            assert e.value.status == "CORRUPT"
            assert not e.value.timed_out
    finally:
        r.close()


def test_garbage_replies_are_dropped_not_fatal() -> None:
    def junk_then_pong(r: Router, req: List[bytes]) -> None:
        r.send_raw([req[0], b"", b"CRP2", req[3], b"OK", b"\x80"])  # wrong version: dropped
        r.send_raw([req[0], b"nonsense"])  # not a reply: dropped
        r.send_raw([req[0], b"", b"CRP1", b"\x00" * 8, b"OK", b"\x80"])  # unknown id
        pong(r, req)

    r = Router(junk_then_pong)
    try:
        with cloakroom.Client(r.endpoint, timeout=5) as c:
            assert c.ping().version == "test"
    finally:
        r.close()


def test_reconnects_after_the_server_restarts_without_replaying_stale_requests() -> None:
    r = Router(pong)
    port = r.port
    with cloakroom.Client(r.endpoint, timeout=0.3) as c:
        c.ping()  # request id 1
        r.close()
        for _ in range(3):  # request ids 2, 3, 4: the caller got 503 for each
            with pytest.raises(cloakroom.Unavailable):
                c.ping()
        r = Router(pong, port=port)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert c.ping().version == "test"
                    break
                except cloakroom.Unavailable:
                    assert time.monotonic() < deadline, "the client did not reconnect"
            # Requests the caller gave up on while the server was down are never delivered
            # later (ZMQ_IMMEDIATE): a write that answered 503 must not happen afterwards.
            ids = [int.from_bytes(f[3], "big") for f in r.seen]
            assert ids and min(ids) > 4, ids
        finally:
            r.close()


def test_closed_client_is_unavailable() -> None:
    c = cloakroom.Client("tcp://127.0.0.1:1", timeout=0.2)
    c.close()
    with pytest.raises(cloakroom.Unavailable, match="closed"):
        c.ping()


def test_unencodable_value_is_a_type_error_before_sending() -> None:
    with cloakroom.Client("tcp://127.0.0.1:1", timeout=0.2) as c:
        with pytest.raises(TypeError, match="cannot encode"):
            c.set("cookie", [cloakroom.Set("k", {1, 2})])


def test_async_many_in_flight_and_timeout() -> None:
    r = Router(answer_reversed_after(16))

    async def main() -> None:
        async with AsyncClient(r.endpoint, timeout=10) as c:
            got = await asyncio.gather(*(c.user_epoch(str(i)) for i in range(16)))
            assert got == list(range(16))
            r.handle = lambda r, req: None
            c.timeout = 0.3
            with pytest.raises(cloakroom.Unavailable, match="within 0.3 s"):
                await c.ping()

    try:
        asyncio.run(main())
    finally:
        r.close()
