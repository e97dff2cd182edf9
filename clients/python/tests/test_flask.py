"""The Flask session interface, driven by Flask's test client, on the example app
(examples/flask_app.py) against a real cloakroomd."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pytest
from flask import Flask, abort, session
from flask.testing import FlaskClient

import cloakroom
from cloakroom.flask import current_user_id, login_user

from conftest import Daemon

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from flask_app import create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("cookie_verbs")
COOKIE = "session"


def make_app(client: cloakroom.Client) -> Flask:
    app = create_app(client)
    app.config["TESTING"] = True
    gate = threading.Event()
    app.config["gate"] = gate

    @app.get("/data")
    def data() -> dict:
        return {"data": dict(session), "user": current_user_id()}

    @app.get("/put/<key>/<value>")
    def put(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @app.get("/slow-put/<key>/<value>")
    def slow_put(key: str, value: str) -> str:
        _ = session.get("anything")  # the session is opened before the other request
        session[key] = value
        assert gate.wait(10)
        return "ok"

    @app.get("/put-then-fail/<key>")
    def put_then_fail(key: str) -> str:
        session[key] = "must not be stored"
        raise RuntimeError("boom")

    @app.get("/put-then-503/<key>")
    def put_then_503(key: str) -> str:
        session[key] = "must not be stored"
        abort(503)

    @app.get("/login-as/<user>")
    def login_as(user: str) -> str:
        session["before-login"] = True
        login_user(user)
        return "ok"

    return app


@pytest.fixture
def app(client: cloakroom.Client) -> Flask:
    return make_app(client)


def cookie_of(web: FlaskClient) -> str | None:
    c = web.get_cookie(COOKIE)
    return None if c is None else c.value


def csrf(web: FlaskClient) -> str:
    m = re.search(r'name=csrf_token value="([^"]+)"', web.get("/").get_data(as_text=True))
    assert m, "the page has no CSRF token"
    return m.group(1)


def login(web: FlaskClient, user: str) -> None:
    r = web.post("/login", data={"user": user, "csrf_token": csrf(web)})
    assert r.status_code == 302, r.get_data(as_text=True)


def test_anonymous_visitor_login_writes_logout(app: Flask, client: cloakroom.Client, user: str) -> None:
    web = app.test_client()
    assert web.get("/data").json == {"data": {}, "user": None}
    assert cookie_of(web) is None  # reading an empty session stores nothing
    assert "Visit number 1" in web.get("/").get_data(as_text=True)
    anon_cookie = cookie_of(web)
    assert anon_cookie is not None
    login(web, user)
    logged_cookie = cookie_of(web)
    assert logged_cookie and logged_cookie != anon_cookie  # a new id at login
    with pytest.raises((cloakroom.Expired, cloakroom.NotFound)):
        client.open(anon_cookie)
    body = web.get("/").get_data(as_text=True)
    assert f"Signed in as <b>{user}</b>" in body and "Welcome," in body
    assert "Visit number 3" in body  # the anonymous visits carried over
    web.get("/put/colour/blue")
    assert web.get("/data").json["data"]["colour"] == "blue"
    assert client.open(logged_cookie).user_id == user
    r = web.post("/logout", data={"csrf_token": csrf(web)})
    assert r.status_code == 302
    with pytest.raises((cloakroom.Expired, cloakroom.NotFound)):
        client.open(logged_cookie)
    assert web.get("/data").json["user"] is None


def test_login_in_the_same_request_as_writes(app: Flask, client: cloakroom.Client, user: str) -> None:
    web = app.test_client()
    assert web.get(f"/login-as/{user}").status_code == 200
    s = client.open(cookie_of(web) or "")
    assert s.user_id == user and s.data == {"before-login": True}


def test_csrf_is_required_for_posts(app: Flask, user: str) -> None:
    web = app.test_client()
    web.get("/")
    assert web.post("/login", data={"user": user}).status_code == 403
    assert web.post("/login", data={"user": user, "csrf_token": "forged"}).status_code == 403
    assert web.get("/data").json["user"] is None


def test_only_changed_keys_are_written_concurrent_requests_keep_both(app: Flask) -> None:
    web = app.test_client()
    web.get("/put/a/0")
    web.get("/put/b/0")
    cookie = cookie_of(web)
    slow = app.test_client()
    slow.set_cookie(COOKIE, cookie or "")
    t = threading.Thread(target=lambda: slow.get("/slow-put/a/1"))
    t.start()
    try:
        # Meanwhile another request of the same session changes another key.
        assert web.get("/put/b/2").status_code == 200
    finally:
        app.config["gate"].set()
        t.join()
    assert web.get("/data").json["data"] == {"a": "1", "b": "2"}


def test_a_5xx_writes_nothing(app: Flask) -> None:
    app.config["TESTING"] = False  # let the exception become a 500 response
    web = app.test_client()
    web.get("/put/keep/1")
    assert web.get("/put-then-fail/x").status_code == 500
    assert web.get("/put-then-503/y").status_code == 503
    assert web.get("/data").json["data"] == {"keep": "1"}


def test_tampered_cookie_is_anonymous_and_removed(app: Flask, user: str) -> None:
    web = app.test_client()
    login(web, user)
    good = cookie_of(web) or ""
    for bad in (good[:-3] + "AAA", "garbage", good + "x"):
        web.set_cookie(COOKIE, bad)
        r = web.get("/data")
        assert r.status_code == 200 and r.json == {"data": {}, "user": None}
        assert cookie_of(web) is None  # removed
    web.set_cookie(COOKIE, good)
    assert web.get("/data").json["user"] == user


def test_sign_out_others(app: Flask, user: str) -> None:
    laptop, phone = app.test_client(), app.test_client()
    login(laptop, user)
    login(phone, user)
    r = laptop.post("/sign-out-others", data={"csrf_token": csrf(laptop)})
    assert r.status_code == 302
    assert "Signed out 1 other session(s)." in laptop.get("/").get_data(as_text=True)
    assert laptop.get("/data").json["user"] == user
    assert phone.get("/data").json["user"] is None


def test_daemon_stopped_answers_503_not_anonymous(own_daemon: Daemon, user: str) -> None:
    with cloakroom.Client(own_daemon.endpoint, timeout=0.5) as c:
        app = make_app(c)
        web = app.test_client()
        login(web, user)
        own_daemon.stop()
        r = web.get("/data")
        assert r.status_code == 503, r.get_data(as_text=True)
        assert r.headers.get("Retry-After")
        fresh = app.test_client()  # an anonymous visitor whose write cannot be saved
        r = fresh.get("/put/a/1")
        assert r.status_code == 503 and "Set-Cookie" not in r.headers
        own_daemon.start()
        for _ in range(100):
            r = web.get("/data")
            if r.status_code == 200:
                break
        assert r.status_code == 200 and r.json["user"] == user  # recovered, still signed in


def test_daemon_flashes_show_once(app: Flask, client: cloakroom.Client, user: str) -> None:
    web = app.test_client()
    login(web, user)
    # Another application (a Rust service, say) queues a flash message in the daemon.
    assert client.flash(cookie_of(web), "success", "Queued elsewhere.") is None
    assert "Queued elsewhere." in web.get("/").get_data(as_text=True)
    assert "Queued elsewhere." not in web.get("/").get_data(as_text=True)


def test_revoke_user_ends_the_flask_session(app: Flask, client: cloakroom.Client, user: str) -> None:
    web = app.test_client()
    login(web, user)
    assert web.get("/data").json["user"] == user
    client.revoke_user(user)  # a password change, from any language
    assert web.get("/data").json["user"] is None


def test_a_host_prefixed_cookie_needs_secure(client: cloakroom.Client) -> None:
    """A `__Host-` cookie without Secure is dropped by browsers: refused with an error naming
    the fix, never set."""
    app = create_app(client, cookie_name="__Host-session")
    app.config["TESTING"] = True
    with pytest.raises(RuntimeError, match="SESSION_COOKIE_SECURE = True"):
        app.test_client().get("/")
    app.config["SESSION_COOKIE_SECURE"] = True
    resp = app.test_client().get("/", base_url="https://localhost")
    assert resp.status_code == 200
    line = resp.headers["Set-Cookie"]
    assert line.startswith("__Host-session=") and "Secure" in line and "Path=/" in line, line
