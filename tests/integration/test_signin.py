"""Sign-in as an attacker would try it: redirects, guessing, cookies, other sites' pages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

from ..conftest import Server
from .test_api import start_server

TOKEN = "signin-test-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 6  # wrong tokens a minute, and the burst allowed before 429
EVIL = "https://evil.example"


def locked_server(root: Path, **env: str) -> Server:
    return start_server(
        root, XMLFLOW_API_TOKEN=TOKEN, XMLFLOW_AUTH_FAILURES_PER_MINUTE=str(LIMIT), **env
    )


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Clients reach it directly: X-Forwarded-* headers are anyone's and are ignored."""
    srv = locked_server(tmp_path_factory.mktemp("direct"), XMLFLOW_SESSION_HOURS="2")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Behind one trusted proxy (XMLFLOW_TRUSTED_PROXIES=1) that sets X-Forwarded-*."""
    srv = locked_server(tmp_path_factory.mktemp("proxied"), XMLFLOW_TRUSTED_PROXIES="1")
    yield srv
    srv.stop()


def from_address(srv: Server, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z is loopback)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=srv.url, transport=transport, timeout=10)


@contextmanager
def signed_in(srv: Server, address: str = "127.0.0.1", **headers: str) -> Iterator[httpx.Client]:
    with from_address(srv, address) as client:
        response = client.post("/signin", data={"token": TOKEN}, headers=headers)
        assert response.status_code == 303, response.text
        yield client


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\n/x", "/\r\n//evil.example", "/ /x"])
def test_next_with_whitespace_or_controls_goes_home(direct: Server, target: str) -> None:
    with from_address(direct, "127.0.1.1") as client:
        response = client.post("/signin", data={"token": TOKEN, "next": target})
        assert response.status_code == 303 and response.headers["location"] == "/"
        form = client.get("/signin", params={"next": target})
        assert form.status_code == 200 and 'name="next" value="/"' in form.text


def test_next_within_the_site_is_kept_and_encoded(direct: Server) -> None:
    with from_address(direct, "127.0.1.1") as client:
        response = client.post("/signin", data={"token": TOKEN, "next": "/?file=ünï"})
        assert response.headers["location"] == "/?file=%C3%BCn%C3%AF"


def test_wrong_bearer_tokens_get_429_and_retry_after(direct: Server) -> None:
    with from_address(direct, "127.0.2.1") as guesser:
        for _ in range(LIMIT):
            assert (
                guesser.get("/api/jobs", headers={"Authorization": "Bearer guess"}).status_code
                == 401
            )
        refused = guesser.get("/api/jobs", headers={"Authorization": "Bearer guess"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_requests"
        assert 1 <= int(refused.headers["retry-after"]) <= 60 / LIMIT + 1
        # while refused, not even the right token is compared: no oracle for the guesser
        assert guesser.get("/api/jobs", headers=BEARER).status_code == 429
        assert guesser.post("/signin", data={"token": TOKEN}).status_code == 429
        # an X-Forwarded-For header from anyone is not believed
        spoofed = {**BEARER, "X-Forwarded-For": "203.0.113.9"}
        assert guesser.get("/api/jobs", headers=spoofed).status_code == 429
    with from_address(direct, "127.0.2.2") as someone_else:
        assert someone_else.get("/api/jobs", headers=BEARER).status_code == 200


def test_wrong_sign_ins_get_429_with_retry_after_on_the_page(direct: Server) -> None:
    with from_address(direct, "127.0.3.1") as guesser:
        for _ in range(LIMIT):
            assert guesser.post("/signin", data={"token": "guess"}).status_code == 401
        refused = guesser.post("/signin", data={"token": "guess"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "too many wrong tokens" in refused.text and "<form" in refused.text
        assert "xmlflow_session" not in guesser.cookies
    with signed_in(direct, "127.0.3.2") as other:
        assert other.get("/api/jobs").status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(proxied: Server) -> None:
    guess = {"Authorization": "Bearer guess", "X-Forwarded-For": "203.0.113.5"}
    for _ in range(LIMIT):
        assert httpx.get(proxied.url + "/api/jobs", headers=guess).status_code == 401
    assert httpx.get(proxied.url + "/api/jobs", headers=guess).status_code == 429
    other = {**BEARER, "X-Forwarded-For": "203.0.113.6"}
    assert httpx.get(proxied.url + "/api/jobs", headers=other).status_code == 200


def test_the_session_cookie_expires_and_is_http_only_and_same_site(direct: Server) -> None:
    with from_address(direct, "127.0.4.1") as client:
        response = client.post("/signin", data={"token": TOKEN})
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    expires = parsedate_to_datetime(cookie.split("Expires=")[1].split(";")[0]).timestamp()
    assert abs(expires - (time.time() + 2 * 3600)) < 120


def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(
    proxied: Server, direct: Server
) -> None:
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    trusted = httpx.post(proxied.url + "/signin", data={"token": TOKEN}, headers=https)
    assert "; Secure" in trusted.headers["set-cookie"]
    untrusted = httpx.post(direct.url + "/signin", data={"token": TOKEN}, headers=https)
    assert "Secure" not in untrusted.headers["set-cookie"]


def test_a_copied_cookie_stops_working_at_sign_out(direct: Server) -> None:
    with signed_in(direct, "127.0.5.1") as browser:
        copied = browser.cookies["xmlflow_session"]
        assert browser.post("/signout").status_code == 303
    with httpx.Client(base_url=direct.url, cookies={"xmlflow_session": copied}) as thief:
        response = thief.get("/api/jobs")
        assert response.status_code == 401 and "jobs" not in response.json()
    with signed_in(direct, "127.0.5.1") as again:  # signing in again still works
        assert again.get("/api/jobs").status_code == 200


def test_the_server_refuses_an_expired_cookie_even_if_the_client_keeps_it(
    tmp_path: Path,
) -> None:
    srv = locked_server(tmp_path, XMLFLOW_SESSION_HOURS="0.0003")  # about a second
    try:
        with signed_in(srv) as browser:
            kept = browser.cookies["xmlflow_session"]
            assert browser.get("/api/jobs").status_code == 200
        time.sleep(1.5)
        with httpx.Client(base_url=srv.url, headers={"Cookie": f"xmlflow_session={kept}"}) as c:
            assert c.get("/api/jobs").status_code == 401
    finally:
        srv.stop()


CROSS_SITE = [{"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}]


def upload(client: httpx.Client, **headers: str) -> httpx.Response:
    files = {"file": ("a.xml", b"<a>1</a>", "application/xml")}
    return client.post("/api/jobs", files=files, headers=headers)


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_cross_site_writes_with_the_cookie_are_refused(
    direct: Server, headers: dict[str, str]
) -> None:
    with signed_in(direct, "127.0.6.1") as browser:
        before = browser.get("/api/jobs").json()["total"]
        refused = upload(browser, **headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        assert "cross-site" in refused.json()["error"]["message"]
        assert browser.post("/signout", headers=headers).status_code == 403
        assert browser.get("/api/jobs").json()["total"] == before  # still signed in; no job


def test_same_origin_writes_with_the_cookie_are_accepted(direct: Server) -> None:
    with signed_in(direct, "127.0.6.2", Origin=direct.url) as browser:
        assert upload(browser, Origin=direct.url).status_code == 202
        assert (
            upload(browser, **{"Sec-Fetch-Site": "same-origin", "Origin": direct.url}).status_code
            == 202
        )
        assert (
            browser.post("/signout", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 303
        )


def test_bearer_writes_need_no_origin(direct: Server) -> None:
    with httpx.Client(base_url=direct.url, headers=BEARER) as script:
        assert upload(script).status_code == 202
        assert upload(script, Origin=EVIL).status_code == 202


def test_cross_site_sign_in_is_refused(direct: Server) -> None:
    response = httpx.post(direct.url + "/signin", data={"token": TOKEN}, headers={"Origin": EVIL})
    assert response.status_code == 403 and "set-cookie" not in response.headers


def test_with_auth_off_cross_site_form_posts_are_refused_too(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        with httpx.Client(base_url=srv.url) as client:
            for headers in CROSS_SITE:
                assert upload(client, **headers).status_code == 403
            assert client.get("/api/jobs").json()["total"] == 0
            assert upload(client, Origin=srv.url).status_code == 202
            assert upload(client).status_code == 202  # curl, scripts: no Origin at all
    finally:
        srv.stop()
