"""Every client method against a real cloakroomd (the `daemon` fixture)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from typing import List, Optional

import pytest

import cloakroom
from cloakroom import Remove, Set
from cloakroom.aio import AsyncClient

from conftest import Daemon


def record(user: Optional[str] = None, data: Optional[dict] = None) -> cloakroom.Record:
    now = int(time.time())
    return cloakroom.Record(
        id_hash=os.urandom(32),
        user_id=user,
        user_epoch=0,
        created=now,
        last_seen=now,
        idle_deadline=now + 1800,
        absolute_deadline=now + 43200,
        version=1,
        data=data or {},
        device=cloakroom.Device(user_agent="pytest", label="test"),
    )


# --- store verbs --------------------------------------------------------------------------


def test_ping(client: cloakroom.Client) -> None:
    pong = client.ping()
    assert pong.protocol == "CRP1" and pong.version


def test_create_load_update_delete(client: cloakroom.Client, user: str) -> None:
    rec = record(user, {"cart": [1, 2], "nested": {"a": None, "b": b"\x00\xff"}})
    client.create(rec)
    with pytest.raises(cloakroom.Conflict):
        client.create(rec)
    loaded = client.load(rec.id_hash)
    assert loaded.data == rec.data and loaded.user_id == user and loaded.version == 1
    assert loaded.device == rec.device
    loaded.data["cart"] = [3]
    assert client.update(loaded) == 2
    with pytest.raises(cloakroom.Conflict):
        client.update(loaded)  # version 1 moved on
    assert client.load(rec.id_hash).data["cart"] == [3]
    assert client.delete(rec.id_hash) is True
    assert client.delete(rec.id_hash) is False
    with pytest.raises(cloakroom.NotFound):
        client.load(rec.id_hash)


def test_create_is_judged_at_now(client: cloakroom.Client) -> None:
    first = record()
    client.create(first)
    # By default CREATE is judged at the record's last_seen, when the first one is live.
    with pytest.raises(cloakroom.Conflict):
        client.create(dataclasses.replace(first, data={"second": True}))
    later = first.absolute_deadline + 1
    again = dataclasses.replace(
        first,
        data={"second": True},
        created=later,
        last_seen=later,
        idle_deadline=later + 1800,
        absolute_deadline=later + 43200,
    )
    # Judged at a `now` when the first one is live: taken, whatever the record says.
    with pytest.raises(cloakroom.Conflict):
        client.create(again, now=first.last_seen)
    # Judged at its own last_seen, after the first one's deadline: the id hash is free.
    client.create(again)
    assert client.load(again.id_hash, now=later).data == {"second": True}


async def _create_at(daemon: Daemon, rec: cloakroom.Record, now: int) -> None:
    async with AsyncClient(daemon.endpoint) as c:
        await c.create(rec, now=now)


def test_async_create_takes_now(daemon: Daemon) -> None:
    first = record()
    asyncio.run(_create_at(daemon, first, first.last_seen))
    # The same record again: taken at any moment the first one is live...
    with pytest.raises(cloakroom.Conflict):
        asyncio.run(_create_at(daemon, first, first.idle_deadline - 1))
    # ...and free once it is not, though the record's own last_seen says otherwise.
    asyncio.run(_create_at(daemon, first, first.idle_deadline + 1))


def test_apply_and_touch(client: cloakroom.Client) -> None:
    rec = record(None, {"cart": [1], "keep": 1})
    client.create(rec)
    now = int(time.time())
    v = client.apply(rec.id_hash, [Set("theme", "dark"), Remove("cart")], idle_deadline=now + 900)
    assert v == 2
    loaded = client.load(rec.id_hash)
    assert loaded.data == {"keep": 1, "theme": "dark"}
    client.touch(rec.id_hash, idle_deadline=now + 1700)
    assert client.load(rec.id_hash).idle_deadline >= now + 1700
    client.delete(rec.id_hash)
    with pytest.raises(cloakroom.NotFound):
        client.apply(rec.id_hash, [Set("x", 1)], idle_deadline=now + 900)
    with pytest.raises(cloakroom.NotFound):
        client.touch(rec.id_hash, idle_deadline=now + 900)


def test_sessions_of_and_revoke_user_sessions(client: cloakroom.Client, user: str) -> None:
    recs = [record(user) for _ in range(3)]
    for r in recs:
        client.create(r)
    assert {s.id_hash for s in client.sessions_of(user)} == {r.id_hash for r in recs}
    assert client.revoke_user_sessions(user, except_id_hash=recs[0].id_hash) == 2
    assert [s.id_hash for s in client.sessions_of(user)] == [recs[0].id_hash]
    assert client.revoke_user_sessions(user) == 1
    assert client.sessions_of(user) == []


def test_user_epochs(client: cloakroom.Client, user: str) -> None:
    assert client.user_epoch(user) == 0
    assert client.bump_user_epoch(user) == 1
    assert client.bump_user_epoch(user) == 2
    assert client.user_epoch(user) == 2


def test_purge_expired(client: cloakroom.Client) -> None:
    rec = record()
    client.create(rec)
    # Ask as if far in the future: this record (at least) is expired then.
    later = rec.absolute_deadline + 10
    purged = client.purge_expired(limit=100_000, now=later)
    assert purged >= 1
    with pytest.raises(cloakroom.NotFound):
        client.load(rec.id_hash)


def test_find_prefix(client: cloakroom.Client, user: str) -> None:
    rec = record(user)
    client.create(rec)
    hexid = rec.id_hash.hex()
    # 12 hex digits: no other test's random id shares them.
    found = client.find_prefix(hexid[:12])
    assert [r.id_hash for r in found] == [rec.id_hash]
    assert found[0].user_id == user and found[0].device == rec.device
    assert [r.id_hash for r in client.find_prefix(hexid)] == [rec.id_hash]
    # Only live records: at a time past its deadline, the prefix finds nothing.
    assert client.find_prefix(hexid, now=rec.absolute_deadline + 1) == []
    client.delete(rec.id_hash)
    assert client.find_prefix(hexid[:12]) == []
    # The daemon checks the prefix too (this client refuses it before sending).
    with pytest.raises(cloakroom.BadRequest):
        client.call(cloakroom.Call("FIND_PREFIX", {"prefix": "ABC"}, lambda r: None))


def test_stats_counts_live_and_expired(own_daemon: Daemon) -> None:
    # A daemon of its own: the counts are exactly this test's records.
    with cloakroom.Client(own_daemon.endpoint, timeout=5) as c:
        empty = c.stats()
        assert (empty.live, empty.expired_not_purged) == (0, 0)
        recs = [record() for _ in range(3)]
        for r in recs:
            c.create(r)
        now = c.stats()
        assert (now.live, now.expired_not_purged) == (3, 0)
        assert now.bytes is not None and now.bytes > 0  # SQLite knows its size
        later = recs[0].absolute_deadline + 1
        assert (c.stats(now=later).live, c.stats(now=later).expired_not_purged) == (0, 3)
        assert c.purge_expired(limit=100, now=later) == 3
        assert (c.stats(now=later).live, c.stats(now=later).expired_not_purged) == (0, 0)


def test_operator_verbs_on_memcached_are_unsupported() -> None:
    d = Daemon(["--store", "memcache://127.0.0.1:11211"])
    d.start()
    try:
        with cloakroom.Client(d.endpoint, timeout=5) as c:
            with pytest.raises(cloakroom.Unsupported):
                c.stats()
            with pytest.raises(cloakroom.Unsupported):
                c.find_prefix("ab")
    finally:
        d.cleanup()


def test_bad_input_is_an_error_not_a_crash(client: cloakroom.Client) -> None:
    with pytest.raises(cloakroom.UnknownVerb):
        client.call(cloakroom.Call("NO_SUCH_VERB", {}, lambda r: None))
    with pytest.raises(cloakroom.BadRequest):
        client.call(cloakroom.Call("LOAD", {"id_hash": b"short", "now": 1}, lambda r: None))
    with pytest.raises(cloakroom.TooLarge):
        client.create(record(None, {"big": "x" * (1 << 20)}))
    assert client.ping().protocol == "CRP1"


def test_threads_share_one_client(client: cloakroom.Client, user: str) -> None:
    recs = [record(user) for _ in range(40)]
    errors: List[BaseException] = []

    def work(part: List[cloakroom.Record]) -> None:
        try:
            for r in part:
                client.create(r)
                assert client.load(r.id_hash).id_hash == r.id_hash
        except BaseException as e:  # noqa: BLE001 - collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(recs[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(client.sessions_of(user)) == 40


def test_daemon_stopped_is_unavailable_then_recovers(own_daemon: Daemon) -> None:
    with cloakroom.Client(own_daemon.endpoint, timeout=0.5) as c:
        c.ping()
        own_daemon.stop()
        with pytest.raises(cloakroom.Unavailable):
            c.ping()
        own_daemon.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                c.ping()
                break
            except cloakroom.Unavailable:
                assert time.monotonic() < deadline, "the client did not reconnect"


def test_async_client(daemon: Daemon, user: str) -> None:
    async def main() -> None:
        async with AsyncClient(daemon.endpoint, timeout=5) as c:
            assert (await c.ping()).protocol == "CRP1"
            recs = [record(user) for _ in range(20)]
            await asyncio.gather(*(c.create(r) for r in recs))
            loaded = await asyncio.gather(*(c.load(r.id_hash) for r in recs))
            assert [r.id_hash for r in loaded] == [r.id_hash for r in recs]
            found = await c.find_prefix(recs[0].id_hash.hex())
            assert [r.id_hash for r in found] == [recs[0].id_hash]
            stats = await c.stats()
            assert stats.live >= 20 and stats.bytes is not None
            later = await c.stats(now=recs[0].absolute_deadline + 1)
            assert later.expired_not_purged >= 20
            with pytest.raises(ValueError):
                await c.find_prefix("XYZ")
            assert await c.bump_user_epoch(user) == 1
            assert await c.revoke_user_sessions(user) == 20
            with pytest.raises(cloakroom.NotFound):
                await c.load(recs[0].id_hash)

    asyncio.run(main())


# --- cookie verbs -------------------------------------------------------------------------


@pytest.mark.usefixtures("cookie_verbs")
class TestCookieVerbs:
    def test_issue_open_set_remove(self, client: cloakroom.Client) -> None:
        issued = client.issue(data={"theme": "dark"}, device=cloakroom.Device(label="py"))
        s = client.open(issued.cookie)
        assert s.id_hash == issued.id_hash and s.user_id is None
        assert s.data == {"theme": "dark"} and s.csrf
        assert client.set(issued.cookie, [Set("cart", [1, 2]), Remove("theme")]) is None
        assert client.open(issued.cookie).data == {"cart": [1, 2]}
        assert client.remove(issued.cookie, ["cart"]) is None
        assert client.open(issued.cookie).data == {}

    def test_set_without_cookie_creates_a_session(self, client: cloakroom.Client) -> None:
        cookie = client.set(None, [Set("k", 1)])
        assert cookie is not None
        assert client.open(cookie).data == {"k": 1}

    def test_tampered_cookie_is_invalid(self, client: cloakroom.Client) -> None:
        issued = client.issue()
        c = issued.cookie
        tampered = c[:-2] + ("A" if c[-2] != "A" else "B") + c[-1]
        for bad in (tampered, "garbage", "s1.k1.EXAMPLE", ""):
            with pytest.raises(cloakroom.Invalid):
                client.open(bad)
        with pytest.raises(cloakroom.Invalid):
            client.set(tampered, [Set("x", 1)])

    def test_login_new_id_carries_data_logout_ends(
        self, client: cloakroom.Client, user: str
    ) -> None:
        anon = client.issue(data={"cart": [7]})
        logged = client.login(user, cookie=anon.cookie, device=cloakroom.Device(label="laptop"))
        assert logged.cookie != anon.cookie and logged.id_hash != anon.id_hash
        s = client.open(logged.cookie)
        assert s.user_id == user and s.data == {"cart": [7]}
        with pytest.raises((cloakroom.Expired, cloakroom.NotFound)):
            client.open(anon.cookie)  # the old id is dead
        assert client.logout(logged.cookie) is True
        with pytest.raises((cloakroom.Expired, cloakroom.NotFound)):
            client.open(logged.cookie)
        with pytest.raises((cloakroom.Expired, cloakroom.NotFound)):
            client.set(logged.cookie, [Set("x", 1)])  # never brought back

    def test_flash(self, client: cloakroom.Client) -> None:
        cookie = client.flash(None, "info", "Welcome!")
        assert cookie is not None
        assert client.flash(cookie, "success", "Saved.") is None
        s = client.open(cookie, take_flashes=True)
        assert [(f.level, f.message) for f in s.flashes] == [("info", "Welcome!"), ("success", "Saved.")]
        assert client.open(cookie).flashes == []
        with pytest.raises(ValueError, match="flash level"):
            client.flash(cookie, "shout", "x")

    def test_csrf(self, client: cloakroom.Client) -> None:
        cookie = client.issue().cookie
        t1, t2 = client.csrf_token(cookie), client.csrf_token(cookie)
        assert t1 != t2  # masked afresh every time
        assert client.check_csrf(cookie, t1) and client.check_csrf(cookie, t2)
        assert client.check_csrf(cookie, client.open(cookie).csrf)
        assert client.check_csrf(cookie, "wrong") is False
        other = client.issue().cookie
        assert client.check_csrf(other, t1) is False

    def test_sign_out_others_sessions_of_end_session(
        self, client: cloakroom.Client, user: str
    ) -> None:
        a, b, c = (client.login(user) for _ in range(3))
        assert {s.id_hash for s in client.sessions_of(user)} == {a.id_hash, b.id_hash, c.id_hash}
        assert client.end_session(b.id_hash, user_id="someone-else") is False
        assert client.end_session(b.id_hash, user_id=user) is True
        assert client.sign_out_others(a.cookie) == 1
        assert [s.id_hash for s in client.sessions_of(user)] == [a.id_hash]
        client.open(a.cookie)
        for dead in (b, c):
            with pytest.raises((cloakroom.Expired, cloakroom.NotFound)):
                client.open(dead.cookie)

    def test_revoke_user(self, client: cloakroom.Client, user: str) -> None:
        a, b = client.login(user), client.login(user)
        before = client.user_epoch(user)
        revoked = client.revoke_user(user)
        assert revoked.revoked == 2 and revoked.epoch == before + 1
        for dead in (a, b):
            with pytest.raises((cloakroom.Expired, cloakroom.NotFound)):
                client.open(dead.cookie)
        fresh = client.login(user)
        assert client.open(fresh.cookie).user_id == user
