"""The upload's step options and the list view, in Chromium against ``xmlflow serve``.

Options: chosen in the page, they travel with the upload and change the result; a value
the server refuses shows its 422 beside the control. List view: search, filters,
selection and the bulk actions; a history of 1,000 jobs (written to the store before the
server starts) is listed and searched within coarse bounds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from browser_kit import BROWSER_STEPS, open_page, screenshot, upload
from playwright.sync_api import Download, Page, expect

from xmlflow.backends.sqlite import SqliteStore
from xmlflow.models import Job
from xmlflow.service import new_job_id

XML = (
    b"<catalog><book id='1'><title>Dune</title></book>"
    b"<book id='2'><title>Emma</title></book></catalog>"
)
CONFIG = """
    CONVERT = {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"}
    PIPELINES = {
        "default": [CONVERT],
        "stamped": [{"id": "stamp", "name": "Stamp", "module": "run_stamp"}],
        "slow": [{"id": "count", "name": "Count records", "module": "run_count",
                  "options": {"seconds": 30}}],
    }
"""
STEPS = {
    "count": BROWSER_STEPS["count"],
    "stamp": """
        from xmlflow.step import UploadOption

        UPLOAD_OPTIONS = [
            UploadOption("copies", "integer", "how many copies of the text", default=1, minimum=1),
        ]

        def run_stamp(ctx):
            with ctx.open_output(ctx.stem + ".txt", "w") as out:
                out.write(ctx.input.read_text() * ctx.options.get("copies", 1))
    """,
}


@pytest.fixture(scope="module")
def lv_server(tmp_path_factory: pytest.TempPathFactory, suite: ModuleType) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("listview")
    config = suite.write_config(root / "conf", CONFIG, STEPS)
    server = suite.Server(config=config, data_dir=root / "data", env={"XMLFLOW_WORKERS": "4"})
    server.start()
    yield server
    server.stop()


def _api_job(server: Any, filename: str) -> dict[str, Any]:
    page = httpx.get(f"{server.url}/api/jobs", params={"q": filename}, timeout=10).json()
    assert page["total"] == 1, page
    job: dict[str, Any] = page["jobs"][0]
    return job


def test_a_chosen_option_travels_with_the_upload(page: Page, lv_server: Any) -> None:
    open_page(page, lv_server.url)
    page.get_by_label("Pipeline", exact=True).select_option("default")
    options = page.locator("#step-options")
    expect(options).to_be_visible()
    options.locator("summary").click()
    mode = page.locator('[data-step="process_xml"][data-key="mode"]')
    expect(mode).to_have_value('"json"')  # the configured default, shown
    mode.select_option(label="jsonl")
    expect(options.locator(".options-changed")).to_have_text("1 changed")
    screenshot(page, "options")

    upload(page, ("books-lines.xml", XML))
    job = _api_job(lv_server, "books-lines.xml")
    assert job["options"] == {"process_xml": {"mode": "jsonl"}}  # only what changed
    job = lv_server.wait_finished(job["id"])
    assert [o["name"] for o in job["outputs"]] == ["books-lines.jsonl"]
    body = httpx.get(lv_server.url + job["outputs"][0]["url"], timeout=10).content
    assert len(body.splitlines()) >= 1 and body.lstrip().startswith(b"{")
    expect(page.locator(".job", has_text="books-lines.xml").locator(".outputs")).to_contain_text(
        "books-lines.jsonl"
    )


def test_a_refused_option_shows_the_servers_reason(page: Page, lv_server: Any) -> None:
    open_page(page, lv_server.url)
    page.get_by_label("Pipeline", exact=True).select_option("stamped")
    page.locator("#step-options summary").click()
    copies = page.locator('[data-step="stamp"][data-key="copies"]')
    expect(copies).to_have_value("1")
    copies.fill("0")
    upload(page, ("refused.xml", XML), new_jobs=False)
    error = page.locator("#options-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("'stamp'")
    expect(error).to_contain_text("'copies' must be at least 1")
    expect(copies).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".upload-item .upload-state")).to_contain_text("refused.xml")
    assert httpx.get(f"{lv_server.url}/api/jobs", params={"q": "refused"}).json()["total"] == 0

    # a value the server takes: three copies in the output
    copies.fill("3")
    upload(page, ("stamped.xml", b"<a>x</a>"))
    expect(error).to_be_hidden()
    job = lv_server.wait_finished(_api_job(lv_server, "stamped.xml")["id"])
    text = httpx.get(lv_server.url + job["outputs"][0]["url"], timeout=10).text
    assert text == "<a>x</a>" * 3


def test_list_view_searches_filters_and_acts_on_a_selection(page: Page, lv_server: Any) -> None:
    names = ["ledger-a.xml", "ledger-b.xml", "ledger-c.xml"]
    done = [lv_server.upload((name, XML))[0]["id"] for name in names]
    (slow,) = lv_server.upload(("ledger-slow.xml", XML), pipeline="slow")
    for job_id in done:
        lv_server.wait_finished(job_id)

    open_page(page, lv_server.url)
    page.locator("#view-list").click()
    rows = page.locator(".list-row")
    page.get_by_label("Search").fill("LEDGER-")
    expect(rows).to_have_count(4)
    expect(page.locator("#list-range")).to_have_text("1–4 of 4")
    row = rows.filter(has_text="ledger-slow.xml")
    expect(row.locator(".row-status")).to_have_text("Running")
    expect(row.locator(".row-pipeline")).to_have_text("slow")
    first = rows.filter(has_text="ledger-c.xml").locator(".row-select")
    first.check()
    screenshot(page, "list-view")
    first.uncheck()

    # filters: status, then pipeline
    page.locator("#list-status").select_option(label="Succeeded")
    expect(rows).to_have_count(3)
    page.locator("#list-status").select_option(label="Any")
    page.locator("#list-pipeline").select_option("slow")
    expect(rows).to_have_count(1)

    # cancel the running one from the list
    row.locator(".row-select").check()
    expect(page.locator("#list-selected")).to_have_text("1 job selected")
    page.locator("#list-cancel").click()
    expect(row.locator(".row-status")).to_have_text("Cancelled")
    assert lv_server.job(slow["id"])["status"] == "cancelled"
    row.locator(".row-select").uncheck()

    # a range with shift-click, downloaded: one outputs.zip per job
    page.locator("#list-pipeline").select_option("default")
    expect(rows).to_have_count(3)
    rows.nth(0).locator(".row-select").click()
    rows.nth(2).locator(".row-select").click(modifiers=["Shift"])
    expect(page.locator("#list-selected")).to_have_text("3 jobs selected")
    downloads: list[Download] = []
    page.on("download", lambda download: downloads.append(download))
    page.locator("#list-download").click()
    expect(page.locator("#list-note")).to_have_text("Downloading 3 zips.")
    deadline = time.monotonic() + 10
    while len(downloads) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert sorted(d.suggested_filename.split("-")[1] for d in downloads) == ["a", "b", "c"]

    # remove the selection (after a confirmation); their cards go too
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#list-remove").click()
    expect(page.locator("#list-empty")).to_have_text("No job matches these filters.")
    for job_id in done:
        assert httpx.get(f"{lv_server.url}/api/jobs/{job_id}").status_code == 404
    page.locator("#view-cards").click()
    expect(page.locator(".job", has_text="ledger-a.xml")).to_have_count(0)


def test_past_50_unfinished_cards_the_others_are_polled(page: Page, make_server: Any) -> None:
    """The stream follows 50 jobs; the others' cards are refreshed by one request for the
    unfinished jobs, and a waiting job that ended meanwhile is looked up on its own.

    A server of its own, killed at the end: cancelling 55 jobs one by one costs more."""
    server = make_server(XMLFLOW_WORKERS="1")
    jobs = server.upload(*[(f"waiting-{i:02d}.xml", XML) for i in range(55)], pipeline="slow")
    open_page(page, server.url)
    cards = page.locator(".job")
    expect(cards).to_have_count(25)
    page.locator("#load-more").click()
    expect(cards).to_have_count(50)
    page.locator("#load-more").click()
    expect(cards).to_have_count(55)
    page.wait_for_function("window.xmlflow.live.followedCount === 50")
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/api/jobs?" in r.url else None)
    oldest = jobs[0]["id"]  # shown last, so waiting for a place on the stream
    httpx.post(f"{server.url}/api/jobs/{oldest}/cancel", timeout=10)
    card = page.locator(f'.job[data-job-id="{oldest}"]')
    expect(card).to_have_attribute("data-status", "cancelled", timeout=8000)
    assert polls and all("status=queued,running" in url for url in polls), polls


def _history(data_dir: Path, count: int) -> None:
    """``count`` ended jobs written straight to the server's store (SQLite in WAL mode takes
    another process's writes), as if run long ago: no pipeline to wait for."""
    store = SqliteStore(data_dir / "xmlflow.db")
    start = time.time() - 86_400 - count
    for i in range(count):
        job = Job(
            id=new_job_id(),
            filename=f"record-{i:04d}.xml",
            size=100 + i,
            pipeline_name="default",
            pipeline=[],
            created_at=start + i,
        )
        store.create(job)
        store.cancel(job.id)


def test_a_history_of_1000_jobs_stays_responsive(page: Page, lv_server: Any) -> None:
    _history(lv_server.data_dir, 1000)
    open_page(page, lv_server.url)
    expect(page.locator(".job")).to_have_count(25)  # cards: one page, more on demand
    started = time.monotonic()
    page.locator("#view-list").click()
    expect(page.locator("#list-range")).to_contain_text("1–50 of 1,0", timeout=5000)
    expect(page.locator(".list-row")).to_have_count(50)
    page.get_by_label("Search").fill("RECORD-")
    expect(page.locator("#list-range")).to_have_text("1–50 of 1,000", timeout=5000)
    expect(page.locator(".list-row").first.locator(".row-name")).to_have_text("record-0999.xml")
    page.get_by_label("Search").fill("record-05")
    expect(page.locator("#list-range")).to_have_text("1–50 of 100", timeout=5000)
    page.locator("#list-next").click()
    expect(page.locator("#list-range")).to_have_text("51–100 of 100", timeout=5000)
    expect(page.locator(".list-row").last.locator(".row-name")).to_have_text("record-0500.xml")
    assert time.monotonic() - started < 10
    # every job has ended: no stream open
    assert page.evaluate("window.xmlflow.live.openCount") == 0
