"""``XMLFLOW_API_TOKEN``: without the token nothing about a job can be seen; with it, all works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from ..conftest import Server
from .test_api import start_server

TOKEN = "s3cret-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # these tests show many wrong tokens on purpose: the limit is tested in test_signin.py
    root = tmp_path_factory.mktemp("locked")
    srv = start_server(root, XMLFLOW_API_TOKEN=TOKEN, XMLFLOW_AUTH_FAILURES_PER_MINUTE="100000")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def secret_job(locked: Server) -> dict[str, str]:
    """A finished job whose file name must never show up for a stranger."""
    response = httpx.post(
        f"{locked.url}/api/jobs",
        files={"file": ("payroll-2026.xml", b"<pay>42</pay>", "application/xml")},
        headers=BEARER,
    )
    assert response.status_code == 202, response.text
    job: dict[str, str] = response.json()["jobs"][0]
    with httpx.Client(headers=BEARER, timeout=30) as client:
        with connect_sse(client, "GET", locked.url + job["events_url"]) as source:
            assert [e.event for e in source.iter_sse() if e.data][-1] == "end"
    return job


PROTECTED = [
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/{id}"),
    ("DELETE", "/api/jobs/{id}"),
    ("POST", "/api/jobs/{id}/cancel"),
    ("GET", "/api/jobs/{id}/events"),
    ("GET", "/stream/{id}"),
    ("GET", "/stream?job={id}"),
    ("GET", "/api/jobs/{id}/outputs"),
    ("GET", "/api/jobs/{id}/outputs/payroll-2026.upper.txt"),
    ("GET", "/api/jobs/{id}/outputs.zip"),
    ("POST", "/api/jobs"),
    ("POST", "/upload"),
    ("GET", "/api/pipelines"),
    ("GET", "/api/openapi.json"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("auth", [None, f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer"])
def test_without_the_token_every_route_is_401_and_shows_nothing(
    locked: Server, secret_job: dict[str, str], method: str, path: str, auth: str | None
) -> None:
    headers = {"Authorization": auth} if auth else {}
    url = locked.url + path.format(id=secret_job["id"])
    response = httpx.request(method, url, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"
    assert "payroll" not in response.text and secret_job["id"] not in response.text


def test_with_the_bearer_token_the_api_works(locked: Server, secret_job: dict[str, str]) -> None:
    job = httpx.get(f"{locked.url}/api/jobs/{secret_job['id']}", headers=BEARER).json()
    assert job["filename"] == "payroll-2026.xml" and job["status"] == "succeeded"
    output = httpx.get(locked.url + job["outputs"][0]["url"], headers=BEARER)
    assert output.content == b"<PAY>42</PAY>!"


def test_health_the_page_and_its_files_need_no_token(locked: Server) -> None:
    assert httpx.get(f"{locked.url}/api/health").status_code == 200
    page = httpx.get(f"{locked.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert httpx.get(f"{locked.url}/static/app.css").status_code == 200
    assert httpx.get(f"{locked.url}/signin").status_code == 200


def test_signing_in_gives_a_cookie_that_opens_the_api_and_the_stream(
    locked: Server, secret_job: dict[str, str]
) -> None:
    with httpx.Client(base_url=locked.url, timeout=30) as browser:
        wrong = browser.post("/signin", data={"token": "guess"})
        assert wrong.status_code == 401 and "not right" in wrong.text
        assert "xmlflow_session" not in browser.cookies
        signed_in = browser.post("/signin", data={"token": TOKEN, "next": "/?from=signin"})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/?from=signin"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and TOKEN not in cookie
        assert browser.get(f"/api/jobs/{secret_job['id']}").status_code == 200
        with connect_sse(browser, "GET", f"/stream/{secret_job['id']}") as source:
            assert [e.event for e in source.iter_sse() if e.data][-1] == "end"
        assert browser.post("/signout").status_code == 303
        assert browser.get(f"/api/jobs/{secret_job['id']}").status_code == 401


def test_sign_in_only_redirects_within_the_site(locked: Server) -> None:
    for target in ["https://evil.example/", "//evil.example/", "/\\evil.example"]:
        response = httpx.post(f"{locked.url}/signin", data={"token": TOKEN, "next": target})
        assert response.headers["location"] == "/"


def test_a_cookie_stops_working_when_the_token_changes(tmp_path: Path) -> None:
    env = {"XMLFLOW_API_TOKEN": "first", "XMLFLOW_SECRET_KEY": "same-key"}
    srv = start_server(tmp_path, **env)
    with httpx.Client(base_url=srv.url) as browser:
        browser.post("/signin", data={"token": "first"})
        assert browser.get("/api/jobs").status_code == 200
        cookies = httpx.Cookies(browser.cookies)
    # The browser's idle keep-alive connection is closed first: gunicorn would wait for
    # it (up to its keep-alive, ~5-9 s) before stopping. The cookies are what carries over.
    srv.stop()
    srv.env["XMLFLOW_API_TOKEN"] = "second"
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, cookies=cookies) as browser:
            assert browser.get("/api/jobs").status_code == 401
    finally:
        srv.stop()


def test_without_a_token_everything_is_open_and_signin_goes_home(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        assert httpx.get(f"{srv.url}/api/jobs").status_code == 200
        assert httpx.get(f"{srv.url}/metrics").status_code == 200
        signin = httpx.get(f"{srv.url}/signin")
        assert signin.status_code == 302 and signin.headers["location"] == "/"
    finally:
        srv.stop()
