"""Errors: one exception class per CRP1 status (docs/protocol.md, "Statuses")."""

from __future__ import annotations

from typing import Dict, Optional, Type


class CloakroomError(Exception):
    """Base of every error this package raises for a request.

    ``status`` is the CRP1 status word (``"UNAVAILABLE"``, ``"INVALID"``, ...), ``verb`` the
    verb of the request that failed, and ``message`` the daemon's one line (for people; branch
    on the class or on ``status``, never on the text).
    """

    status: str = ""

    def __init__(self, message: str, *, verb: Optional[str] = None) -> None:
        self.message = message
        self.verb = verb
        where = f"{verb}: " if verb else ""
        super().__init__(f"{where}{self.status or 'error'}: {message}")


class NotFound(CloakroomError):
    """No live session (or record) for that id hash or cookie."""

    status = "NOT_FOUND"


class Conflict(CloakroomError):
    """``CREATE`` of an existing id; ``UPDATE`` of a version that moved on."""

    status = "CONFLICT"


class Invalid(CloakroomError):
    """The cookie value (or token) does not verify."""

    status = "INVALID"


class Expired(CloakroomError):
    """The cookie verified, but it or its session expired or was revoked."""

    status = "EXPIRED"


class Unavailable(CloakroomError):
    """The daemon, or the store behind it, cannot answer: nothing was done (or, after a
    timeout, it is unknown whether it was). Fail closed: answer HTTP 503, never treat the
    visitor as anonymous.

    Also raised when no reply came within the client's timeout (``timed_out`` is then True)
    and when the client is closed.
    """

    status = "UNAVAILABLE"

    def __init__(
        self, message: str, *, verb: Optional[str] = None, timed_out: bool = False
    ) -> None:
        super().__init__(message, verb=verb)
        self.timed_out = timed_out


class Corrupt(Unavailable):
    """The daemon's store holds a record for that id (or cookie) that does not decode: the
    store is damaged, not empty. A kind of :class:`Unavailable`, so code that answers 503 on
    ``Unavailable`` fails closed here too; catch ``Corrupt`` first to tell it apart (an
    operator should look at the store)."""

    status = "CORRUPT"


class BadRequest(CloakroomError):
    """The frames or body are not what the verb takes (a bug in this client or its caller)."""

    status = "BAD_REQUEST"


class BadVersion(CloakroomError):
    """The daemon does not speak CRP1."""

    status = "BAD_VERSION"


class UnknownVerb(CloakroomError):
    """The daemon does not know the verb (it is older than this client)."""

    status = "UNKNOWN_VERB"


class TooLarge(CloakroomError):
    """A body exceeds a limit (1 MiB, 32 levels of nesting, 65,536 values)."""

    status = "TOO_LARGE"


class Unsupported(CloakroomError):
    """The daemon's store cannot do this verb at all (memcached cannot list its records for
    ``FIND_PREFIX`` or ``STATS``); retrying will not help."""

    status = "UNSUPPORTED"


class Internal(CloakroomError):
    """A bug in the daemon, or a reply this client cannot read (an unknown status word, a
    body that does not decode or lacks a field)."""

    status = "INTERNAL"


STATUS_ERRORS: Dict[str, Type[CloakroomError]] = {
    cls.status: cls
    for cls in (
        NotFound,
        Conflict,
        Invalid,
        Expired,
        Unavailable,
        Corrupt,
        BadRequest,
        BadVersion,
        UnknownVerb,
        TooLarge,
        Unsupported,
        Internal,
    )
}


def error_for(status: str, message: str, verb: Optional[str]) -> CloakroomError:
    """The exception for an error reply; an unknown status is a broken reply (``Internal``)."""
    cls = STATUS_ERRORS.get(status)
    if cls is None:
        return Internal(f"unknown status {status!r} in the reply: {message}", verb=verb)
    return cls(message, verb=verb)
