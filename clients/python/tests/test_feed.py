"""The revocation subscriber and its cache: against the real daemon's feed, and against a
scripted PUB for the gaps a daemon does not make on purpose."""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

import pytest
import zmq

import cloakroom
from cloakroom import _wire

from conftest import Daemon
from test_client import record


def session(id_hash: bytes, user: Optional[str]) -> cloakroom.Session:
    return cloakroom.Session(
        id_hash=id_hash, user_id=user, data={}, flashes=[], csrf="t",
        expires_at=int(time.time()) + 600, cookie=None,
    )


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def fill(cache: cloakroom.SessionCache, cookie: str, s: cloakroom.Session) -> None:
    cache.put(cookie, s, cache.epoch())
    assert cache.get(cookie) is not None


def test_daemon_revocations_reach_the_subscriber_and_drop_the_cache(
    daemon: Daemon, client: cloakroom.Client, user: str
) -> None:
    cache = cloakroom.SessionCache()
    with cloakroom.Subscriber(daemon.events, cache=cache) as sub:
        assert sub.wait_live(10), f"no message on the feed {daemon.events} in 10 s"
        a, b, c = record(user), record(user), record(user)
        for r in (a, b, c):
            client.create(r)
            fill(cache, f"cookie-{r.id_hash.hex()}", session(r.id_hash, user))
        other = os.urandom(32)
        fill(cache, "unrelated", session(other, "someone-else"))

        client.delete(a.id_hash)
        wait_for("revoke.session", lambda: any(
            isinstance(x, cloakroom.SessionRevoked) and x.id_hash == a.id_hash
            for x in sub.revocations))
        assert cache.get(f"cookie-{a.id_hash.hex()}") is None
        assert cache.get(f"cookie-{b.id_hash.hex()}") is not None

        client.revoke_user_sessions(user, except_id_hash=c.id_hash)
        wait_for("revoke.user", lambda: any(
            isinstance(x, cloakroom.UserRevoked) and x.user_id == user for x in sub.revocations))
        assert cache.get(f"cookie-{b.id_hash.hex()}") is None
        assert cache.get(f"cookie-{c.id_hash.hex()}") is not None
        assert cache.get("unrelated") is not None
        assert sub.live


def test_daemon_restart_empties_the_cache(own_daemon: Daemon) -> None:
    cache = cloakroom.SessionCache()
    reasons = []
    with cloakroom.Subscriber(own_daemon.events, cache=cache, on_resync=reasons.append) as sub:
        assert sub.wait_live(10)
        fill(cache, "c", session(os.urandom(32), None))
        own_daemon.stop()
        own_daemon.start()
        wait_for("a resync after the restart", lambda: any(
            "stream changed" in r or "feed is down" in r for r in reasons), timeout=20)
        assert len(cache) == 0


class Pub:
    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"

    def send(self, topic: str, body: dict) -> None:
        self.sock.send_multipart([topic.encode(), b"CRP1", _wire.pack(body)])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def test_a_sequence_gap_empties_the_cache() -> None:
    pub = Pub()
    stream = os.urandom(8)
    cache = cloakroom.SessionCache()
    reasons = []
    try:
        with cloakroom.Subscriber(pub.endpoint, cache=cache, on_resync=reasons.append) as sub:
            wait_for("the subscription", lambda: (
                pub.send("feed.heartbeat", {"stream": stream, "seq": 0}) or sub.live))
            h = os.urandom(32)
            fill(cache, "keep", session(h, "u"))
            pub.send("revoke.session", {"stream": stream, "seq": 1, "id_hash": os.urandom(32),
                                        "user_id": None, "epoch": 0})
            pub.send("feed.heartbeat", {"stream": stream, "seq": 1})
            wait_for("seq 1", lambda: sub.tracker.seq == 1)
            assert cache.get("keep") is not None  # in sequence: nothing dropped
            pub.send("revoke.user", {"stream": stream, "seq": 3, "user_id": "x", "epoch": 1,
                                     "except": None})  # 2 was lost
            wait_for("the resync", lambda: any("lost" in r for r in reasons))
            assert len(cache) == 0 and sub.live  # emptied, and caching goes on from 3
            fill(cache, "again", session(h, "u"))
            pub.send("feed.heartbeat", {"stream": stream, "seq": 2})  # heartbeat out of step
            wait_for("the second resync", lambda: len(reasons) >= 3)
            assert cache.get("again") is None
            pub.send("feed.heartbeat", {"stream": stream, "seq": 2})
            pub.send("garbage", {"nothing": 1})
            wait_for("the undecodable message", lambda: any("decode" in r for r in reasons))
            assert not sub.live and cache.get("again") is None
    finally:
        pub.close()


def test_silence_empties_the_cache() -> None:
    pub = Pub()
    stream = os.urandom(8)
    cache = cloakroom.SessionCache()
    try:
        with cloakroom.Subscriber(pub.endpoint, cache=cache) as sub:
            wait_for("the subscription", lambda: (
                pub.send("feed.heartbeat", {"stream": stream, "seq": 0}) or sub.live))
            fill(cache, "c", session(os.urandom(32), None))
            wait_for("3 s of silence", lambda: not sub.live, timeout=10)
            assert len(cache) == 0
            cache.put("c", session(os.urandom(32), None), cache.epoch())
            assert cache.get("c") is None  # not live: nothing cached
    finally:
        pub.close()


def test_client_open_uses_the_cache_only_while_live() -> None:
    cache = cloakroom.SessionCache()
    s = session(os.urandom(32), "u")
    cache.set_live(True)
    cache.put("c", s, cache.epoch())
    epoch = cache.epoch()
    cache.revoke(cloakroom.UserRevoked(1, "u", 2, None))
    assert cache.get("c") is None
    cache.put("c", s, epoch)  # fetched before the revocation: not cached
    assert cache.get("c") is None
    with cloakroom.Client("tcp://127.0.0.1:1", timeout=0.2, cache=cache) as c:
        cache.put("c", s, cache.epoch())
        assert c.open("c") == s  # from memory, no daemon needed
        cache.set_live(False)
        with pytest.raises(cloakroom.Unavailable):
            c.open("c")
