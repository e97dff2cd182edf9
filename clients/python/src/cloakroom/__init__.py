"""Client of the Cloakroom session daemon ``cloakroomd`` (protocol CRP1, docs/protocol.md).

An application hands the daemon the cookie value a browser sent and gets the session back;
it holds no key. ::

    import cloakroom

    client = cloakroom.Client("tcp://127.0.0.1:7450", timeout=2.0)
    try:
        session = client.open(cookie)            # user_id, data, flashes, csrf
    except (cloakroom.Invalid, cloakroom.Expired, cloakroom.NotFound):
        session = None                           # anonymous
    except cloakroom.Unavailable:
        ...                                      # answer 503: never treat as anonymous

Also: :mod:`cloakroom.aio` (asyncio), :class:`Subscriber` and :class:`SessionCache` (the
revocation feed), :mod:`cloakroom.flask` and :mod:`cloakroom.django`.
"""

from ._client import Client
from ._errors import (
    BadRequest,
    BadVersion,
    CloakroomError,
    Conflict,
    Corrupt,
    Expired,
    Internal,
    Invalid,
    NotFound,
    TooLarge,
    Unavailable,
    UnknownVerb,
    Unsupported,
)
from ._feed import FeedTracker, Revocation, SessionCache, SessionRevoked, Subscriber, UserRevoked
from ._transport import CurveKeys
from ._types import Change, Device, Flash, Issued, Pong, Record, Remove, Revoked, Session, Set, Stats
from ._verbs import Call

__version__ = "0.1.0"

__all__ = [
    "BadRequest",
    "BadVersion",
    "Call",
    "Change",
    "Client",
    "CloakroomError",
    "Conflict",
    "Corrupt",
    "CurveKeys",
    "Device",
    "Expired",
    "FeedTracker",
    "Flash",
    "Internal",
    "Invalid",
    "Issued",
    "NotFound",
    "Pong",
    "Record",
    "Remove",
    "Revocation",
    "Revoked",
    "Session",
    "SessionCache",
    "SessionRevoked",
    "Set",
    "Stats",
    "Subscriber",
    "TooLarge",
    "Unavailable",
    "UnknownVerb",
    "Unsupported",
    "UserRevoked",
]
