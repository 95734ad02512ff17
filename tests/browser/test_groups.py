"""A zip's jobs in the page: grouped under one heading with the zip's name."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
from browser_kit import open_page
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

DOC = b'<?xml version="1.0"?>\n<orders>\n  <order id="1">tea</order>\n</orders>\n'


def zipped(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_s_jobs_show_under_one_group_heading(page: Page, fresh_server: Any) -> None:
    open_page(page, fresh_server.url)
    body = zipped(**{"a.xml": DOC, "b.xml": DOC, "c.xml": DOC, "notes.txt": b"not xml"})
    page.locator("#file-input").set_input_files(
        [
            {"name": "lone.xml", "mimeType": "application/xml", "buffer": DOC},
            {"name": "Q1 filings & co.zip", "mimeType": "application/zip", "buffer": body},
        ]
    )
    group = page.locator('.job-group[data-group="Q1 filings & co.zip"]')
    expect(group.locator(".job")).to_have_count(3)
    heading = group.get_by_role("heading", name="Q1 filings & co.zip")  # text, not markup
    expect(heading).to_be_visible()
    expect(group.locator(".group-count")).to_have_text("3 files")
    expect(group.get_by_role("list", name="Q1 filings & co.zip")).to_be_visible()
    names = group.locator(".job-name").all_text_contents()
    assert sorted(names) == ["a.xml", "b.xml", "c.xml"]
    for job in group.locator(".job").all():
        expect(job).to_have_attribute("data-group", "Q1 filings & co.zip")
        expect(job).to_have_attribute("data-status", "succeeded", timeout=30_000)
    lone = page.locator("#job-list > .job")  # a file sent alone stays outside any group
    expect(lone).to_have_count(1)
    expect(lone.locator(".job-name")).to_have_text("lone.xml")

    page.reload()  # the history shows the same grouping
    expect(page.locator("#jobs-loading")).to_be_hidden()
    group = page.locator('.job-group[data-group="Q1 filings & co.zip"]')
    expect(group.locator(".job")).to_have_count(3)

    page.on("dialog", lambda dialog: dialog.accept())  # "remove … and delete its output?"
    for left in (2, 1, 0):
        group.locator(".job").first.get_by_role("button", name="Remove").click()
        expect(page.locator(".job-group .job")).to_have_count(left)
    expect(group).to_have_count(0)  # the heading goes with its last job
    expect(page.locator("#job-list > .job")).to_have_count(1)
