"""The page at ``/``, driven in Chromium: uploads, live cards, history, reconnection."""

from __future__ import annotations

import json
import re
import zipfile
from typing import Any

import pytest
from browser_kit import (
    HAVE_PROCESS_XML,
    NARROW,
    StreamCutter,
    card,
    open_page,
    received_event_ids,
    screenshot,
    step,
    upload,
)
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

ORDERS = b'<?xml version="1.0"?>\n<orders>\n  <order id="1">tea</order>\n</orders>\n'


def test_one_file_every_step_succeeds_and_its_output_downloads(page: Page, ui_server: Any) -> None:
    open_page(page, ui_server.url)
    pipeline = "default" if HAVE_PROCESS_XML else "custom"
    upload(page, ("orders.xml", ORDERS), pipeline=pipeline)

    job = card(page, "orders.xml")
    expect(job).to_have_attribute("data-status", "succeeded")
    rows = job.locator(".step")
    expect(rows).not_to_have_count(0)
    for row in rows.all():
        expect(row).to_have_attribute("data-status", "succeeded")
        expect(row.locator(".step-time")).to_have_text(re.compile(r"^(< )?\d+(\.\d+)? s$"))
    expect(job.locator(".job-bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#uploads .upload-item")).to_have_count(0)

    job_id = job.get_attribute("data-job-id")
    expect(job.locator(".zip")).to_have_attribute("href", f"/api/jobs/{job_id}/outputs.zip")
    with page.expect_download() as download:
        job.locator(".output-link").first.click()
    body = download.value.path().read_text()
    if HAVE_PROCESS_XML:
        assert json.loads(body)["orders"]["order"]["#text"] == "tea"
    else:
        assert body == ORDERS.decode().upper() + "!"
    assert download.value.suggested_filename == job.locator(".output-link").first.inner_text()
    with page.expect_download() as zipped:
        job.locator(".zip").click()
    with zipfile.ZipFile(zipped.value.path()) as archive:
        assert download.value.suggested_filename in archive.namelist()


def test_three_files_at_once_each_get_a_card_and_finish(page: Page, ui_server: Any) -> None:
    open_page(page, ui_server.url)
    names = ["north.xml", "south.xml", "west.xml"]
    upload(page, *[(name, ORDERS) for name in names], pipeline="paced")

    for name in names:
        job = card(page, name)
        expect(job).to_have_attribute("data-status", "succeeded", timeout=20_000)
        expect(job.locator(".step[data-status=succeeded]")).to_have_count(2)
        expect(job.locator(".step-message").first).to_have_text("1000 of 1000 records")
    expect(page.locator("#uploads .upload-item")).to_have_count(0)


def test_a_failing_step_shows_its_error_and_skips_the_rest(page: Page, ui_server: Any) -> None:
    open_page(page, ui_server.url)
    upload(page, ("burning.xml", ORDERS), pipeline="raising")

    job = card(page, "burning.xml")
    expect(job).to_have_attribute("data-status", "failed")
    expect(step(job, "explode")).to_have_attribute("data-status", "failed")
    expect(step(job, "explode").locator(".step-error")).to_contain_text(
        "the disk of records is on fire"
    )
    expect(step(job, "cleanup")).to_have_attribute("data-status", "skipped")
    expect(job.locator(".job-error")).to_contain_text("Step “Explode” failed")
    expect(job.locator(".outputs-block")).to_be_hidden()
    expect(job.get_by_role("button", name="Remove burning.xml")).to_be_visible()


def test_an_xml_error_shows_its_line_and_column(page: Page, ui_server: Any) -> None:
    open_page(page, ui_server.url)
    upload(page, ("mismatched.xml", ORDERS), pipeline="strict")

    job = card(page, "mismatched.xml")
    expect(job).to_have_attribute("data-status", "failed")
    error = step(job, "strict").locator(".step-error")
    expect(error.locator(".step-error-where")).to_have_text("Line 3, column 7")
    expect(error).to_contain_text("expected </item>, found </items>")
    expect(job.locator(".job-error")).to_contain_text("line and column shown")


def test_an_empty_file_is_refused_before_sending_with_what_to_do(
    page: Page, ui_server: Any
) -> None:
    open_page(page, ui_server.url)
    upload(page, ("nothing.xml", b""), new_jobs=False)

    item = page.locator("#uploads .upload-item")
    expect(item).to_have_attribute("data-state", "failed")
    expect(item).to_contain_text("nothing.xml is empty: choose a file with XML in it")
    item.get_by_role("button", name="Dismiss").click()
    expect(item).to_have_count(0)


def test_a_reload_mid_job_reconnects_and_finishes(page: Page, ui_server: Any) -> None:
    open_page(page, ui_server.url)
    upload(page, ("reloaded.xml", ORDERS), pipeline="paced")
    job = card(page, "reloaded.xml")
    expect(step(job, "count").locator(".step-message")).to_contain_text("records")

    page.reload()
    job = card(page, "reloaded.xml")
    expect(job).to_have_attribute("data-status", "running")  # the history brought it back
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".step")).to_have_count(2)
    expect(job.locator(".step[data-status=succeeded]")).to_have_count(2)
    job_id = job.get_attribute("data-job-id")
    ids = received_event_ids(page, job_id)
    assert ids == list(range(ids[0], ids[0] + len(ids))), "an event came twice or went missing"
    assert ids[-1] == ui_server.job(job_id)["last_event_id"]
    assert page.evaluate("window.xmlflow.live.openCount") == 0  # closed after `end`


def test_cancel_stops_a_running_job(page: Page, ui_server: Any) -> None:
    open_page(page, ui_server.url)
    upload(page, ("too-long.xml", ORDERS), pipeline="slow")
    job = card(page, "too-long.xml")
    expect(step(job, "count")).to_have_attribute("data-status", "running")

    cancel = job.get_by_role("button", name="Cancel too-long.xml")
    cancel.focus()
    page.keyboard.press("Enter")

    expect(job).to_have_attribute("data-status", "cancelled")
    expect(step(job, "count")).to_have_attribute("data-status", "skipped")
    expect(step(job, "cleanup")).to_have_attribute("data-status", "skipped")
    expect(job.locator(".job-summary")).to_have_text("Cancelled: the remaining steps did not run.")
    expect(cancel).to_be_hidden()


def test_a_cut_stream_resumes_from_the_last_event(
    page: Page, ui_server: Any, stream_cutter: StreamCutter
) -> None:
    open_page(page, stream_cutter.url)
    upload(page, ("cut.xml", ORDERS), pipeline="paced")
    job = card(page, "cut.xml")
    expect(step(job, "count").locator(".step-message")).to_contain_text("records")

    job_id = job.get_attribute("data-job-id")
    seen = page.evaluate("id => window.xmlflow.cards.get(id).lastEventId", job_id)
    requests_before = len(stream_cutter.resumed_from)
    assert stream_cutter.cut_streams() >= 1
    expect(job).to_have_attribute("data-status", "succeeded")

    resumed = stream_cutter.resumed_from[requests_before:]
    assert resumed, "the page did not reconnect"
    assert resumed[0][job_id] >= seen > 0, "the page started over instead of resuming"
    ids = received_event_ids(page, job_id)
    assert ids == list(range(ids[0], ids[0] + len(ids))), "an event came twice or went missing"
    assert ids[-1] == ui_server.job(job_id)["last_event_id"]
    expect(job.locator(".step[data-status=succeeded]")).to_have_count(2)
    expect(job.locator(".job-note")).to_be_hidden()


def test_a_server_killed_mid_job_shows_reconnecting_then_interrupted(
    page: Page, fresh_server: Any
) -> None:
    open_page(page, fresh_server.url)
    upload(page, ("interrupted.xml", ORDERS), pipeline="slow")
    job = card(page, "interrupted.xml")
    expect(step(job, "count")).to_have_attribute("data-status", "running")

    fresh_server.kill()
    expect(job.locator(".job-note")).to_contain_text("reconnecting")
    screenshot(page, "desktop-reconnecting")

    fresh_server.start()  # same port and data folder: it ends the orphaned job
    expect(job).to_have_attribute("data-status", "interrupted")
    expect(job.locator(".job-error")).to_contain_text("upload the file again")
    expect(job.locator(".job-note")).to_be_hidden()
    expect(step(job, "count")).not_to_have_attribute("data-status", "pending")


def test_screenshots_of_the_main_states(page: Page, fresh_server: Any) -> None:
    """docs/screenshots/: empty, then jobs in every state, at 1440 and at 360 px wide."""
    open_page(page, fresh_server.url)
    expect(page.locator("#empty-state")).to_be_visible()
    expect(page.get_by_label("Pipeline", exact=True)).to_be_visible()
    expect(page.get_by_label("Choose XML files or drop them here")).to_be_attached()
    screenshot(page, "desktop-empty")
    page.set_viewport_size(NARROW)
    screenshot(page, "narrow-empty")
    page.set_viewport_size({"width": 1440, "height": 1000})

    upload(page, ("orders.xml", ORDERS), pipeline="custom")
    expect(card(page, "orders.xml")).to_have_attribute("data-status", "succeeded")
    upload(page, ("burning.xml", ORDERS), pipeline="raising")
    upload(page, ("mismatched.xml", ORDERS), pipeline="strict")
    expect(card(page, "mismatched.xml")).to_have_attribute("data-status", "failed")
    upload(page, ("catalogue-2024.xml", ORDERS * 400), pipeline="slow")
    running = card(page, "catalogue-2024.xml")
    expect(running.locator(".step-message").first).to_contain_text("records")
    page.wait_for_timeout(1500)  # let the bars move a little
    screenshot(page, "desktop-jobs", full_page=True)

    page.set_viewport_size(NARROW)
    page.evaluate("document.querySelector('#jobs-title').scrollIntoView()")
    screenshot(page, "narrow-jobs")
    card(page, "burning.xml").evaluate("el => el.scrollIntoView()")
    screenshot(page, "narrow-outcomes")


def test_a_server_with_a_token_sends_people_to_sign_in_and_back(
    page: Page, make_server: Any
) -> None:
    server = make_server(XMLFLOW_API_TOKEN="correct horse")
    page.goto(server.url)
    expect(page).to_have_url(re.compile(r"/signin\?next=(/|%2F)$"))
    page.get_by_label("API token").fill("correct horse")
    page.get_by_label("API token").press("Enter")

    expect(page).to_have_url(server.url + "/")
    expect(page.locator("#empty-state")).to_be_visible()
    upload(page, ("signed.xml", ORDERS), pipeline="custom")
    expect(card(page, "signed.xml")).to_have_attribute("data-status", "succeeded")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin"))


def test_the_page_works_under_a_strict_content_security_policy(page: Page, ui_server: Any) -> None:
    """No inline script or style: the headers the API engineer will add cannot break the page."""
    policy = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"

    def with_policy(route: Any) -> None:
        response = route.fetch()
        route.fulfill(
            response=response, headers={**response.headers, "content-security-policy": policy}
        )

    page.route(ui_server.url + "/", with_policy)
    violations: list[str] = []
    page.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )
    open_page(page, ui_server.url)
    upload(page, ("guarded.xml", ORDERS), pipeline="custom")
    expect(card(page, "guarded.xml")).to_have_attribute("data-status", "succeeded")
    assert not violations
