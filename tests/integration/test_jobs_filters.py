"""``GET /api/jobs?status=&pipeline=&q=``: the list's filters, through ``xmlflow serve``.

Every test uses the shared ``server`` fixture, so ``tests/redis/test_jobs_filters_on_redis.py``
runs the same tests against the Redis backend. The server is shared with other tests:
each test names its files with a token of its own and searches for it.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from ..conftest import Server

XML = b"<catalog><book>Dune</book></catalog>"


def _jobs(server: Server, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/jobs", params=params, timeout=10)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def _history(server: Server) -> tuple[str, dict[str, str]]:
    """Four finished jobs named with a fresh token: two succeeded, two failed."""
    token = uuid.uuid4().hex[:10]
    names = {
        "ok-1": f"Report-{token}-Alpha.xml",
        "ok-2": f"report-{token}-beta.xml",
        "bad-1": f"REPORT-{token}-gamma.xml",
        "bad-2": f"other-{token}.xml",
    }
    ids = {}
    for key, name in names.items():
        pipeline = "default" if key.startswith("ok") else "raising"
        (job,) = server.upload((name, XML), pipeline=pipeline)
        ids[key] = job["id"]
    for job_id in ids.values():
        server.wait_finished(job_id)
    return token, ids


def test_search_filters_and_pages_the_list(server: Server) -> None:
    token, ids = _history(server)

    # q: a case-insensitive substring of the file name, newest first
    page = _jobs(server, q=f"REPORT-{token.upper()}")
    assert page["total"] == 3
    assert [j["id"] for j in page["jobs"]] == [ids["bad-1"], ids["ok-2"], ids["ok-1"]]

    # status and pipeline filter, combined with q
    failed = _jobs(server, q=token, status="failed")
    assert {j["id"] for j in failed["jobs"]} == {ids["bad-1"], ids["bad-2"]}
    assert all(j["status"] == "failed" and j["pipeline"] == "raising" for j in failed["jobs"])
    assert _jobs(server, q=token, pipeline="default")["total"] == 2
    assert _jobs(server, q=token, pipeline="raising", status="succeeded")["total"] == 0

    # several statuses: repeated or comma-separated; any of them
    both = httpx.get(
        f"{server.url}/api/jobs",
        params=[("q", token), ("status", "succeeded"), ("status", "failed")],
    ).json()
    assert both["total"] == 4
    assert _jobs(server, q=token, status="succeeded,queued")["total"] == 2

    # pages: total counts every match, offset walks through them
    first = _jobs(server, q=token, limit=3, offset=0)
    rest = _jobs(server, q=token, limit=3, offset=3)
    assert first["total"] == rest["total"] == 4
    seen = [j["id"] for j in first["jobs"] + rest["jobs"]]
    assert sorted(seen) == sorted(ids.values()) and len(first["jobs"]) == 3


def test_status_filter_without_search_merges_the_sets(server: Server) -> None:
    """Several statuses and no other filter: in Redis, read from the index sets only."""
    _, ids = _history(server)
    page = _jobs(server, status="failed,succeeded", limit=500)
    listed = [j["id"] for j in page["jobs"]]
    assert set(ids.values()) <= set(listed)
    assert all(j["status"] in ("failed", "succeeded") for j in page["jobs"])
    created = [j["created_at"] for j in page["jobs"]]
    assert created == sorted(created, reverse=True)
    total = _jobs(server, status="failed")["total"] + _jobs(server, status="succeeded")["total"]
    assert page["total"] == total


def test_bad_filters_are_refused_with_a_reason(server: Server) -> None:
    response = httpx.get(f"{server.url}/api/jobs", params={"status": "done,failed"})
    assert response.status_code == 400
    assert "'done'" in response.json()["error"]["message"]
    response = httpx.get(f"{server.url}/api/jobs", params={"q": "x" * 201})
    assert response.status_code == 400
    assert "200" in response.json()["error"]["message"]
    # a search that matches nothing is an empty page, not an error
    assert _jobs(server, q="no-such-name-" + uuid.uuid4().hex) == {
        "jobs": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
    }
