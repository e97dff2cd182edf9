"""The Django session engine, driven by Django's test client on the example project
(examples/django_project) against a real cloakroomd."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

import cloakroom

from conftest import Daemon

PROJECT = Path(__file__).resolve().parents[1] / "examples" / "django_project"
pytestmark = pytest.mark.usefixtures("cookie_verbs")


@pytest.fixture(scope="module")
def django_project(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    os.environ["CLOAKROOM_ENDPOINT"] = daemon.endpoint
    os.environ["DJANGO_DB"] = str(tmp_path_factory.mktemp("django") / "db.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    sys.path.insert(0, str(PROJECT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.test.utils import setup_test_environment

    setup_test_environment()
    yield django


@pytest.fixture
def alice(django_project: Any, user: str) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user(username=user, password="correct horse")


def web() -> Any:
    from django.test import Client

    return Client()


def session_cookie(c: Any) -> str | None:
    m = c.cookies.get("sessionid")
    return m.value if m is not None and m.value else None


def test_login_writes_logout(alice: Any, client: cloakroom.Client) -> None:
    c = web()
    assert "Visit number 1" in c.get("/").content.decode()
    anon = session_cookie(c)
    assert anon is not None
    r = c.post("/login/", {"username": alice.username, "password": "correct horse"})
    assert r.status_code == 302
    logged = session_cookie(c)
    assert logged and logged != anon  # auth.login cycled the key: a new session id
    with pytest.raises((cloakroom.Expired, cloakroom.NotFound)):
        client.open(anon)
    s = client.open(logged)
    assert s.user_id == str(alice.pk)  # the daemon's user is Django's user
    assert "_auth_user_id" not in s.data and s.data["_auth_user_backend"]
    body = c.get("/").content.decode()
    assert f"Signed in as <b>{alice.username}</b>" in body and "Welcome," in body
    assert "Visit number 2" in body  # the anonymous visit carried over
    assert c.post("/logout/").status_code == 302
    with pytest.raises((cloakroom.Expired, cloakroom.NotFound)):
        client.open(logged)
    assert "Not signed in" in c.get("/").content.decode()


def test_wrong_password_stays_anonymous(alice: Any) -> None:
    c = web()
    c.post("/login/", {"username": alice.username, "password": "wrong"})
    assert "Wrong user name or password." in c.get("/").content.decode()


def test_session_base_api(django_project: Any) -> None:
    from cloakroom.django import SessionStore

    s = SessionStore()
    s["a"] = 1
    s.save()
    key = s.session_key
    assert key and s.exists(key)
    assert SessionStore(key).load() == {"a": 1}
    s.cycle_key()
    s["b"] = 2
    s.save()
    new = s.session_key
    assert new != key and not s.exists(key)
    assert SessionStore(new).load() == {"a": 1, "b": 2}
    s.delete()
    assert not s.exists(new)
    fresh = SessionStore()
    fresh.create()
    assert fresh.session_key and fresh.exists(fresh.session_key)
    assert SessionStore("not a cookie").load() == {}


def test_cycle_key_of_a_logged_in_session(alice: Any, client: cloakroom.Client) -> None:
    from cloakroom.django import SessionStore

    c = web()
    c.force_login(alice)
    key = session_cookie(c)
    s = SessionStore(key)
    s["x"] = "y"
    s.cycle_key()
    s.save()
    assert s.session_key != key
    opened = client.open(s.session_key)
    assert opened.user_id == str(alice.pk) and opened.data["x"] == "y"


def test_concurrent_requests_keep_both_writes(django_project: Any) -> None:
    from cloakroom.django import SessionStore

    s = SessionStore()
    s.update({"a": 0, "b": 0})
    s.save()
    key = s.session_key
    one, two = SessionStore(key), SessionStore(key)
    assert one.get("a") == 0 and two.get("b") == 0  # both requests load the session
    one["a"] = 1  # both requests read the session before either saved
    two["b"] = 2
    one.save()
    two.save()
    assert SessionStore(key).load() == {"a": 1, "b": 2}


def test_session_ended_meanwhile_is_not_brought_back(django_project: Any) -> None:
    from django.contrib.sessions.backends.base import UpdateError

    from cloakroom.django import SessionStore

    s = SessionStore()
    s["a"] = 1
    s.save()
    slow = SessionStore(s.session_key)
    assert slow.get("a") == 1  # loaded before the logout
    s.flush()  # a logout in another tab
    slow["b"] = 2
    with pytest.raises(UpdateError):
        slow.save()


def test_tampered_cookie_is_anonymous(alice: Any) -> None:
    c = web()
    c.force_login(alice)
    good = session_cookie(c) or ""
    for bad in (good[:-3] + "AAA", "garbage-cookie", good + "x"):
        c.cookies["sessionid"] = bad
        r = c.get("/")
        assert r.status_code == 200 and "Not signed in" in r.content.decode()
    c.cookies["sessionid"] = good
    assert "Signed in as" in c.get("/").content.decode()


def test_daemon_stopped_answers_503(alice: Any, own_daemon: Daemon) -> None:
    from django.test import override_settings

    with override_settings(CLOAKROOM_ENDPOINT=own_daemon.endpoint, CLOAKROOM_TIMEOUT=0.5):
        c = web()
        c.force_login(alice)
        assert "Signed in as" in c.get("/").content.decode()
        own_daemon.stop()
        r = c.get("/")
        assert r.status_code == 503 and r["Retry-After"]
        assert web().get("/").status_code == 503  # an anonymous write cannot be saved either
        own_daemon.start()
        for _ in range(100):
            r = c.get("/")
            if r.status_code == 200:
                break
        assert "Signed in as" in r.content.decode()
