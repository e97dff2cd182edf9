"""A Django session engine kept by cloakroomd: ``request.session``, ``django.contrib.auth``'s
``login`` and ``logout`` work unchanged.

settings.py::

    SESSION_ENGINE = "cloakroom.django"
    CLOAKROOM_ENDPOINT = "tcp://127.0.0.1:7450"   # the daemon's request socket
    CLOAKROOM_TIMEOUT = 2.0                       # seconds; optional
    MIDDLEWARE = [
        ...,
        "cloakroom.django.SessionMiddleware",     # instead of Django's: 503 when the daemon
        ...,                                      # does not answer (Django's answers 500)
    ]

The session key is the daemon's cookie value. What the engine does with it:

- ``load``: ``OPEN``; a cookie that does not verify or whose session ended is an empty,
  anonymous session. The daemon's user is ``request.session["_auth_user_id"]``.
- ``save``: only the keys the request changed (``SET``, applied atomically by the daemon),
  never on a 5xx (Django's middleware does not save then). When ``_auth_user_id`` changed,
  a ``LOGIN`` first (a new session id: against fixation). A session that ended meanwhile is
  not brought back (``UpdateError``: Django answers 400 "session interrupted").
- ``create``: ``ISSUE``. ``delete`` (and so ``flush``, ``logout``): ``LOGOUT``.
- ``cycle_key``: a new session id for the same data, at save (``LOGIN`` again for a user,
  ``ISSUE`` with the data and ``LOGOUT`` of the old one for an anonymous session).
- Values must be MessagePack values (None, bool, int, float, str, bytes, lists, dicts with
  string keys), not Django's JSON serializer's.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Tuple

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.contrib.sessions.middleware import SessionMiddleware as _DjangoSessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse

from . import _wire
from ._client import Client
from ._errors import CloakroomError, Expired, Invalid, NotFound
from ._types import Change, Remove, Set

#: Django's key for the logged-in user's id (django.contrib.auth.SESSION_KEY).
USER_KEY = "_auth_user_id"

_clients: Dict[Tuple[str, float], Client] = {}
_clients_lock = threading.Lock()


def get_client() -> Client:
    """The process's client of ``settings.CLOAKROOM_ENDPOINT`` (one per endpoint)."""
    endpoint = getattr(settings, "CLOAKROOM_ENDPOINT", None)
    if not endpoint or not isinstance(endpoint, str):
        raise ImproperlyConfigured(
            "SESSION_ENGINE 'cloakroom.django' needs CLOAKROOM_ENDPOINT in settings "
            "(the daemon's request socket, e.g. 'tcp://127.0.0.1:7450')"
        )
    timeout = float(getattr(settings, "CLOAKROOM_TIMEOUT", 2.0))
    with _clients_lock:
        client = _clients.get((endpoint, timeout))
        if client is None:
            client = _clients[(endpoint, timeout)] = Client(endpoint, timeout=timeout)
        return client


def _snapshot(data: Dict[str, Any]) -> Dict[str, bytes]:
    return {k: _wire.pack({"v": v}) for k, v in data.items() if k != USER_KEY}


class SessionStore(SessionBase):  # type: ignore[misc]
    """Django's ``SessionBase`` over cloakroomd's cookie verbs."""

    def __init__(self, session_key: Optional[str] = None) -> None:
        super().__init__(session_key)
        self.client = get_client()
        self._user_id: Optional[str] = None
        self._original: Dict[str, bytes] = {}
        self._cycle = False

    # --- reading ------------------------------------------------------------------------

    def load(self) -> Dict[str, Any]:
        key = self.session_key
        if key is None:
            return {}
        try:
            s = self.client.open(key)
        except (Invalid, Expired, NotFound):
            self._session_key = None
            self._user_id = None
            self._original = {}
            return {}
        data = dict(s.data)
        data.pop(USER_KEY, None)  # the daemon's user is the only source of truth
        self._original = _snapshot(data)
        self._user_id = s.user_id
        if s.user_id is not None:
            data[USER_KEY] = s.user_id
        if s.cookie is not None:  # reissued (key rotation): send the new value
            self._session_key = s.cookie
            self.modified = True
        return data

    def exists(self, session_key: str) -> bool:
        try:
            self.client.open(session_key)
        except (Invalid, Expired, NotFound):
            return False
        return True

    # --- writing ------------------------------------------------------------------------

    def create(self) -> None:
        issued = self.client.issue()
        self._session_key = issued.cookie
        self._session_cache: Dict[str, Any] = {}
        self._original = {}
        self._user_id = None
        self._cycle = False
        self.modified = True

    def cycle_key(self) -> None:
        self._get_session()  # load before the key changes
        self._cycle = True
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        data: Dict[str, Any] = self._get_session(no_load=must_create)
        target = data.get(USER_KEY)
        target = None if target is None else str(target)
        cookie = self.session_key
        try:
            if self._user_id is not None and target != self._user_id and cookie is not None:
                # Another user, or the user key removed without a flush: end the old session.
                self.client.logout(cookie)
                cookie, self._user_id, self._original = None, None, {}
            if target is not None and (target != self._user_id or self._cycle):
                cookie = self.client.login(target, cookie=cookie).cookie
                self._user_id = target
            elif self._cycle and cookie is not None:
                fresh = {k: v for k, v in data.items() if k != USER_KEY}
                new = self.client.issue(data=fresh).cookie
                self.client.logout(cookie)
                cookie, self._original = new, _snapshot(fresh)
            changes = self._changes(data)
            if cookie is None:
                fresh = {k: v for k, v in data.items() if k != USER_KEY}
                cookie = self.client.issue(data=fresh).cookie
            elif changes:
                created = self.client.set(cookie, changes)
                if created is not None:
                    cookie = created
        except (Invalid, Expired, NotFound) as e:
            raise UpdateError(str(e)) from e
        self._session_key = cookie
        self._original = _snapshot(data)
        self._cycle = False

    def _changes(self, data: Dict[str, Any]) -> List[Change]:
        now = _snapshot(data)
        out: List[Change] = [Set(k, data[k]) for k, p in now.items() if self._original.get(k) != p]
        out.extend(Remove(k) for k in self._original if k not in now)
        return out

    def delete(self, session_key: Optional[str] = None) -> None:
        key = session_key if session_key is not None else self.session_key
        if key is None:
            return
        try:
            self.client.logout(key)
        except (Invalid, Expired, NotFound):
            pass  # already gone
        if key == self.session_key:
            self._user_id = None
            self._original = {}

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: the daemon purges expired sessions itself."""


def _unavailable() -> HttpResponse:
    response = HttpResponse(
        "The session store is unavailable; try again shortly.\n",
        status=503,
        content_type="text/plain",
    )
    response["Retry-After"] = "5"
    response["Cache-Control"] = "no-store"
    return response


class SessionMiddleware(_DjangoSessionMiddleware):  # type: ignore[misc]
    """Django's session middleware, answering 503 (not 500) when the daemon does not answer
    or fails, whether the view read the session or the response saved it."""

    def process_exception(self, request: Any, exception: BaseException) -> Optional[HttpResponse]:
        if isinstance(exception, CloakroomError):
            return _unavailable()
        return None

    def process_response(self, request: Any, response: Any) -> Any:
        try:
            return super().process_response(request, response)
        except CloakroomError:
            return _unavailable()
