"""The preview route through ``xmlflow serve``: real outputs of real jobs, bounds, auth.

Each kind a step writes (JSON, JSON Lines, a split zip, text) is previewed page by page
with the route's own cursors, and the records are checked against the document uploaded.
A 100 MB output is previewed to show a request reads a window, never the file: the
server's peak memory barely moves (its timing lives in ``bench/preview.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import Server, write_config

BOOKS = (
    b'<?xml version="1.0"?><catalog region="eu">'
    + b"".join(
        b'<book id="%d"><title>Book %d</title><price>%d</price></book>' % (i, i, i)
        for i in range(1, 31)
    )
    + b"</catalog>"
)
CONVERT = '{"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"}'
CONFIG = f"""
    PIPELINES = {{
        "json": [{CONVERT}],
        "jsonl": [dict({CONVERT}, options={{"mode": "jsonl", "coerce_types": True}})],
        "split": [dict({CONVERT}, options={{"mode": "split"}})],
        "text": [{{"id": "lines", "name": "Lines", "module": "run_lines"}}],
        "big": [{{"id": "big", "name": "Big", "module": "run_big"}}],
    }}
"""
STEPS = {
    "lines": """
        def run_lines(ctx):
            with ctx.open_output("report.txt", "w") as out:
                out.write("".join(f"line {i}: é\\n" for i in range(1, 101)))
    """,
    "big": """
        ROWS = 1_000_000  # ~100 MB of JSON Lines and ~100 MB of one JSON document

        def run_big(ctx):
            chunk = "".join('{"n": %d, "pad": "%s"}\\n' % (i, "x" * 80) for i in range(10_000))
            with ctx.open_output("big.jsonl", "w") as out:
                for _ in range(ROWS // 10_000):
                    out.write(chunk)
            items = chunk.replace("\\n", ",")
            with ctx.open_output("big.json", "w") as out:
                out.write('{"root": {"@id": "b", "row": [')
                for _ in range(ROWS // 10_000 - 1):
                    out.write(items)
                out.write(items[:-1] + "]}}")
    """,
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("preview")
    config = write_config(root / "conf", CONFIG, STEPS)
    server = Server(config=config, data_dir=root / "data").start()
    yield server
    server.stop()


def finished_outputs(srv: Server, pipeline: str, data: bytes = BOOKS) -> dict[str, str]:
    """Run one job; its outputs' preview URLs by name."""
    (job,) = srv.upload(("books.xml", data), pipeline=pipeline)
    done = srv.wait_finished(job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    return {o["name"]: o["url"] + "/preview" for o in done["outputs"]}


def get(srv: Server, url: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(srv.url + url, params=params, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def all_pages(srv: Server, url: str, limit: int) -> list[dict[str, Any]]:
    pages = [get(srv, url, limit=limit)]
    while pages[-1]["next"]:
        pages.append(get(srv, url, limit=limit, cursor=pages[-1]["next"]))
    return pages


@pytest.fixture(scope="module")
def json_url(srv: Server) -> str:
    (url,) = finished_outputs(srv, "json").values()
    return url


def test_json_output_shows_the_records_of_its_array_page_by_page(
    srv: Server, json_url: str
) -> None:
    pages = all_pages(srv, json_url, limit=12)
    first = pages[0]
    assert first["kind"] == "json" and first["path"] == ["catalog", "book"]
    # the whole document is in the window: its records are counted without being parsed
    assert first["size"] > 1000 and first["count"] == 30 and first["count_at_least"] == 30
    assert first["items"][0] == {
        "index": 0,
        "value": {"@id": "1", "title": "Book 1", "price": "1"},
    }
    items = [item for page in pages for item in page["items"]]
    assert [i["value"]["title"] for i in items] == [f"Book {n}" for n in range(1, 31)]
    assert [i["index"] for i in items] == list(range(30))
    assert [len(p["items"]) for p in pages] == [12, 12, 6]
    assert pages[-1]["count"] == 30 and pages[-1]["next"] is None


def test_jsonl_output_counts_its_records_and_continues_from_the_cursor(srv: Server) -> None:
    (url,) = finished_outputs(srv, "jsonl").values()
    first = get(srv, url, limit=5)
    assert first["kind"] == "jsonl" and first["count"] == 30
    assert [i["value"]["price"] for i in first["items"]] == [1, 2, 3, 4, 5]
    second = get(srv, url, limit=5, cursor=first["next"])
    assert [i["value"]["@id"] for i in second["items"]] == [6, 7, 8, 9, 10]
    assert [i["index"] for i in second["items"]] == [5, 6, 7, 8, 9]


def test_split_zip_shows_each_member_as_a_record(srv: Server) -> None:
    (url,) = finished_outputs(srv, "split").values()
    pages = all_pages(srv, url, limit=20)
    assert pages[0]["kind"] == "zip" and pages[0]["count"] == 30
    items = [item for page in pages for item in page["items"]]
    assert len(items) == 30 and items[0]["key"] == "000001-book.json"
    assert items[29]["value"]["title"] == "Book 30"


def test_text_output_shows_its_first_lines(srv: Server) -> None:
    urls = finished_outputs(srv, "text")
    first = get(srv, urls["report.txt"], limit=3)
    assert first["kind"] == "text" and first["lines"] == ["line 1: é", "line 2: é", "line 3: é"]
    assert first["count"] == 100  # the whole file is in the window
    rest = get(srv, urls["report.txt"], limit=200, cursor=first["next"])
    assert rest["lines"][-1] == "line 100: é" and rest["next"] is None and rest["count"] == 100


def _peak_rss_kb(srv: Server) -> int:
    assert srv.proc is not None
    status = Path(f"/proc/{srv.proc.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def test_a_100_mb_output_is_previewed_from_a_window_not_read_whole(srv: Server) -> None:
    urls = finished_outputs(srv, "big")
    before = _peak_rss_kb(srv)
    lines = get(srv, urls["big.jsonl"], limit=3)
    assert lines["size"] > 90_000_000 and lines["kind"] == "jsonl"
    assert lines["count"] is None and lines["count_at_least"] == 3  # too big to count at once
    assert [i["value"]["n"] for i in lines["items"]] == [0, 1, 2]
    # ... so it is counted in the background, and a later page has the count
    deadline = time.monotonic() + 20
    while (later := get(srv, urls["big.jsonl"], limit=1, cursor=lines["next"]))["count"] is None:
        assert time.monotonic() < deadline, "the background count never arrived"
        time.sleep(0.05)
    assert later["count"] == 1_000_000 and later["items"][0]["value"]["n"] == 3
    doc = get(srv, urls["big.json"], limit=200, bytes=4 * 1024 * 1024)
    assert doc["path"] == ["root", "row"] and len(doc["items"]) == 200
    assert doc["count"] is None and doc["count_at_least"] == 200  # its end is far away
    more = get(srv, urls["big.json"], limit=2, cursor=doc["next"])
    assert [i["value"]["n"] for i in more["items"]] == [200, 201]
    # the process's peak memory grows by a window or two, never by the output's size
    assert _peak_rss_kb(srv) - before < 40_000


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "²"}, "limit"),  # a digit to str.isdigit, not to int()
        ({"limit": "9" * 5000}, "limit"),  # beyond int()'s 4,300 digits
        ({"cursor": "a1:0\n"}, "cursor"),
        ({"bytes": str(64 * 1024 * 1024)}, "bytes"),
        ({"cursor": "12"}, "cursor"),  # a JSON cursor names its container
        ({"cursor": "a999999999:0"}, "cursor"),  # past the end
    ],
)
def test_out_of_bounds_parameters_are_refused_with_a_clear_400(
    srv: Server, json_url: str, params: dict[str, str], names: str
) -> None:
    response = httpx.get(srv.url + json_url, params=params, timeout=10)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert names in error["message"]


def test_unknown_job_or_output_is_404(srv: Server) -> None:
    (url,) = finished_outputs(srv, "text").values()
    missing = url.replace("report.txt", "nope.txt")
    assert httpx.get(srv.url + missing, timeout=10).status_code == 404
    assert httpx.get(srv.url + "/api/jobs/abc123/outputs/x.json/preview").status_code == 404


def test_the_preview_needs_the_token_as_downloads_do(tmp_path: Path) -> None:
    config = write_config(tmp_path / "conf", CONFIG, STEPS)
    token = "preview-token-for-tests"
    locked = Server(config, tmp_path / "data", env={"XMLFLOW_API_TOKEN": token}).start()
    try:
        bearer = {"Authorization": f"Bearer {token}"}
        response = httpx.post(
            locked.url + "/upload",
            files={"file": ("b.xml", BOOKS)},
            data={"pipeline": "text"},
            headers=bearer,
        )
        job_url = locked.url + response.json()["jobs"][0]["url"]
        for _ in range(200):
            job = httpx.get(job_url, headers=bearer).json()
            if job["status"] == "succeeded":
                break
            time.sleep(0.05)
        url = locked.url + job["outputs"][0]["url"] + "/preview"
        refused = httpx.get(url)
        assert refused.status_code == 401 and "line 1" not in refused.text
        assert httpx.get(url, headers=bearer).json()["lines"][0] == "line 1: é"
    finally:
        locked.stop()
