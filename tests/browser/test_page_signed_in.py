"""The page behind a token, in Chromium: awkward output names download, and the page's
own writes (upload, cancel, delete, sign out) pass the same-origin check."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from browser_kit import card, open_page, upload
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

TOKEN = "page-token"
NAMES = ["a#b.xml", "%41%2e.xml", "with space.xml", "ünïcødé.xml"]


def test_signed_in_the_page_downloads_awkward_names_and_writes(
    page: Page, make_server: Any
) -> None:
    server = make_server(XMLFLOW_API_TOKEN=TOKEN)
    page.goto(server.url + "/signin")
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_label("API token").press("Enter")
    expect(page).to_have_url(server.url + "/")
    open_page(page, server.url)

    upload(page, *[(name, f"<n>{name}</n>".encode()) for name in NAMES], pipeline="custom")
    for name in NAMES:
        job = card(page, name)
        expect(job).to_have_attribute("data-status", "succeeded")
        link = job.locator(".output-link").first
        with page.expect_download() as download:
            link.click()
        assert download.value.path().read_text() == f"<N>{name.upper()}</N>!"
        assert download.value.suggested_filename == name[:-4] + ".upper.txt"

    # the page's own fetch() carries Sec-Fetch-Site: same-origin and the cookie: the view
    # answers (409: the job has ended), not the cross-site check (403)
    job_url = "/api/jobs/" + str(card(page, NAMES[0]).get_attribute("data-job-id"))
    status = "([url, method]) => fetch(url, {method}).then(r => r.status)"
    assert page.evaluate(status, [job_url + "/cancel", "POST"]) == 409
    assert page.evaluate(status, [job_url, "DELETE"]) == 204
    jobs = httpx.get(server.url + "/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert sorted(j["filename"] for j in jobs.json()["jobs"]) == sorted(NAMES[1:])

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(server.url + "/signin")
