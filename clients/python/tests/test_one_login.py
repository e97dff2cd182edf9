"""One login, two languages: the Rust demo site (crates/cloakroom-tower/examples/demo.rs) on
the remote store of a real cloakroomd, and the Flask example app (examples/flask_app.py) on
the same daemon with the same cookie name, visited by one cookie jar as a browser would
(both on 127.0.0.1, different ports: a browser sends a host's cookies to every port).

A user signs up on the Rust site; the Flask app sees the same user and the flash the Rust
site queued; the Flask app's write lands in the same session; a logout on either side ends
the session on the other. A Flask app on another daemon must not see the login.

The demo binary is ``$CLOAKROOM_DEMO`` if set, else ``target/debug/examples/demo`` (built by
``cargo build -p cloakroom-tower --example demo``; scripts/check.d/60-python.sh does it).
"""

from __future__ import annotations

import html
import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple
from urllib.parse import urlencode

import pytest
from werkzeug.serving import make_server

import cloakroom

from conftest import ROOT, Daemon, end_process, log_tail, require_binary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from flask_app import create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("cookie_verbs")

#: The demo serves plain http, so its cookie is `cloakroom-session` (a `__Host-` cookie
#: needs Secure); the daemon and the Flask app are given the same name.
COOKIE = "cloakroom-session"
PASSWORD = "correct horse battery"


def demo_binary() -> Path:
    env = os.environ.get("CLOAKROOM_DEMO")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return target / "debug" / "examples" / "demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One cookie jar for every port of 127.0.0.1; follows no redirects."""

    def __init__(self) -> None:
        self.cookies: Dict[str, str] = {}

    def request(
        self,
        port: int,
        method: str,
        path: str,
        form: Optional[Dict[str, str]] = None,
        cookies: Optional[Dict[str, str]] = None,
    ) -> Tuple[int, Dict[str, str], str]:
        """Status, headers (last of each) and body. ``cookies`` replaces the jar for this
        request (and the response does not change the jar)."""
        jar = self.cookies if cookies is None else cookies
        headers = {"User-Agent": "one-login-test"}
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = f"http://127.0.0.1:{port}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            if cookies is None:
                for line in resp.headers.get_all("Set-Cookie") or []:
                    self._set(line)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, text
        finally:
            conn.close()

    def _set(self, line: str) -> None:
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(line)
        for name, morsel in parsed.items():
            if morsel["max-age"] == "0" or (morsel.value == "" and morsel["expires"]):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value

    def get(self, port: int, path: str) -> Tuple[int, Dict[str, str], str]:
        return self.request(port, "GET", path)


def csrf_token(page: str) -> str:
    """The hidden CSRF field of a page of either site (the demo quotes attributes, the Flask
    example does not)."""
    m = re.search(r'name="?csrf_token"? value="([^"]+)"', page)
    assert m, f"no CSRF field in the page: {page[:300]}"
    return html.unescape(m.group(1))


class Demo:
    """The Rust demo site on the daemon's store, as a process."""

    def __init__(self, daemon: Daemon, workdir: Path) -> None:
        binary = require_binary(
            "demo", demo_binary(), "cargo build -p cloakroom-tower --example demo", "CLOAKROOM_DEMO"
        )
        self.port = free_port()
        self.log = workdir / "demo.log"
        keys = (daemon.dir / "data" / "keys.toml").read_text()
        env = dict(os.environ)
        env.update(
            CLOAKROOM_DEMO_DIR=str(workdir / "demo"),
            CLOAKROOM_DEMO_ADDR=f"127.0.0.1:{self.port}",
            # One key ring for the daemon and the site: the daemon opens the site's cookies.
            CLOAKROOM_KEYS=keys,
            RUST_LOG="warn",
        )
        env.pop("CLOAKROOM_STORE", None)
        store = f"cloakroomd+{daemon.endpoint}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(binary), "--store", store],
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"the demo exited with {self.proc.returncode}: {self.tail()}", pytrace=False)
            try:
                status, _, _ = Browser().get(self.port, "/login")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the demo did not answer in 60 s: {self.tail()}", pytrace=False)
            time.sleep(0.1)

    def tail(self) -> str:
        return log_tail(self.log)

    def stop(self) -> None:
        end_process(self.proc)


class FlaskServer:
    """The Flask example app served over real http on a thread."""

    def __init__(self, endpoint: str) -> None:
        self.client = cloakroom.Client(endpoint, timeout=5)
        app = create_app(self.client, cookie_name=COOKIE)
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = int(self.server.server_port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.client.close()


def shared_daemon() -> Daemon:
    return Daemon(extra=["--cookie-name", COOKIE])


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Tuple[Daemon, Demo]]:
    daemon = shared_daemon()
    daemon.start()
    demo = None
    try:
        demo = Demo(daemon, tmp_path)
        yield daemon, demo
    finally:
        if demo is not None:
            demo.stop()
        daemon.cleanup()


def post_credentials(b: Browser, demo: Demo, path: str, user: str) -> Dict[str, str]:
    """GETs the form at `path`, POSTs the user's name and password with its CSRF token, and
    checks the redirect home; returns the response headers."""
    status, _, page = b.get(demo.port, path)
    assert status == 200, page
    status, headers, body = b.request(
        demo.port,
        "POST",
        path,
        form={"name": user, "password": PASSWORD, "csrf_token": csrf_token(page)},
    )
    assert status == 303 and headers.get("location") == "/", (status, headers, body, demo.tail())
    return headers


def signup(b: Browser, demo: Demo, user: str) -> str:
    headers = post_credentials(b, demo, "/signup", user)
    assert COOKIE in b.cookies, f"the demo set no {COOKIE} cookie: {headers}"
    return b.cookies[COOKIE]


def login(b: Browser, demo: Demo, user: str) -> str:
    post_credentials(b, demo, "/login", user)
    return b.cookies[COOKIE]


def rust_user(b: Browser, demo: Demo, cookie: Optional[str] = None) -> Optional[str]:
    """Who the Rust site says is signed in (None: it sends the visitor to /login)."""
    jar = None if cookie is None else {COOKIE: cookie}
    status, headers, page = b.request(demo.port, "GET", "/", cookies=jar)
    if status == 303:
        assert headers.get("location") == "/login", headers
        return None
    assert status == 200, (status, page)
    m = re.search(r"Signed in as <b>([^<]+)</b>", page)
    assert m, page
    return html.unescape(m.group(1))


def flask_page(b: Browser, flask: FlaskServer, cookie: Optional[str] = None) -> Tuple[Optional[str], str]:
    """Who the Flask app says is signed in, and its page."""
    jar = None if cookie is None else {COOKIE: cookie}
    status, _, page = b.request(flask.port, "GET", "/", cookies=jar)
    assert status == 200, (status, page)
    m = re.search(r"Signed in as <b>([^<]+)</b>", page)
    if m:
        return html.unescape(m.group(1)), page
    assert "Not signed in" in page, page
    return None, page


def test_one_login_two_languages(site: Tuple[Daemon, Demo]) -> None:
    daemon, demo = site
    flask = FlaskServer(daemon.endpoint)
    user = f"py-{uuid.uuid4().hex[:10]}"
    b = Browser()
    try:
        # Signed up on the Rust site; its redirect is not followed, so the welcome flash
        # it queued is still in the session.
        cookie = signup(b, demo, user)
        seen, page = flask_page(b, flask)
        assert seen == user, f"the Flask app does not see the Rust login: {page}"
        assert f"Welcome, {html.escape(user)}! Your account is ready." in page, page
        assert b.cookies[COOKIE] == cookie, "the Flask app replaced the Rust site's cookie"
        # The Flask app's write is in the same session, as the daemon tells any client.
        with cloakroom.Client(daemon.endpoint, timeout=5) as c:
            opened = c.open(cookie)
        assert opened.user_id == user
        assert opened.data.get("visits") == 1, opened.data
        # The flash was shown once, in Python: the Rust page no longer has it.
        status, _, rust_page = b.get(demo.port, "/")
        assert status == 200 and f"Signed in as <b>{html.escape(user)}</b>" in rust_page, rust_page
        assert "Your account is ready" not in rust_page, rust_page

        # A logout on the Flask side ends the session on the Rust side.
        _, page = flask_page(b, flask)
        status, _, _ = b.request(flask.port, "POST", "/logout", form={"csrf_token": csrf_token(page)})
        assert status == 302
        # (The example's "Signed out." flash starts a new anonymous session: a new cookie.)
        assert b.cookies.get(COOKIE) != cookie, "the Flask logout kept the cookie"
        assert rust_user(b, demo, cookie) is None, "the Rust site still accepts the cookie Flask logged out"
        assert flask_page(b, flask, cookie)[0] is None

        # And a logout on the Rust side ends it on the Flask side.
        b.cookies.clear()
        cookie = login(b, demo, user)
        assert flask_page(b, flask)[0] == user
        assert rust_user(b, demo) == user
        status, _, page = b.get(demo.port, "/")
        status, headers, _ = b.request(demo.port, "POST", "/logout", form={"csrf_token": csrf_token(page)})
        assert status == 303 and headers.get("location") == "/login", (status, headers)
        assert COOKIE not in b.cookies, "the Rust logout did not remove the cookie"
        assert flask_page(b, flask, cookie)[0] is None, "the Flask app still accepts the cookie Rust logged out"
        assert rust_user(b, demo, cookie) is None
    finally:
        flask.stop()


def test_a_flask_app_on_another_daemon_does_not_see_the_login(site: Tuple[Daemon, Demo]) -> None:
    """The twin that must fail: same cookie name, another daemon (its own key ring and
    store). The login must not carry over, so the test above can tell sharing from luck."""
    _, demo = site
    other = shared_daemon()
    other.start()
    flask = FlaskServer(other.endpoint)
    try:
        b = Browser()
        cookie = signup(b, demo, f"py-{uuid.uuid4().hex[:10]}")
        seen, page = flask_page(b, flask, cookie)
        assert seen is None, page
    finally:
        flask.stop()
        other.cleanup()


def test_cookie_tossing_a_planted_cookie_first_is_skipped(site: Tuple[Daemon, Demo]) -> None:
    """Both sides try every cookie of the name, in order: a planted one sent first (as a
    sibling subdomain can) does not log the user out of either."""
    daemon, demo = site
    flask = FlaskServer(daemon.endpoint)
    try:
        b = Browser()
        user = f"py-{uuid.uuid4().hex[:10]}"
        cookie = signup(b, demo, user)
        planted = "s1.k1.AAAA.AAAA"
        header = f"{COOKIE}={planted}; {COOKIE}={cookie}"
        for port in (demo.port, flask.port):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/", headers={"Cookie": header})
                resp = conn.getresponse()
                page = resp.read().decode()
            finally:
                conn.close()
            assert resp.status == 200 and f"Signed in as <b>{html.escape(user)}</b>" in page, (port, page)
    finally:
        flask.stop()
