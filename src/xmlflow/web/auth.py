"""Optional token auth: with ``XMLFLOW_API_TOKEN`` set, only its holders see jobs.

Two ways to show the token, both checked with :func:`hmac.compare_digest`:

- ``Authorization: Bearer <token>``, for scripts, the CLI and Prometheus;
- the signed session cookie that ``POST /signin`` sets, for the page: EventSource
  cannot send headers. The cookie holds an HMAC of the token keyed by the secret
  key, never the token, and stops working when the token changes.

Public without a token: ``/api/health``, the page shell ``/`` and its static files
(they show no job), and sign-in/sign-out. Everything else answers 401 in the JSON
error format, before any view runs, so nothing about a job can leak.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from flask import Blueprint, Flask, redirect, render_template, request, session
from werkzeug.wrappers import Response as BaseResponse

from ..errors import Unauthorized
from ..settings import Settings
from . import service

bp = Blueprint("auth", __name__)
PUBLIC_ENDPOINTS = frozenset(
    {"static", "ui.index", "health.health", "auth.signin_form", "auth.signin", "auth.signout"}
)
SESSION_KEY = "auth"


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
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        SESSION_COOKIE_NAME="xmlflow_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.register_blueprint(bp)
    app.before_request(require_token)


def require_token() -> tuple[dict[str, Any], int, dict[str, str]] | None:
    """Let the request through when auth is off, the route is public or the token is shown."""
    token = service().settings.api_token
    if not token or request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if _bearer_matches(token) or _session_matches(token):
        return None
    error = Unauthorized(
        "this server needs its API token: send 'Authorization: Bearer <token>' "
        "or sign in at /signin"
    )
    return error.to_dict(), error.status_code, {"WWW-Authenticate": 'Bearer realm="xmlflow"'}


def _bearer_matches(token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and tokens_match(given.strip(), token)


def _session_matches(token: str) -> bool:
    stored = session.get(SESSION_KEY)
    return isinstance(stored, str) and hmac.compare_digest(stored, _fingerprint(token))


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison, so response times do not spell out the token."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _fingerprint(token: str) -> str:
    from flask import current_app

    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


@bp.get("/signin")
def signin_form() -> BaseResponse | str:
    if not service().settings.api_token:
        return redirect("/")
    return render_template("signin.html", next=_safe_next(request.args.get("next")), error=None)


@bp.post("/signin")
def signin() -> BaseResponse | tuple[str, int]:
    token = service().settings.api_token
    target = _safe_next(request.form.get("next"))
    if not token:
        return redirect(target, 303)
    if not tokens_match(request.form.get("token", ""), token):
        return render_template("signin.html", next=target, error="That token is not right."), 401
    session.clear()
    session[SESSION_KEY] = _fingerprint(token)
    return redirect(target, 303)


@bp.post("/signout")
def signout() -> BaseResponse:
    session.clear()
    return redirect("/signin" if service().settings.api_token else "/", 303)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: a sign-in link must not send people elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
