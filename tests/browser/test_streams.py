"""The page's live streams in Chromium: every job it shows over one connection.

A browser keeps at most 6 HTTP/1.1 connections per host; with a stream per job, six
jobs and an upload held them all and a reload hung. These tests upload many jobs,
count the page's stream requests open at once, and reload mid-job again and again.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from browser_kit import StreamCount, card, open_page, received_event_ids, step, upload
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

ORDERS = b'<?xml version="1.0"?>\n<orders>\n  <order id="1">tea</order>\n</orders>\n'
RELOADS = 20


def open_streams_on_server(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(r"^xmlflow_open_streams (\S+)$", text, re.MULTILINE)
    assert match, "no xmlflow_open_streams in /metrics"
    return float(match.group(1))


def test_many_jobs_share_one_stream(page: Page, make_server: Any) -> None:
    server = make_server(XMLFLOW_WORKERS="3")
    streams = StreamCount(page)
    open_page(page, server.url)
    files = [(f"many-{i}.xml", ORDERS) for i in range(9)]
    upload(page, *files, pipeline="paced")
    expect(page.locator('.job[data-status="running"]')).not_to_have_count(0)

    time.sleep(1)  # the page settled on its set of jobs: one stream, the others closed
    assert streams.most <= 2, f"{streams.most} stream requests open at once"
    assert page.evaluate("window.xmlflow.live.openCount") == 1
    assert page.evaluate("window.xmlflow.live.followedCount") >= 1
    assert open_streams_on_server(server.url) <= 2
    assert all("/api/events?" in url for url in streams.urls), streams.urls

    for name, _ in files:
        expect(card(page, name)).to_have_attribute("data-status", "succeeded", timeout=60_000)
    for name, _ in files:
        job_id = card(page, name).get_attribute("data-job-id")
        ids = received_event_ids(page, job_id)
        assert ids == list(range(ids[0], ids[0] + len(ids))), f"{name}: an event twice or lost"
        assert ids[-1] == server.job(job_id)["last_event_id"]
    assert streams.most <= 2
    assert page.evaluate("window.xmlflow.live.openCount") == 0


def test_twenty_reloads_mid_job_with_many_jobs_never_hang(page: Page, make_server: Any) -> None:
    server = make_server(XMLFLOW_WORKERS="3")
    streams = StreamCount(page)
    open_page(page, server.url)
    upload(page, ("long.xml", ORDERS), pipeline="slow")
    upload(page, *[(f"batch-{i}.xml", ORDERS) for i in range(8)], pipeline="paced")
    upload(page, ("broken.xml", ORDERS), pipeline="raising")
    long_job = card(page, "long.xml")
    expect(step(long_job, "count")).to_have_attribute("data-status", "running")

    for _ in range(RELOADS):
        page.reload(timeout=10_000)  # hung here when the page held every connection
        expect(page.locator("#jobs-loading")).to_be_hidden(timeout=10_000)
        expect(page.locator(".job")).to_have_count(10)
        expect(long_job).to_have_attribute("data-status", "running")
        assert streams.most <= 2, f"{streams.most} stream requests open at once"

    for i in range(8):
        expect(card(page, f"batch-{i}.xml")).to_have_attribute("data-status", "succeeded")
    expect(card(page, "broken.xml")).to_have_attribute("data-status", "failed")
    job_id = long_job.get_attribute("data-job-id")
    expect(step(long_job, "count").locator(".step-message")).to_contain_text("records")
    ids = received_event_ids(page, job_id)
    assert ids == list(range(ids[0], ids[0] + len(ids))), "an event came twice or went missing"
    long_job.get_by_role("button", name="Cancel long.xml").click()
    expect(long_job).to_have_attribute("data-status", "cancelled")
    assert server.job(job_id)["status"] == "cancelled"
    assert page.evaluate("window.xmlflow.live.openCount") == 0
