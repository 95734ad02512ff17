"""Optional token auth: with ``XMLFLOW_API_TOKEN`` set, only its holders see jobs.

Two ways to show the token, both checked with :func:`hmac.compare_digest`:

- ``Authorization: Bearer <token>``, for scripts, the CLI and Prometheus;
- the signed session cookie that ``POST /signin`` sets, for the page: EventSource
  cannot send headers. The cookie holds an HMAC of the token keyed by the secret
  key, never the token, and stops working when the token changes. It also names one
  sign-in (:mod:`.signins`): it expires after ``XMLFLOW_SESSION_HOURS``, and signing
  out ends it on the server, so a copied cookie dies with it.

Wrong tokens are counted per client address (:mod:`.ratelimit`): past the limit,
bearer requests and sign-ins from that address get 429 with ``Retry-After`` before
any token is compared, so the token cannot be guessed at speed.

Public without a token: ``/api/health``, the page shell ``/`` and its static files
(they show no job), and sign-in/sign-out. Everything else answers 401 in the JSON
error format, before any view runs, so nothing about a job can leak.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, redirect, render_template, request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.urls import iri_to_uri
from werkzeug.wrappers import Response as BaseResponse

from ..errors import TooManyRequests, Unauthorized
from ..settings import Settings
from . import service
from .ratelimit import FailureLimiter
from .signins import SignIns

bp = Blueprint("auth", __name__)
PUBLIC_ENDPOINTS = frozenset(
    {"static", "ui.index", "health.health", "auth.signin_form", "auth.signin", "auth.signout"}
)
SESSION_KEY = "auth"
SIGNIN_KEY = "signin"
ErrorReply = tuple[dict[str, Any], int, dict[str, str]]


@dataclass(frozen=True)
class AuthState:
    """What auth keeps per app: the wrong-token counts and the open sign-ins."""

    failures: FailureLimiter
    signins: SignIns


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed cookie, marked ``Secure`` whenever the request came over HTTPS
    (directly, or through a trusted proxy that says so: see ``XMLFLOW_TRUSTED_PROXIES``)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def _secret_key(settings: Settings) -> str:
    """XMLFLOW_SECRET_KEY; else one derived from the token, so that every web process of a
    deployment accepts the same cookies; else (no auth) a random key per process."""
    if settings.secret_key:
        return settings.secret_key
    if settings.api_token:
        derived = hmac.new(settings.api_token.encode(), b"xmlflow session key", hashlib.sha256)
        return derived.hexdigest()
    return secrets.token_hex(32)


def init_app(app: Flask, settings: Settings) -> None:
    """Session cookie settings, the sign-in routes and the check before every request."""
    lifetime = timedelta(hours=settings.session_hours)
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        SESSION_COOKIE_NAME="xmlflow_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=lifetime,
        # the cookie expires a fixed time after sign-in, like the sign-in it names
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.session_interface = SessionCookies()
    data_dir = app.extensions["xmlflow"].data_dir
    app.extensions["xmlflow.auth"] = AuthState(
        FailureLimiter(settings.auth_failures_per_minute),
        SignIns(data_dir / "signins", lifetime.total_seconds()),
    )
    app.register_blueprint(bp)
    app.before_request(require_token)


def _state() -> AuthState:
    return current_app.extensions["xmlflow.auth"]  # type: ignore[no-any-return]


def require_token() -> ErrorReply | None:
    """Let the request through when auth is off, the route is public or the token is shown."""
    token = service().settings.api_token
    if not token or request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if _session_matches(token):
        return None
    if "Authorization" in request.headers:
        refused = _too_many_failures()
        if refused is not None:
            return refused.to_dict(), refused.status_code, _retry_after(refused)
        if _bearer_matches(token):
            return None
        _state().failures.failed(client_address())
    error = Unauthorized(
        "this server needs its API token: send 'Authorization: Bearer <token>' "
        "or sign in at /signin"
    )
    return error.to_dict(), error.status_code, {"WWW-Authenticate": 'Bearer realm="xmlflow"'}


def client_address() -> str:
    """The client's address: the peer's, or the proxy's word for it when trusted."""
    return request.remote_addr or "unknown"


def _too_many_failures() -> TooManyRequests | None:
    wait = _state().failures.retry_after(client_address())
    if not wait:
        return None
    return TooManyRequests(
        f"too many wrong tokens from {client_address()}: try again in {wait} s",
        retry_after=wait,
    )


def _retry_after(error: TooManyRequests) -> dict[str, str]:
    return {"Retry-After": str(error.retry_after)}


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer`` header, if the request has one."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def _bearer_matches(token: str) -> bool:
    given = bearer_token()
    return given is not None and tokens_match(given, token)


def _session_matches(token: str) -> bool:
    """A cookie of this token's, from a sign-in that has neither expired nor signed out."""
    stored = session.get(SESSION_KEY)
    if not isinstance(stored, str) or not hmac.compare_digest(stored, _fingerprint(token)):
        return False
    return _state().signins.is_open(session.get(SIGNIN_KEY))


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison, so response times do not spell out the token."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _fingerprint(token: str) -> str:
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


@bp.get("/signin")
def signin_form() -> BaseResponse | str:
    if not service().settings.api_token:
        return redirect("/")
    return render_template("signin.html", next=_safe_next(request.args.get("next")), error=None)


@bp.post("/signin")
def signin() -> BaseResponse | tuple[str, int, dict[str, str]]:
    token = service().settings.api_token
    target = _safe_next(request.form.get("next"))
    if not token:
        return redirect(target, 303)
    refused = _too_many_failures()
    if refused is not None:
        page = render_template("signin.html", next=target, error=refused.message)
        return page, refused.status_code, _retry_after(refused)
    if not tokens_match(request.form.get("token", ""), token):
        _state().failures.failed(client_address())
        page = render_template("signin.html", next=target, error="That token is not right.")
        return page, 401, {}
    signins = _state().signins
    signins.close(session.get(SIGNIN_KEY))  # signing in again replaces this browser's sign-in
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = _fingerprint(token)
    session[SIGNIN_KEY] = signins.open()
    return redirect(target, 303)


@bp.post("/signout")
def signout() -> BaseResponse:
    """End the sign-in on the server too: a copy of the cookie stops working at once."""
    _state().signins.close(session.get(SIGNIN_KEY))
    session.clear()
    return redirect("/signin" if service().settings.api_token else "/", 303)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: a sign-in link must not send people elsewhere.

    Browsers drop tabs and newlines from a URL and read a backslash as a slash, so
    ``next=/%09/evil.com`` would lead to ``//evil.com``: any such character sends home.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(c.isspace() or not c.isprintable() for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return iri_to_uri(target)
