"""Broken and hostile uploads through the HTTP API: each ends clearly, nothing is left behind."""

from __future__ import annotations

import concurrent.futures
import gzip
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from ..conftest import Server, write_config

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\0" * 40


HOSTILE_CONFIG = """
    PROCESSING_STEPS = [
        {"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"},
        {"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"},
    ]
"""
HOSTILE_ENV = {"XMLFLOW_MAX_UPLOAD_MB": "2", "XMLFLOW_WORKERS": "3", "XMLFLOW_SSE_KEEPALIVE": "0.5"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded server; ``tests/redis`` runs this module again on a Redis cluster."""
    root = tmp_path_factory.mktemp("hostile")
    config = write_config(root / "conf", HOSTILE_CONFIG)
    server = Server(config=config, data_dir=root / "data", env=dict(HOSTILE_ENV)).start()
    yield server
    server.stop()


def ends_failed(server: Server, name: str, body: bytes) -> str:
    (job,) = server.upload((name, body))
    end = server.events(job["id"], timeout=60)[-1].data
    assert end["status"] == "failed", end
    assert end["outputs"] == []
    assert not (server.data_dir / "jobs" / job["id"] / "source").exists()
    assert not (server.data_dir / "jobs" / job["id"] / "out").exists()
    return str(end["error"])


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("empty.xml", b"", "empty"),
        ("junk.xml", bytes(range(256)) * 8, "line 1, column"),
        ("image.xml", PNG, "line 1, column"),
        ("archive.xml", gzip.compress(b"<a>1</a>" * 100, mtime=0), "line 1, column"),
        ("truncated.xml", b"<records><record id='1'><name>Ada</name></record><record>", "line 1"),
        ("deep.xml", b"<a>" * 10_000 + b"</a>" * 10_000, "line 1, column"),
    ],
)
def test_broken_input_fails_with_a_clear_error(
    hostile: Server, name: str, body: bytes, expected: str
) -> None:
    error = ends_failed(hostile, name, body)
    assert expected in error.lower() if expected == "empty" else expected in error


def test_many_attributes_do_not_tie_up_a_worker(hostile: Server) -> None:
    attrs = b" ".join(b'a%d="%d"' % (i, i) for i in range(100_000))
    started = time.monotonic()
    error = ends_failed(hostile, "attrs.xml", b"<r " + attrs + b"/>")
    assert "attributes" in error
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("../../../etc/passwd.xml", "passwd.xml"),
        ("..\\..\\boot.ini.xml", "boot.ini.xml"),
        ("rtl\u202egnp.xml", "rtlgnp.xml"),
        ("nul\x00byte.xml", "nul%00byte.xml"),  # httpx sends NUL percent-encoded
        ("x" * 4096 + ".xml", "x" * 196 + ".xml"),  # shortened, the extension kept
        ("...", "upload.xml"),
    ],
)
def test_file_names_are_never_trusted(hostile: Server, sent: str, shown: str) -> None:
    (job,) = hostile.upload((sent, b"<a>1</a>"))
    state = hostile.wait_finished(job["id"])
    assert state["filename"] == shown
    assert state["status"] == "succeeded"
    assert not (hostile.data_dir.parent / "etc").exists()


def test_two_uploads_of_the_same_name_at_once_stay_apart(hostile: Server) -> None:
    bodies = [b"<doc><n>first</n></doc>", b"<doc><n>second</n></doc>"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        jobs = list(pool.map(lambda b: hostile.upload(("same.xml", b))[0], bodies))
    results = []
    for job in jobs:
        end = hostile.events(job["id"])[-1].data
        results.append(httpx.get(hostile.url + end["outputs"][0]["url"]).json()["doc"]["n"])
    assert results == ["first", "second"]


def test_chunked_upload_over_the_limit_stops_near_the_limit(hostile: Server) -> None:
    def body() -> Iterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.xml"\r\n\r\n'
        for _ in range(100):  # 100 MiB against a 2 MiB limit
            yield b"x" * (1 << 20)
        yield b"\r\n--B--\r\n"

    try:
        response = httpx.post(
            f"{hostile.url}/upload",
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=B"},
            timeout=60,
        )
        assert response.status_code == 413
    except httpx.TransportError:
        pass  # the server may close the connection on us once it has said 413
    assert list((hostile.data_dir / "incoming").iterdir()) == []
    assert httpx.get(hostile.url + "/api/jobs?limit=1").status_code == 200


def test_client_gone_mid_upload_leaves_no_file(hostile: Server) -> None:
    head = (
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
        b"Content-Type: multipart/form-data; boundary=B\r\n\r\n"
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="cut.xml"\r\n\r\n'
    )
    with socket.create_connection(("127.0.0.1", hostile.port)) as conn:
        conn.sendall(head + b"<a>" + b"x" * 200_000)
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while list((hostile.data_dir / "incoming").iterdir()):
        assert time.monotonic() < deadline, "the half upload was left on disk"
        time.sleep(0.1)
    assert httpx.get(hostile.url + "/api/jobs?limit=1").status_code == 200


def _open_streams(server: Server) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith("xmlflow_open_streams "):
            return float(line.split()[1])
    raise AssertionError("no xmlflow_open_streams metric")


def test_client_gone_mid_stream_frees_its_stream(hostile: Server) -> None:
    jobs = hostile.upload(*[(f"{i}.xml", b"<a/>" * 5) for i in range(3)])
    (slow,) = hostile.upload(("slow.xml", b"<a/>"))
    hostile.events(slow["id"])
    sockets = []
    for job in jobs:
        conn = socket.create_connection(("127.0.0.1", hostile.port))
        conn.sendall(f"GET /stream/{job['id']}?x HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sockets.append(conn)
    for conn in sockets:
        conn.close()
    deadline = time.monotonic() + 10
    while _open_streams(hostile) > 0:
        assert time.monotonic() < deadline, "streams of gone clients were never freed"
        time.sleep(0.2)
