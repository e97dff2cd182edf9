"""A small Flask site whose sessions live in cloakroomd.

    cargo run --release -p cloakroomd -- --bind tcp://127.0.0.1:7450
    pip install ./clients/python flask
    CLOAKROOM_ENDPOINT=tcp://127.0.0.1:7450 python clients/python/examples/flask_app.py

then open http://127.0.0.1:5000. Any user name logs in (this example has no passwords: a
real site checks them before calling login_user).
"""

from __future__ import annotations

import os
from html import escape

from flask import Flask, flash, get_flashed_messages, redirect, request, session

import cloakroom
from cloakroom.flask import (
    CloakroomSessionInterface,
    csrf_token,
    current_user_id,
    login_user,
    logout_user,
    require_csrf,
    sign_out_others,
    take_flashes,
)


def create_app(client: cloakroom.Client, *, cookie_name: str | None = None) -> Flask:
    app = Flask(__name__)
    app.session_interface = CloakroomSessionInterface(client, cookie_name=cookie_name)

    @app.before_request
    def csrf() -> None:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            require_csrf()

    def page(body: str) -> str:
        messages = [m for m in get_flashed_messages()]
        messages += [f.message for f in take_flashes()]
        notes = "".join(f"<p class=flash>{escape(str(m))}</p>" for m in messages)
        return f"<!doctype html><title>Cloakroom + Flask</title>{notes}{body}"

    def form(action: str, fields: str, button: str) -> str:
        return (
            f'<form method=post action="{action}">{fields}'
            f'<input type=hidden name=csrf_token value="{escape(csrf_token())}">'
            f"<button>{button}</button></form>"
        )

    @app.get("/")
    def index() -> str:
        visits = session.get("visits", 0) + 1
        session["visits"] = visits
        user = current_user_id()
        if user is None:
            return page(
                f"<p>Not signed in. Visit number {visits}.</p>"
                + form("/login", '<input name=user placeholder="user name">', "Sign in")
            )
        return page(
            f"<p>Signed in as <b>{escape(user)}</b>. Visit number {visits}.</p>"
            + form("/logout", "", "Sign out")
            + form("/sign-out-others", "", "Sign out all other sessions")
        )

    @app.post("/login")
    def login() -> object:
        user = request.form.get("user", "").strip()
        if not user:
            flash("Say who you are.")
            return redirect("/")
        login_user(user, device=cloakroom.Device(user_agent=request.user_agent.string or None))
        flash(f"Welcome, {user}.")
        return redirect("/")

    @app.post("/logout")
    def logout() -> object:
        logout_user()
        flash("Signed out.")
        return redirect("/")

    @app.post("/sign-out-others")
    def others() -> object:
        flash(f"Signed out {sign_out_others()} other session(s).")
        return redirect("/")

    return app


if __name__ == "__main__":
    endpoint = os.environ.get("CLOAKROOM_ENDPOINT", "ipc://./cloakroom-data/cloakroomd.sock")
    create_app(cloakroom.Client(endpoint, timeout=2.0)).run(port=5000)
