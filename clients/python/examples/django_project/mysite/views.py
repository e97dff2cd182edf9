"""Three views: the sessions are Django's usual ``request.session`` and ``auth.login``."""

from html import escape

from django.contrib import messages
from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect


def _page(request: HttpRequest, body: str) -> HttpResponse:
    notes = "".join(f"<p class=flash>{escape(str(m))}</p>" for m in messages.get_messages(request))
    return HttpResponse(f"<!doctype html><title>Cloakroom + Django</title>{notes}{body}")


def index(request: HttpRequest) -> HttpResponse:
    visits = request.session.get("visits", 0) + 1
    request.session["visits"] = visits
    token = escape(get_token(request))
    if request.user.is_authenticated:
        return _page(
            request,
            f"<p>Signed in as <b>{escape(request.user.get_username())}</b>. "
            f"Visit number {visits}.</p><form method=post action=/logout/>"
            f"<input type=hidden name=csrfmiddlewaretoken value={token}>"
            "<button>Sign out</button></form>",
        )
    return _page(
        request,
        f"<p>Not signed in. Visit number {visits}.</p><form method=post action=/login/>"
        f"<input type=hidden name=csrfmiddlewaretoken value={token}>"
        "<input name=username> <input name=password type=password> <button>Sign in</button></form>",
    )


def login_view(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return redirect("/")
    user = authenticate(
        request, username=request.POST.get("username"), password=request.POST.get("password")
    )
    if user is None:
        messages.error(request, "Wrong user name or password.")
        return redirect("/")
    login(request, user)
    messages.success(request, f"Welcome, {user.get_username()}.")
    return redirect("/")


def logout_view(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        logout(request)
        messages.info(request, "Signed out.")
    return redirect("/")
