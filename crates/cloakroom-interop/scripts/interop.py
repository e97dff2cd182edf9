#!/usr/bin/env python3
"""Cross-check helper for cloakroom-interop's tests, run with target/venv/bin/python.

Uses the real Flask, Pyramid and Django session code, never a re-implementation:

  interop.py make FRAMEWORK N SEED
      makes N session cookies with random secrets and payloads; prints one JSON line each:
      {"secret", "payload" (the session as JSON, Flask's tagged form for Flask), "cookie",
       "t0", "t1" (unix seconds around the signing)}
  interop.py open FRAMEWORK
      reads JSON lines {"secret", "cookie"} on stdin; prints one JSON line each,
      {"payload": the session the framework opened, or null if it refused the cookie}

FRAMEWORK is flask, pyramid or django.
"""
import json
import random
import sys
import time


def rand_text(rng, n):
    alphabet = 'abcXYZ019 _-.:"\\/<>&\'\n\t\x01\x7f' + "é€😀ß\u2028中"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))


def rand_value(rng, depth, floats=True):
    kinds = ["int", "str", "bool", "null"]
    if floats:
        kinds.append("float")
    if depth > 0:
        kinds += ["list", "dict"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.randint(-(2**53), 2**53)
    if kind == "float":
        return rng.uniform(-1e6, 1e6)
    if kind == "str":
        return rand_text(rng, 12)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [rand_value(rng, depth - 1, floats) for _ in range(rng.randint(0, 4))]
    return rand_dict(rng, depth - 1, floats)


def rand_dict(rng, depth, floats=True):
    # Keys start with "k" so that none looks like one of Flask's tags (" t", " b", ...).
    return {"k" + rand_text(rng, 6): rand_value(rng, depth, floats) for _ in range(rng.randint(1, 5))}


def rand_secret(rng):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_!$é€") for _ in range(rng.randint(8, 64)))


# --- Flask -------------------------------------------------------------------------------

def flask_app():
    from flask import Flask
    return Flask("interop")


def flask_make(rng, n):
    from flask.sessions import SecureCookieSession
    app = flask_app()
    si = app.session_interface
    for _ in range(n):
        app.secret_key = rand_secret(rng)
        payload = rand_dict(rng, 3)
        if rng.random() < 0.3:
            payload["ktuple"] = (1, "two")  # tagged {" t": [..]}
        if rng.random() < 0.3:
            payload["kbytes"] = bytes(rng.randrange(256) for _ in range(5))  # tagged {" b": ".."}
        if rng.random() < 0.2:
            payload["kbig"] = "x" * 300  # long and repetitive: Flask compresses it
        t0 = int(time.time())
        with app.test_request_context():
            session = SecureCookieSession(payload)
            session.modified = True
            response = app.response_class()
            si.save_session(app, session, response)
        t1 = int(time.time())
        cookie = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
        tagged = si.serializer.tag(payload)
        emit({"secret": app.secret_key, "payload": tagged, "cookie": cookie, "t0": t0, "t1": t1})


def flask_open(lines):
    from flask import request
    app = flask_app()
    si = app.session_interface
    for item in lines:
        app.secret_key = item["secret"]
        with app.test_request_context(headers={"Cookie": "session=" + item["cookie"]}):
            session = si.open_session(app, request)
        # A refused cookie gives a new, empty session; the tests never write an empty one.
        data = dict(session)
        emit({"payload": si.serializer.tag(data) if data else None})


# --- Pyramid -----------------------------------------------------------------------------

def pyramid_make(rng, n):
    from pyramid.request import Request
    from pyramid.response import Response
    from pyramid.session import SignedCookieSessionFactory
    for _ in range(n):
        secret = rand_secret(rng)
        factory = SignedCookieSessionFactory(secret)
        request = Request.blank("/")
        t0 = int(time.time())
        session = factory(request)
        session.update(rand_dict(rng, 3))
        response = Response()
        request._process_response_callbacks(response)
        t1 = int(time.time())
        cookie = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
        emit({"secret": secret, "payload": dict(session), "cookie": cookie, "t0": t0, "t1": t1})


def pyramid_open(lines):
    from pyramid.request import Request
    from pyramid.session import SignedCookieSessionFactory
    for item in lines:
        factory = SignedCookieSessionFactory(item["secret"])
        request = Request.blank("/", headers={"Cookie": "session=" + item["cookie"]})
        session = factory(request)
        emit({"payload": None if session.new else dict(session)})


# --- Django ------------------------------------------------------------------------------

def django_setup():
    from django.conf import settings
    if not settings.configured:
        settings.configure(
            SECRET_KEY="replaced-per-cookie",
            SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        )
    from django.contrib.sessions.backends.signed_cookies import SessionStore
    return settings, SessionStore


def django_make(rng, n):
    settings, SessionStore = django_setup()
    for _ in range(n):
        settings.SECRET_KEY = rand_secret(rng)
        payload = rand_dict(rng, 3)
        if rng.random() < 0.2:
            payload["kbig"] = "x" * 300  # Django compresses it
        t0 = int(time.time())
        store = SessionStore()
        store.update(payload)
        store.save()
        t1 = int(time.time())
        emit({"secret": settings.SECRET_KEY, "payload": payload, "cookie": store.session_key,
              "t0": t0, "t1": t1})


def django_open(lines):
    settings, SessionStore = django_setup()
    for item in lines:
        settings.SECRET_KEY = item["secret"]
        data = SessionStore(session_key=item["cookie"]).load()
        emit({"payload": data or None})


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")


def main(argv):
    makers = {"flask": flask_make, "pyramid": pyramid_make, "django": django_make}
    openers = {"flask": flask_open, "pyramid": pyramid_open, "django": django_open}
    if len(argv) == 5 and argv[1] == "make" and argv[2] in makers:
        makers[argv[2]](random.Random(int(argv[4])), int(argv[3]))
    elif len(argv) == 3 and argv[1] == "open" and argv[2] in openers:
        openers[argv[2]](json.loads(line) for line in sys.stdin if line.strip())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
