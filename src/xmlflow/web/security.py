"""Security headers on every response, same-origin writes, and trusted proxies.

The page keeps every script and style in static files, so the Content-Security-Policy
can forbid inline code outright: an output or a file name that smuggles markup into
the page can never run. ``frame-ancestors 'none'`` (and ``X-Frame-Options`` for old
browsers) stops click-jacking; ``nosniff`` stops a browser from running an uploaded
file served as a download.

A request that changes something (POST, PUT, PATCH, DELETE) must come from this
site's own page unless it carries a bearer token, which another site's page cannot
add without a CORS preflight this server never grants. Like Flask-WTF, Django and
Go's ``CrossOriginProtection``: ``Sec-Fetch-Site`` decides when the browser sends it,
else ``Origin`` must be this server's; a request with neither comes from no browser
new enough to send a cross-site write without them, and passes. This holds with
auth off too: another site cannot make a visitor's browser upload or cancel here.

Behind ``XMLFLOW_TRUSTED_PROXIES`` proxies, werkzeug's ``ProxyFix`` takes the client
address, scheme and host from their ``X-Forwarded-*`` headers; otherwise those
headers are ignored, since any client can send them.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from ..errors import Forbidden
from .auth import bearer_token

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def init_app(app: Flask) -> None:
    proxies = app.extensions["xmlflow"].settings.trusted_proxies
    if proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies
        )
    app.before_request(refuse_cross_site_writes)
    app.after_request(add_headers)


def refuse_cross_site_writes() -> tuple[dict[str, Any], int] | None:
    """403 for a state-changing request another site's page made a browser send."""
    if request.method not in UNSAFE_METHODS or bearer_token() is not None or _same_origin():
        return None
    error = Forbidden(
        f"cross-site {request.method} refused: changes are accepted from this server's own "
        "page, or with an 'Authorization: Bearer <token>' header"
    )
    return error.to_dict(), error.status_code


def _same_origin() -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")  # "none": the user typed or bookmarked it
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin.lower() == f"{request.scheme}://{request.host}".lower()


def add_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response
