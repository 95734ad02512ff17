"""The workbench parts of a card, in Chromium: output previews, reading speed, step times.

A real XML file is uploaded through the page and converted by the real step; its
preview is opened and the records shown are checked against the file, then "Show more"
continues where the first page ended. A step that reads a (pretend) 60 MB input slowly
shows bytes read, MB/s and an ETA while it runs, and a finished job shows how long each
step took. The drop zone does not offer dropping on a touch screen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from browser_kit import (
    CONVERT,
    DESKTOP,
    HAVE_PROCESS_XML,
    card,
    open_page,
    screenshot,
    step,
    upload,
)
from playwright.sync_api import Browser, Page, expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not HAVE_PROCESS_XML, reason="the preview shows the converter's output"),
]

BOOKS = (
    b'<?xml version="1.0"?>\n<catalog region="eu">\n'
    + b"".join(
        b'  <book id="%d"><title>Book %d</title><price>%d.5</price></book>\n' % (i, i, i)
        for i in range(1, 31)
    )
    + b"</catalog>\n"
)
CLEANUP = '{"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"}'
CONFIG = f"""
    CONVERT = {CONVERT}
    PIPELINES = {{
        "default": [CONVERT, {CLEANUP}],
        "lines": [{{"id": "lines", "name": "Write lines", "module": "run_lines"}}],
        "reading": [{{"id": "reader", "name": "Read slowly", "module": "run_reader"}}, {CLEANUP}],
    }}
"""
STEPS = {
    "lines": """
        def run_lines(ctx):
            with ctx.open_output("notes.txt", "w") as out:
                out.write("".join(f"note {i} <b>not markup</b>\\n" for i in range(1, 121)))
    """,
    "reader": """
        import time

        def run_reader(ctx):
            # Reads a pretend 60 MB at ~10 MB/s for 2.5 s, then stops early.
            total = 60_000_000
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < 2.5:
                if ctx.cancelled:
                    return
                done = int(elapsed * 10_000_000)
                ctx.progress(done / total, "reading", done=done, total=total)
                time.sleep(0.05)
    """,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, suite: ModuleType) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("preview-ui")
    config = suite.write_config(root / "conf", CONFIG, STEPS)
    srv = suite.Server(config=config, data_dir=root / "data", env={"XMLFLOW_WORKERS": "3"})
    srv.start()
    yield srv
    srv.stop()


def test_preview_shows_the_first_records_as_a_tree_and_loads_more(page: Page, server: Any) -> None:
    open_page(page, server.url)
    upload(page, ("books.xml", BOOKS), pipeline="default")
    job = card(page, "books.xml")
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".outputs-title")).to_have_text("1 output")

    job.get_by_label("Preview books.json").click()
    preview = job.locator(".preview-body")
    records = preview.locator(".preview-record")
    expect(records).to_have_count(20)
    expect(preview.locator(".preview-meta")).to_have_text(
        re.compile(r"^30 records in catalog\.book · \d+(\.\d)? KB · showing the first 20$")
    )
    first = records.first
    expect(first.locator(".tree-summary").first).to_contain_text("#1")
    expect(first.locator(".tree-leaf")).to_have_text(
        ['@id: "1"', 'title: "Book 1"', 'price: "1.5"']
    )
    expect(records.nth(19).locator(".tree-glance")).to_contain_text('"Book 20"')
    job.locator(".outputs-block").scroll_into_view_if_needed()
    screenshot(page, "preview")

    # a closed record opens on demand: its fields are built then
    records.nth(19).locator("summary").first.click()
    expect(records.nth(19).locator(".tree-leaf").nth(1)).to_have_text('title: "Book 20"')

    preview.get_by_role("button", name="Show more").click()
    expect(records).to_have_count(30)
    expect(records.last).to_have_attribute("data-index", "29")
    expect(records.last.locator(".tree-glance")).to_contain_text('"Book 30"')
    expect(preview.locator(".preview-meta")).to_have_text(
        re.compile(r"^30 records in catalog\.book · ")
    )
    expect(preview.get_by_role("button", name="Show more")).to_have_count(0)


def test_text_output_shows_its_first_lines_as_text_not_markup(page: Page, server: Any) -> None:
    open_page(page, server.url)
    upload(page, ("notes.xml", b"<notes/>"), pipeline="lines")
    job = card(page, "notes.xml")
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".step-chart")).to_have_count(0)  # one step: its row has its time
    job.get_by_label("Preview notes.txt").click()
    lines = job.locator(".preview-line")
    expect(lines).to_have_count(50)
    expect(lines.first).to_have_text("note 1 <b>not markup</b>")
    expect(job.locator(".preview-body b")).to_have_count(0)
    job.get_by_role("button", name="Show more").click()
    expect(lines).to_have_count(100)
    expect(job.locator(".preview-meta")).to_have_text(
        re.compile(r"^120 lines · \d+(\.\d)? KB · showing the first 100$")
    )
    job.get_by_role("button", name="Show more").click()
    expect(lines).to_have_count(120)
    expect(job.locator(".preview-meta")).to_have_text(re.compile(r"^120 lines · "))


def test_a_running_step_shows_bytes_read_its_rate_and_an_eta_then_a_time_chart(
    page: Page, server: Any
) -> None:
    open_page(page, server.url)
    upload(page, ("big.xml", b"<big/>"), pipeline="reading")
    job = card(page, "big.xml")
    reading = step(job, "reader").locator(".step-reading")
    expect(reading).to_have_text(
        re.compile(r"^\d+(\.\d)? MB of 57\.2 MB read · \d+(\.\d)? MB/s · about \d+(\.\d)? s left$")
    )
    text = reading.inner_text()
    rate = float(re.search(r"([\d.]+) MB/s", text)[1])  # type: ignore[index]
    assert 6 < rate < 14, text  # ~9.5 MiB/s, measured over the page's window
    screenshot(page, "progress-rate")

    expect(job).to_have_attribute("data-status", "succeeded")
    expect(reading).to_have_text("")
    rows = job.locator(".step-chart-row")
    expect(rows).to_have_count(2)
    expect(rows.first.locator(".step-chart-name")).to_have_text("Read slowly")
    expect(rows.first.locator(".step-chart-time")).to_have_text(re.compile(r"^2\.\d s$"))
    widths = [r.locator(".step-chart-bar").evaluate("e => e.style.width") for r in rows.all()]
    assert widths[0] == "100%" and float(widths[1].rstrip("%")) < 20, widths


def test_the_picker_takes_xml_of_every_kind_and_touch_screens_are_not_told_to_drop(
    browser: Browser, page: Page, server: Any
) -> None:
    open_page(page, server.url)
    accept = page.locator("#file-input").get_attribute("accept") or ""
    for extension in (
        ".xml",
        ".osm",
        ".gpx",
        ".kml",
        ".svg",
        ".xsd",
        ".rss",
        ".atom",
        ".gz",
        ".zip",
    ):
        assert extension in accept.split(","), accept
    expect(page.locator(".drop-main")).to_have_text("Choose XML files or drop them here")

    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        mobile = phone.new_page()
        mobile.goto(server.url)
        expect(mobile.locator(".drop-action")).to_be_visible()
        expect(mobile.locator(".drop-hint")).to_be_hidden()
    finally:
        phone.close()
    assert DESKTOP["width"] > 390
