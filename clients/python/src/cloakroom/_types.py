"""The shapes of docs/protocol.md ("Shared shapes" and the verbs' answers) as Python values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

from ._errors import Internal

LEVELS = ("debug", "info", "success", "warning", "error")


@dataclass(frozen=True)
class Device:
    """Device metadata kept with a session for a "your sessions" page; never interpreted."""

    user_agent: Optional[str] = None
    label: Optional[str] = None
    ip: Optional[str] = None

    def to_wire(self) -> Dict[str, Any]:
        return {"user_agent": self.user_agent, "label": self.label, "ip": self.ip}


@dataclass
class Record:
    """A stored session, as the store verbs (``CREATE``, ``LOAD``, ...) carry it."""

    id_hash: bytes
    user_id: Optional[str]
    user_epoch: int
    created: int
    last_seen: int
    idle_deadline: int
    absolute_deadline: int
    version: int
    data: Dict[str, Any] = field(default_factory=dict)
    device: Device = field(default_factory=Device)

    def to_wire(self) -> Dict[str, Any]:
        return {
            "id_hash": self.id_hash,
            "user_id": self.user_id,
            "user_epoch": self.user_epoch,
            "created": self.created,
            "last_seen": self.last_seen,
            "idle_deadline": self.idle_deadline,
            "absolute_deadline": self.absolute_deadline,
            "version": self.version,
            "data": self.data,
            "device": self.device.to_wire(),
        }


@dataclass(frozen=True)
class Flash:
    """A flash message; ``level`` is one of debug, info, success, warning, error."""

    level: str
    message: str


@dataclass
class Session:
    """The answer to ``OPEN``: a cookie's live session with the policy applied.

    ``csrf`` is a freshly masked CSRF token for the page being rendered. ``cookie``, when not
    None, is a reissued cookie value the application must send back.
    """

    id_hash: bytes
    user_id: Optional[str]
    data: Dict[str, Any]
    flashes: List[Flash]
    csrf: str
    expires_at: int
    cookie: Optional[str]


@dataclass(frozen=True)
class Issued:
    """A new cookie (``ISSUE``, ``LOGIN``): send ``cookie`` to the browser."""

    cookie: str
    id_hash: bytes
    expires_at: int


@dataclass(frozen=True)
class Pong:
    """The answer to ``PING``: the protocol (``"CRP1"``) and the daemon's own version."""

    protocol: str
    version: str


@dataclass(frozen=True)
class Stats:
    """The answer to ``STATS``: live sessions, expired ones not yet purged, and the bytes
    the store uses (``None`` when the store cannot tell)."""

    live: int
    expired_not_purged: int
    bytes: Optional[int]


@dataclass(frozen=True)
class Revoked:
    """The answer to ``REVOKE_USER``: sessions ended and the user's new epoch."""

    revoked: int
    epoch: int


@dataclass(frozen=True)
class Set:
    """A change that sets ``key`` to ``value`` (None is a value)."""

    key: str
    value: Any

    def to_wire(self) -> Dict[str, Any]:
        return {"key": self.key, "set": self.value}


@dataclass(frozen=True)
class Remove:
    """A change that removes ``key``."""

    key: str

    def to_wire(self) -> Dict[str, Any]:
        return {"key": self.key, "remove": True}


Change = Union[Set, Remove]


# --- reading answers: a missing or mistyped field is a broken reply (Internal) -------------


class Reader:
    """Typed access to one reply body; every failure names the verb and the field."""

    def __init__(self, verb: str, body: Mapping[str, Any]) -> None:
        self.verb = verb
        self.body = body

    def _bad(self, key: str, want: str) -> Internal:
        return Internal(f"reply field {key!r} is not {want}", verb=self.verb)

    def _get(self, key: str) -> Any:
        if key not in self.body:
            raise Internal(f"reply lacks the field {key!r}", verb=self.verb)
        return self.body[key]

    def u64(self, key: str) -> int:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self._bad(key, "a u64")
        return v

    def opt_u64(self, key: str) -> Optional[int]:
        v = self.body.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self._bad(key, "a u64 or nil")
        return v

    def text(self, key: str) -> str:
        v = self._get(key)
        if not isinstance(v, str):
            raise self._bad(key, "a string")
        return v

    def opt_text(self, key: str) -> Optional[str]:
        v = self.body.get(key)
        if v is not None and not isinstance(v, str):
            raise self._bad(key, "a string or nil")
        return v

    def flag(self, key: str) -> bool:
        v = self._get(key)
        if not isinstance(v, bool):
            raise self._bad(key, "a boolean")
        return v

    def bin32(self, key: str) -> bytes:
        v = self._get(key)
        if not isinstance(v, bytes) or len(v) != 32:
            raise self._bad(key, "bin of 32 bytes")
        return v

    def mapping(self, key: str) -> Dict[str, Any]:
        v = self._get(key)
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise self._bad(key, "a map with string keys")
        return v

    def array(self, key: str) -> List[Any]:
        v = self._get(key)
        if not isinstance(v, list):
            raise self._bad(key, "an array")
        return v

    def sub(self, key: str) -> "Reader":
        return Reader(self.verb, self.mapping(key))

    def device(self, key: str) -> Device:
        if self.body.get(key) is None:
            return Device()
        d = self.sub(key)
        return Device(d.opt_text("user_agent"), d.opt_text("label"), d.opt_text("ip"))

    def record(self) -> Record:
        return Record(
            id_hash=self.bin32("id_hash"),
            user_id=self.opt_text("user_id"),
            user_epoch=self.u64("user_epoch"),
            created=self.u64("created"),
            last_seen=self.u64("last_seen"),
            idle_deadline=self.u64("idle_deadline"),
            absolute_deadline=self.u64("absolute_deadline"),
            version=self.u64("version"),
            data=self.mapping("data"),
            device=self.device("device"),
        )

    def _maps(self, key: str, want: str) -> Iterator["Reader"]:
        """A reader of each map in the array ``key``, in turn; ``want`` names the array in
        the error an item that is not a map raises."""
        for item in self.array(key):
            if not isinstance(item, dict):
                raise self._bad(key, want)
            yield Reader(self.verb, item)

    def records(self, key: str) -> List[Record]:
        return [r.record() for r in self._maps(key, "an array of records")]

    def flashes(self, key: str) -> List[Flash]:
        return [
            Flash(f.text("level"), f.text("message"))
            for f in self._maps(key, "an array of flash maps")
        ]

    def stats(self) -> Stats:
        return Stats(self.u64("live"), self.u64("expired_not_purged"), self.opt_u64("bytes"))

    def issued(self) -> Issued:
        return Issued(self.text("cookie"), self.bin32("id_hash"), self.u64("expires_at"))

    def session(self) -> Session:
        return Session(
            id_hash=self.bin32("id_hash"),
            user_id=self.opt_text("user_id"),
            data=self.mapping("data"),
            flashes=self.flashes("flashes"),
            csrf=self.text("csrf"),
            expires_at=self.u64("expires_at"),
            cookie=self.opt_text("cookie"),
        )
