"""Headers and ids that keep the page and the outputs safe."""

from __future__ import annotations

import httpx

from ..conftest import Server


def test_every_response_carries_the_security_headers(server: Server) -> None:
    (job,) = server.upload(("a.xml", b"<a>1</a>"))
    end = server.events(job["id"])[-1].data
    for path in ("/", "/static/app.js", "/api/jobs", end["outputs"][0]["url"], "/api/jobs/nope"):
        response = httpx.get(server.url + path)
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"


def test_the_page_has_no_inline_script_or_style(server: Server) -> None:
    page = httpx.get(server.url + "/").text
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert " on" + "click=" not in page


def test_job_ids_are_128_random_bits(server: Server) -> None:
    jobs = server.upload(*[(f"{i}.xml", b"<a/>") for i in range(5)])
    ids = [j["id"] for j in jobs]
    assert len(set(ids)) == 5
    for job_id in ids:
        assert len(job_id) == 32 and int(job_id, 16) >= 0


def test_outputs_are_served_only_from_their_own_job(server: Server) -> None:
    first, second = server.upload(("one.xml", b"<a>1</a>"), ("two.xml", b"<a>2</a>"))
    server.events(first["id"]), server.events(second["id"])
    cross = httpx.get(f"{server.url}/api/jobs/{first['id']}/outputs/two.json")
    assert cross.status_code == 404
    for sneaky in ("..%2F..%2Fxmlflow.db", "..%2Ftwo.json", "%2E%2E%2Fsource"):
        response = httpx.get(f"{server.url}/api/jobs/{first['id']}/outputs/{sneaky}")
        assert response.status_code == 404, sneaky
    assert httpx.get(f"{server.url}/static/").status_code == 404
    listing = httpx.get(f"{server.url}/api/jobs/{first['id']}/outputs/")
    assert listing.status_code in (200, 308, 404)
    assert "text/html" not in listing.headers["content-type"]
    if listing.status_code == 200:  # the API's own list of outputs, nothing else
        assert [o["name"] for o in listing.json()["outputs"]] == ["one.json"]
