"""The byte examples of docs/protocol.md, read out of the document: every request this
client builds is byte for byte the document's, and every reply example reads back into the
answer the document describes. No daemon needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

import pytest

import cloakroom
from cloakroom import _verbs as v
from cloakroom import _wire
from cloakroom._feed import FeedTracker, SessionRevoked, UserRevoked
from cloakroom._transport import answer

DOC = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
H = bytes(range(32))
NOW = 1767225600
COOKIE = "s1.k1.EXAMPLE"
RECORD = cloakroom.Record(
    id_hash=H,
    user_id="950",
    user_epoch=2,
    created=NOW,
    last_seen=NOW,
    idle_deadline=1767227400,
    absolute_deadline=1767268800,
    version=1,
    data={"cart": [1, 2]},
    device=cloakroom.Device(user_agent="curl/8"),
)
CHANGES = [cloakroom.Set("theme", "dark"), cloakroom.Remove("cart")]


def examples() -> Dict[str, List[bytes]]:
    text = DOC.read_text()
    out: Dict[str, List[bytes]] = {}
    for m in re.finditer(r"<!-- example (\S+) -->\n```text\n(.*?)```", text, re.S):
        frames: List[bytes] = []
        for line in m.group(2).splitlines():
            fm = re.match(r"frame \d+: (.*)$", line)
            if fm:
                hx = fm.group(1).strip()
                frames.append(b"" if hx == "(empty)" else bytes.fromhex(hx))
            elif line.strip():
                frames[-1] += bytes.fromhex(line.strip())
        out[m.group(1)] = frames
    return out


EX = examples()

REQUESTS = {
    "PING": v.ping(),
    "CREATE": v.create(RECORD),
    "LOAD": v.load(H, NOW),
    "UPDATE": v.update(RECORD, NOW),
    "APPLY": v.apply(H, CHANGES, NOW, 1767227400),
    "TOUCH": v.touch(H, NOW, 1767227400),
    "DELETE": v.delete(H),
    "SESSIONS_OF": v.sessions_of("950", NOW),
    "REVOKE_USER_SESSIONS": v.revoke_user_sessions("950", H),
    "USER_EPOCH": v.user_epoch("950"),
    "BUMP_USER_EPOCH": v.bump_user_epoch("950"),
    "PURGE_EXPIRED": v.purge_expired(NOW, 500),
    "FIND_PREFIX": v.find_prefix("0001", NOW),
    "STATS": v.stats(NOW),
    "OPEN": v.open_(COOKIE, True),
    "ISSUE": v.issue(None, {"theme": "dark"}, cloakroom.Device()),
    "LOGIN": v.login("950", COOKIE, cloakroom.Device(label="Work laptop")),
    "LOGOUT": v.logout(COOKIE),
    "SET": v.set_(COOKIE, CHANGES),
    "REMOVE": v.remove(COOKIE, ["cart"]),
    "FLASH": v.flash(None, "info", "Welcome!"),
    "CSRF": v.csrf_token(COOKIE),
    "CSRF.verify": v.check_csrf(COOKIE, "CSRF-EXAMPLE"),
    "SIGN_OUT_OTHERS": v.sign_out_others(COOKIE),
    "REVOKE_USER": v.revoke_user("950"),
    "END_SESSION": v.end_session(b"\xee" * 32, "950"),
}

ANSWERS = {
    "PING": cloakroom.Pong("CRP1", "0.1.0"),
    "CREATE": None,
    "LOAD": RECORD,
    "UPDATE": 2,
    "APPLY": 3,
    "TOUCH": None,
    "DELETE": True,
    "SESSIONS_OF": [RECORD],
    "REVOKE_USER_SESSIONS": 2,
    "USER_EPOCH": 2,
    "BUMP_USER_EPOCH": 3,
    "PURGE_EXPIRED": 17,
    "FIND_PREFIX": [RECORD],
    "STATS": cloakroom.Stats(live=1200, expired_not_purged=35, bytes=524288),
    "OPEN": cloakroom.Session(
        id_hash=H,
        user_id="950",
        data={"theme": "dark"},
        flashes=[cloakroom.Flash("success", "Saved.")],
        csrf="CSRF-EXAMPLE",
        expires_at=1767227400,
        cookie=None,
    ),
    "ISSUE": cloakroom.Issued(COOKIE, H, 1767227400),
    "LOGIN": cloakroom.Issued(COOKIE, H, 1767227400),
    "LOGOUT": True,
    "SET": None,
    "REMOVE": None,
    "FLASH": COOKIE,
    "CSRF": "CSRF-EXAMPLE",
    "CSRF.verify": True,
    "SIGN_OUT_OTHERS": 1,
    "REVOKE_USER": cloakroom.Revoked(3, 3),
    "END_SESSION": False,
}


def test_the_document_has_every_verb() -> None:
    for name in REQUESTS:
        assert f"{name}.request" in EX, f"docs/protocol.md has no example {name}.request"
        assert f"{name}.reply" in EX, f"docs/protocol.md has no example {name}.reply"


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_request_bytes_match_the_document(name: str) -> None:
    call = REQUESTS[name]
    frames = _wire.request_frames(_wire.request_id(1), call.verb, call.body)
    assert frames == EX[f"{name}.request"]


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_reply_examples_read_back(name: str) -> None:
    parts = _wire.split_reply(EX[f"{name}.reply"])
    assert parts is not None
    rid, status, body = parts
    assert rid == _wire.request_id(1)
    assert answer(REQUESTS[name], status, body) == ANSWERS[name]


def test_bad_version_reply_raises_bad_version() -> None:
    parts = _wire.split_reply(EX["BAD_VERSION.reply"])
    assert parts is not None
    with pytest.raises(cloakroom.BadVersion, match="unsupported protocol version"):
        answer(v.ping(), parts[1], parts[2])


def test_unknown_status_is_internal() -> None:
    with pytest.raises(cloakroom.Internal, match="unknown status 'WHAT'"):
        answer(v.ping(), b"WHAT", _wire.pack({"error": "x"}))


def test_broken_ok_body_is_internal() -> None:
    with pytest.raises(cloakroom.Internal, match="lacks the field 'version'"):
        answer(v.ping(), b"OK", _wire.pack({"protocol": "CRP1"}))
    with pytest.raises(cloakroom.Internal, match="does not decode"):
        answer(v.ping(), b"OK", b"\x81\xa1")
    with pytest.raises(cloakroom.Internal, match="does not decode"):
        answer(v.ping(), b"OK", b"\x80\x80")  # trailing bytes
    with pytest.raises(cloakroom.Internal, match="does not decode"):
        answer(v.ping(), b"OK", b"\x82\xa1a\x01\xa1a\x02")  # duplicate key


def test_stats_bytes_may_be_nil_counts_may_not() -> None:
    nil = _wire.pack({"live": 1, "expired_not_purged": 2, "bytes": None})
    assert answer(v.stats(None), b"OK", nil) == cloakroom.Stats(1, 2, None)
    with pytest.raises(cloakroom.Internal, match="lacks the field 'live'"):
        answer(v.stats(None), b"OK", _wire.pack({"expired_not_purged": 2, "bytes": 1}))
    with pytest.raises(cloakroom.Internal, match="'expired_not_purged' is not a u64"):
        answer(v.stats(None), b"OK", _wire.pack({"live": 1, "expired_not_purged": None}))
    with pytest.raises(cloakroom.Internal, match="'bytes' is not a u64 or nil"):
        answer(v.stats(None), b"OK", _wire.pack({"live": 1, "expired_not_purged": 2, "bytes": -1}))


def test_unsupported_status_is_its_own_error() -> None:
    with pytest.raises(cloakroom.Unsupported, match="memcached"):
        answer(v.stats(None), b"UNSUPPORTED", _wire.pack({"error": "memcached cannot"}))


@pytest.mark.parametrize("prefix", ["", "AB", "xyz", "0" * 65, " 1"])
def test_a_bad_prefix_is_refused_before_sending(prefix: str) -> None:
    with pytest.raises(ValueError, match="1 to 64 lower-case hex digits"):
        v.find_prefix(prefix, None)


def test_feed_examples_decode_and_track() -> None:
    t = FeedTracker()
    step = t.message(EX["feed.session"], 0.0)
    assert step.resync and step.live and step.reason == "first message"
    assert step.revocation == SessionRevoked(41, H, "950", 2)
    step = t.message(EX["feed.user"], 0.1)
    assert not step.resync
    assert step.revocation == UserRevoked(42, "950", 3, None)
    step = t.message(EX["feed.heartbeat"], 0.2)
    assert not step.resync and step.revocation is None
    # The same revocation again is out of sequence: resync.
    step = t.message(EX["feed.user"], 0.3)
    assert step.resync and "lost" in step.reason
    assert not t.silent(3.2)
    assert t.silent(3.4)
