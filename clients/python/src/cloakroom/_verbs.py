"""Every CRP1 verb as a request body and a reader of its ``OK`` answer (docs/protocol.md,
"Verbs"). Shared by the blocking and the asyncio client; no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Generic, Iterable, List, Mapping, Optional, TypeVar

from ._types import (
    LEVELS,
    Change,
    Device,
    Issued,
    Pong,
    Reader,
    Record,
    Revoked,
    Session,
    Stats,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: its verb, its body, and how to read its ``OK`` answer."""

    verb: str
    body: Dict[str, Any]
    read: Callable[[Reader], T]


def _id_hash(v: bytes) -> bytes:
    if not isinstance(v, (bytes, bytearray)) or len(v) != 32:
        raise ValueError("an id hash is 32 bytes (the SHA-256 of a session id)")
    return bytes(v)


def _changes(changes: Iterable[Change]) -> List[Dict[str, Any]]:
    return [c.to_wire() for c in changes]


def _none(_: Reader) -> None:
    return None


def ping() -> Call[Pong]:
    return Call("PING", {}, lambda r: Pong(r.text("protocol"), r.text("version")))


# --- store verbs --------------------------------------------------------------------------


def create(record: Record, now: Optional[int] = None) -> Call[None]:
    body: Dict[str, Any] = {"record": record.to_wire()}
    if now is not None:
        body["now"] = now
    return Call("CREATE", body, _none)


def load(id_hash: bytes, now: int) -> Call[Record]:
    return Call("LOAD", {"id_hash": _id_hash(id_hash), "now": now}, lambda r: r.sub("record").record())


def update(record: Record, now: int) -> Call[int]:
    return Call("UPDATE", {"record": record.to_wire(), "now": now}, lambda r: r.u64("version"))


def apply(id_hash: bytes, changes: Iterable[Change], now: int, idle_deadline: int) -> Call[int]:
    body = {
        "id_hash": _id_hash(id_hash),
        "changes": _changes(changes),
        "now": now,
        "idle_deadline": idle_deadline,
    }
    return Call("APPLY", body, lambda r: r.u64("version"))


def touch(id_hash: bytes, now: int, idle_deadline: int) -> Call[None]:
    body = {"id_hash": _id_hash(id_hash), "now": now, "idle_deadline": idle_deadline}
    return Call("TOUCH", body, _none)


def delete(id_hash: bytes) -> Call[bool]:
    return Call("DELETE", {"id_hash": _id_hash(id_hash)}, lambda r: r.flag("deleted"))


def sessions_of(user_id: str, now: Optional[int]) -> Call[List[Record]]:
    body: Dict[str, Any] = {"user_id": user_id}
    if now is not None:
        body["now"] = now
    return Call("SESSIONS_OF", body, lambda r: r.records("sessions"))


def revoke_user_sessions(user_id: str, except_id_hash: Optional[bytes]) -> Call[int]:
    body: Dict[str, Any] = {"user_id": user_id}
    if except_id_hash is not None:
        body["except"] = _id_hash(except_id_hash)
    return Call("REVOKE_USER_SESSIONS", body, lambda r: r.u64("revoked"))


def user_epoch(user_id: str) -> Call[int]:
    return Call("USER_EPOCH", {"user_id": user_id}, lambda r: r.u64("epoch"))


def bump_user_epoch(user_id: str) -> Call[int]:
    return Call("BUMP_USER_EPOCH", {"user_id": user_id}, lambda r: r.u64("epoch"))


def purge_expired(now: int, limit: int) -> Call[int]:
    return Call("PURGE_EXPIRED", {"now": now, "limit": limit}, lambda r: r.u64("purged"))


# --- operator verbs: both may walk the whole store; not for every request -------------------

_HEX = frozenset("0123456789abcdef")


def find_prefix(prefix: str, now: Optional[int]) -> Call[List[Record]]:
    if not isinstance(prefix, str) or not 1 <= len(prefix) <= 64 or not set(prefix) <= _HEX:
        raise ValueError(f"an id-hash prefix is 1 to 64 lower-case hex digits, not {prefix!r}")
    body: Dict[str, Any] = {"prefix": prefix}
    if now is not None:
        body["now"] = now
    return Call("FIND_PREFIX", body, lambda r: r.records("sessions"))


def stats(now: Optional[int]) -> Call[Stats]:
    body: Dict[str, Any] = {}
    if now is not None:
        body["now"] = now
    return Call("STATS", body, lambda r: r.stats())


# --- cookie verbs -------------------------------------------------------------------------


def open_(cookie: str, take_flashes: bool) -> Call[Session]:
    body: Dict[str, Any] = {"cookie": cookie}
    if take_flashes:
        body["take_flashes"] = True
    return Call("OPEN", body, lambda r: r.session())


def issue(
    user_id: Optional[str], data: Optional[Mapping[str, Any]], device: Optional[Device]
) -> Call[Issued]:
    body: Dict[str, Any] = {}
    if user_id is not None:
        body["user_id"] = user_id
    if data is not None:
        body["data"] = dict(data)
    if device is not None:
        body["device"] = device.to_wire()
    return Call("ISSUE", body, lambda r: r.issued())


def login(user_id: str, cookie: Optional[str], device: Optional[Device]) -> Call[Issued]:
    body: Dict[str, Any] = {}
    if cookie is not None:
        body["cookie"] = cookie
    body["user_id"] = user_id
    if device is not None:
        body["device"] = device.to_wire()
    return Call("LOGIN", body, lambda r: r.issued())


def logout(cookie: str) -> Call[bool]:
    return Call("LOGOUT", {"cookie": cookie}, lambda r: r.flag("ended"))


def set_(cookie: Optional[str], changes: Iterable[Change]) -> Call[Optional[str]]:
    body: Dict[str, Any] = {}
    if cookie is not None:
        body["cookie"] = cookie
    body["changes"] = _changes(changes)
    return Call("SET", body, lambda r: r.opt_text("cookie"))


def remove(cookie: str, keys: Iterable[str]) -> Call[Optional[str]]:
    return Call("REMOVE", {"cookie": cookie, "keys": list(keys)}, lambda r: r.opt_text("cookie"))


def flash(cookie: Optional[str], level: str, message: str) -> Call[Optional[str]]:
    if level not in LEVELS:
        raise ValueError(f"flash level {level!r} is not one of {', '.join(LEVELS)}")
    body: Dict[str, Any] = {}
    if cookie is not None:
        body["cookie"] = cookie
    body["level"] = level
    body["message"] = message
    return Call("FLASH", body, lambda r: r.opt_text("cookie"))


def csrf_token(cookie: str) -> Call[str]:
    return Call("CSRF", {"cookie": cookie}, lambda r: r.text("token"))


def check_csrf(cookie: str, token: str) -> Call[bool]:
    return Call("CSRF", {"cookie": cookie, "verify": token}, lambda r: r.flag("valid"))


def sign_out_others(cookie: str) -> Call[int]:
    return Call("SIGN_OUT_OTHERS", {"cookie": cookie}, lambda r: r.u64("revoked"))


def revoke_user(user_id: str) -> Call[Revoked]:
    return Call(
        "REVOKE_USER", {"user_id": user_id}, lambda r: Revoked(r.u64("revoked"), r.u64("epoch"))
    )


def end_session(id_hash: bytes, user_id: Optional[str]) -> Call[bool]:
    body: Dict[str, Any] = {"id_hash": _id_hash(id_hash)}
    if user_id is not None:
        body["user_id"] = user_id
    return Call("END_SESSION", body, lambda r: r.flag("ended"))
