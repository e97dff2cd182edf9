"""Flask sessions kept by cloakroomd: ``flask.session`` works unchanged.

::

    import cloakroom
    from cloakroom.flask import CloakroomSessionInterface, login_user, logout_user

    app = Flask(__name__)
    app.session_interface = CloakroomSessionInterface(cloakroom.Client("tcp://127.0.0.1:7450"))

- Each response writes only the keys its request changed (one ``SET``, applied atomically by
  the daemon: two concurrent requests that change different keys both keep their writes),
  and nothing at all when the response is a 5xx.
- :func:`login_user` gives the session a new id (``LOGIN``: against fixation) and
  :func:`logout_user` ends it (``LOGOUT``); :func:`sign_out_others` ends the user's other
  sessions; :func:`csrf_token` and :func:`check_csrf` use the session's CSRF secret.
- A cookie that does not verify, or whose session ended, is an anonymous visitor (and the
  cookie is removed). When the request carries several cookies of the name (one planted by
  a sibling subdomain), each is tried in order and the first live session wins, as the Rust
  layer does.
- The cookie name must be the one the daemon mints for (its ``--cookie-name``, which is the
  tokens' purpose) and, to share logins with a Rust service, the Rust layer's. A
  ``__Host-`` name needs ``SESSION_COOKIE_SECURE = True``, path ``/`` and no domain, and a
  ``__Secure-`` name needs ``Secure``: anything else is refused with an error rather than
  set as a cookie browsers silently drop. A daemon that does not answer makes every request that touches the
  session answer 503, never an anonymous page.
- Values must be MessagePack values: None, bool, int, float, str, bytes, lists (tuples
  come back as lists) and dicts with string keys.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, NoReturn, Optional, Tuple

from flask import Flask, Request, Response, current_app, request
from flask import session as _session
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.exceptions import Forbidden, ServiceUnavailable

from . import _wire
from ._client import Client
from ._errors import CloakroomError, Expired, Invalid, NotFound, Unavailable
from ._types import Change, Device, Flash, Remove, Set

log = logging.getLogger("cloakroom.flask")

#: Form field and header that :func:`check_csrf` reads the token from.
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
RETRY_AFTER = 5
#: At most this many cookies of the session's name are tried per request (as the Rust
#: layer's ``MAX_COOKIE_CANDIDATES``): each one that verifies costs the daemon a store read.
MAX_COOKIE_CANDIDATES = 8


def _snapshot(data: Dict[str, Any]) -> Dict[str, bytes]:
    return {k: _wire.pack({"v": v}) for k, v in dict.items(data)}


class CloakroomSession(Dict[str, Any], SessionMixin):
    """``flask.session``: a dict of the session's data, with the daemon's view beside it.

    ``user_id`` is the logged-in user (or None); ``flashes`` the daemon's pending flash
    messages (those queued with ``FLASH``, for example by a Rust service); ``cookie`` the
    cookie value of this session (None for a visitor without a session).
    """

    def __init__(
        self,
        data: Optional[Dict[str, Any]] = None,
        *,
        cookie: Optional[str] = None,
        user_id: Optional[str] = None,
        id_hash: Optional[bytes] = None,
        csrf: Optional[str] = None,
        flashes: Optional[List[Flash]] = None,
        expires_at: Optional[int] = None,
        sent: Optional[str] = None,
        stale_cookie: bool = False,
    ) -> None:
        super().__init__(data or {})
        self.cookie = cookie
        self.user_id = user_id
        self.id_hash = id_hash
        self.csrf = csrf
        self.flashes = flashes or []
        self.expires_at = expires_at
        self.new = cookie is None
        self.modified = False
        self.accessed = False
        self._original = _snapshot(self)
        self._sent = sent if sent is not None else cookie
        self._stale_cookie = stale_cookie
        self._login: Optional[Tuple[str, Optional[Device]]] = None
        self._logout = False

    def changes(self) -> List[Change]:
        """The per-key changes this request made (what a save would send)."""
        out: List[Change] = []
        now = _snapshot(self)
        for k, packed in now.items():
            if self._original.get(k) != packed:
                out.append(Set(k, self[k]))
        out.extend(Remove(k) for k in self._original if k not in now)
        return out


class UnavailableSession(CloakroomSession):
    """The session of a request the daemon did not answer for: touching it answers 503."""

    def __init__(self, error: CloakroomError) -> None:
        super().__init__()
        self.error = error

    def _fail(self, *_: Any, **__: Any) -> NoReturn:
        raise ServiceUnavailable(
            "The session store is unavailable; try again shortly.", retry_after=RETRY_AFTER
        )

    __getitem__ = __setitem__ = __delitem__ = __contains__ = __iter__ = __len__ = _fail
    get = setdefault = pop = popitem = update = clear = keys = values = items = _fail
    copy = changes = _fail

    def __bool__(self) -> bool:
        self._fail()


class CloakroomSessionInterface(SessionInterface):
    """Set as ``app.session_interface``. ``cookie_name`` defaults to Flask's
    ``SESSION_COOKIE_NAME``. To share sessions with another application (a Rust service
    with ``cloakroom-tower``, say), three names must agree: this one, the other
    application's cookie name, and the daemon's ``--cookie-name`` (the name its tokens are
    minted for; a token minted for one name never opens under another)."""

    def __init__(self, client: Client, *, cookie_name: Optional[str] = None) -> None:
        self.client = client
        self.cookie_name = cookie_name

    def get_cookie_name(self, app: Flask) -> str:
        return self.cookie_name or super().get_cookie_name(app)

    def check_cookie_prefix(self, app: Flask) -> None:
        """Raises ``RuntimeError`` when the cookie name's prefix asks for attributes the
        configuration does not give: browsers drop a ``__Host-`` cookie that lacks
        ``Secure`` or ``Path=/`` or has a ``Domain``, and a ``__Secure-`` one without
        ``Secure``, so every visitor would silently stay anonymous."""
        name = self.get_cookie_name(app)
        host = name.startswith("__Host-")
        if not (host or name.startswith("__Secure-")):
            return
        problems = []
        if not self.get_cookie_secure(app):
            problems.append("SESSION_COOKIE_SECURE = True (served over https)")
        if host and self.get_cookie_path(app) != "/":
            problems.append('SESSION_COOKIE_PATH = "/"')
        if host and self.get_cookie_domain(app):
            problems.append("no SESSION_COOKIE_DOMAIN")
        if problems:
            raise RuntimeError(
                f"session cookie {name!r} needs {', '.join(problems)}: browsers refuse a "
                f"{name.split('-')[0]}- cookie without it. Over plain http (development), use a "
                "name without the prefix, e.g. cookie_name='cloakroom-session', and start "
                "cloakroomd with the same --cookie-name"
            )

    def open_session(self, app: Flask, request: Request) -> CloakroomSession:
        self.check_cookie_prefix(app)
        # Every value of the name, in the order sent, as the Rust layer reads them.
        cookies = [c for c in request.cookies.getlist(self.get_cookie_name(app)) if c]
        if not cookies:
            return CloakroomSession()
        for cookie in cookies[:MAX_COOKIE_CANDIDATES]:
            try:
                s = self.client.open(cookie)
                break
            except (Invalid, Expired, NotFound):
                continue  # try the next; if none opens, anonymous and the cookie is removed
            except CloakroomError as e:
                log.warning("session unavailable: %s", e)
                return UnavailableSession(e)
        else:
            return CloakroomSession(stale_cookie=True)
        return CloakroomSession(
            s.data,
            cookie=s.cookie or cookie,  # a reissued cookie (key rotation) replaces it
            sent=cookie,
            user_id=s.user_id,
            id_hash=s.id_hash,
            csrf=s.csrf,
            flashes=s.flashes,
            expires_at=s.expires_at,
        )

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, CloakroomSession) or isinstance(session, UnavailableSession):
            return
        if session.accessed:
            response.vary.add("Cookie")
        if response.status_code >= 500:
            return  # a failed request writes nothing
        try:
            self._commit(app, session, response)
        except Unavailable as e:
            log.warning("session not saved: %s", e)
            _unavailable(response)
        except CloakroomError as e:
            log.error("session not saved: %s", e)
            _unavailable(response)

    def _commit(self, app: Flask, session: CloakroomSession, response: Response) -> None:
        cookie = session.cookie
        sent = session._sent
        original = session._original
        if session._logout:
            if session.cookie is not None:
                try:
                    self.client.logout(session.cookie)
                except (Invalid, Expired, NotFound):
                    pass  # already ended
            cookie = None
            original = {}
        if session._login is not None:
            user_id, device = session._login
            try:
                issued = self.client.login(user_id, cookie=cookie, device=device)
            except (Invalid, Expired, NotFound):
                # The visitor's session ended meanwhile: log in afresh, without its data.
                session._original = original = {}
                issued = self.client.login(user_id, device=device)
            cookie = issued.cookie
        session._original = original
        changes = session.changes()
        if changes:
            try:
                created = self.client.set(cookie, changes)
            except (Expired, NotFound, Invalid):
                # The session ended meanwhile (a logout in another tab): never bring it back.
                created, cookie = None, None
            if created is not None:
                cookie = created
        if cookie is None:
            if sent is not None or session._stale_cookie:
                self._delete_cookie(app, response)
        elif cookie != sent:
            self._set_cookie(app, session, response, cookie)

    def _set_cookie(
        self, app: Flask, session: CloakroomSession, response: Response, value: str
    ) -> None:
        expires = self.get_expiration_time(app, session)
        response.set_cookie(
            self.get_cookie_name(app),
            value,
            expires=expires,
            httponly=self.get_cookie_httponly(app),
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app),
        )
        response.headers.add("Cache-Control", "private")

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> Optional[datetime]:
        """A permanent session's cookie lasts as long as Flask's
        ``PERMANENT_SESSION_LIFETIME``; otherwise it is a browser-session cookie. Either
        way the daemon's idle and absolute deadlines end the session itself."""
        if session.permanent:
            return datetime.now(timezone.utc) + app.permanent_session_lifetime
        return None

    def _delete_cookie(self, app: Flask, response: Response) -> None:
        response.delete_cookie(
            self.get_cookie_name(app),
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            httponly=self.get_cookie_httponly(app),
            samesite=self.get_cookie_samesite(app),
        )


def _unavailable(response: Response) -> None:
    response.status_code = 503
    response.set_data("The session store is unavailable; try again shortly.\n")
    response.mimetype = "text/plain"
    response.headers["Retry-After"] = str(RETRY_AFTER)
    response.headers["Cache-Control"] = "no-store"
    response.headers.pop("Set-Cookie", None)


# --- helpers for views --------------------------------------------------------------------


def _current() -> CloakroomSession:
    s = _session._get_current_object()  # type: ignore[attr-defined]
    if isinstance(s, UnavailableSession):
        s._fail()
    if not isinstance(s, CloakroomSession):
        raise RuntimeError("app.session_interface is not a CloakroomSessionInterface")
    return s


def _client() -> Client:
    iface = current_app.session_interface
    if not isinstance(iface, CloakroomSessionInterface):
        raise RuntimeError("app.session_interface is not a CloakroomSessionInterface")
    return iface.client


def current_user_id() -> Optional[str]:
    """The logged-in user of this request, or None."""
    return _current().user_id


def login_user(user_id: str, *, device: Optional[Device] = None) -> None:
    """Logs ``user_id`` in when the response is saved: a new session id (the old one dies),
    the data so far carried over. ``current_user_id()`` says ``user_id`` at once."""
    s = _current()
    s._login = (str(user_id), device)
    s.user_id = str(user_id)
    s.modified = True


def logout_user() -> None:
    """Ends the session when the response is saved and empties it now; keys set after this
    call go into a new anonymous session."""
    s = _current()
    s._logout = True
    s._login = None
    s.user_id = None
    s.clear()
    s.modified = True


def sign_out_others() -> int:
    """Ends every other session of the logged-in user now; how many ended (0 when nobody
    is logged in). Raises 503 when the daemon does not answer."""
    s = _current()
    if s.user_id is None or s.cookie is None or s._login is not None:
        return 0
    try:
        return _client().sign_out_others(s.cookie)
    except (Invalid, Expired, NotFound):
        return 0
    except CloakroomError as e:
        raise ServiceUnavailable(str(e), retry_after=RETRY_AFTER) from e


def csrf_token() -> str:
    """A CSRF token for the page being rendered (from ``OPEN``). A visitor without a
    session gets one (the protocol's tokens belong to a stored session)."""
    s = _current()
    if s.csrf is not None:
        return s.csrf
    try:
        if s.cookie is None:
            issued = _client().issue()
            s.cookie = issued.cookie
            s._original = {}
            s.modified = True
        s.csrf = _client().csrf_token(s.cookie)
    except CloakroomError as e:
        raise ServiceUnavailable(str(e), retry_after=RETRY_AFTER) from e
    return s.csrf


def check_csrf(token: Optional[str] = None) -> bool:
    """Whether ``token`` (default: the request's ``csrf_token`` form field or
    ``X-CSRF-Token`` header) matches the session's CSRF secret."""
    s = _current()
    if token is None:
        token = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if not token or s.cookie is None:
        return False
    try:
        return _client().check_csrf(s.cookie, token)
    except (Invalid, Expired, NotFound):
        return False
    except CloakroomError as e:
        raise ServiceUnavailable(str(e), retry_after=RETRY_AFTER) from e


def require_csrf() -> None:
    """Aborts with 403 unless :func:`check_csrf` passes (call it in unsafe-method views)."""
    if not check_csrf():
        raise Forbidden("missing or wrong CSRF token")


def take_flashes() -> List[Flash]:
    """The daemon's pending flash messages (queued with ``FLASH``, by this app or another),
    removed from the session: show them on this page. No round trip when there are none."""
    s = _current()
    if not s.flashes or s.cookie is None:
        return []
    try:
        taken = _client().open(s.cookie, take_flashes=True).flashes
    except (Invalid, Expired, NotFound):
        taken = []
    except CloakroomError as e:
        raise ServiceUnavailable(str(e), retry_after=RETRY_AFTER) from e
    s.flashes = []
    return taken


def flash(message: str, level: str = "info") -> None:
    """Queues a flash message in the daemon (``FLASH``), where any application sharing the
    session sees it. (Flask's own ``flask.flash`` keeps working too, in the session data.)"""
    s = _current()
    try:
        created = _client().flash(s.cookie, level, message)
    except (Invalid, Expired, NotFound):
        created = _client().flash(None, level, message)
    except CloakroomError as e:
        raise ServiceUnavailable(str(e), retry_after=RETRY_AFTER) from e
    if created is not None:
        s.cookie = created
        s._original = {}
        s.modified = True
