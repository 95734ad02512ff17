"""Compressed uploads on Redis: a zip's jobs keep their group in Redis's records, and an
RQ worker reads a .gz through the same caps as the web process (set the same in both)."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from ..conftest import write_config
from .conftest import Cluster, RedisServer

pytestmark = pytest.mark.redis

CONFIG = """
    PROCESSING_STEPS = [{"id": "process_xml", "name": "Convert",
                         "module": "run_xml_processing_step"}]
"""


@pytest.fixture
def convert_cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    redis.Redis.from_url(redis_server.url).flushdb()
    write_config(tmp_path / "conf", CONFIG)
    caps = {"XMLFLOW_MAX_EXPANSION_RATIO": "100000", "XMLFLOW_MAX_DECOMPRESSED_MB": "5"}
    cluster = Cluster(tmp_path, redis_server, extra_env=caps)
    yield cluster
    cluster.stop()
    redis.Redis.from_url(redis_server.url).flushdb()


def test_zip_groups_and_gzip_caps_on_redis(convert_cluster: Cluster) -> None:
    web = convert_cluster.web()
    convert_cluster.worker()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.xml", b"<a><n>1</n></a>")
        archive.writestr("b.xml", b"<b><n>2</n></b>")
    # 6 MB inside: past the 4 MB the web process probes, so the worker's reading stops it
    wide = gzip.compress(b"<w>" + b" " * (6 * 1024 * 1024) + b"</w>")
    response = httpx.post(
        web.url + "/api/jobs",
        files=[
            ("file", ("pair.zip", buffer.getvalue(), "application/zip")),
            ("file", ("wide.xml.gz", wide, "application/gzip")),
        ],
        timeout=30,
    )
    assert response.status_code == 202, response.text
    jobs = [web.wait_finished(j["id"]) for j in response.json()["jobs"]]
    by_name = {j["filename"]: j for j in jobs}
    assert {n: j["group"] for n, j in by_name.items()} == {
        "a.xml": "pair.zip",
        "b.xml": "pair.zip",
        "wide.xml.gz": None,
    }
    for name, expected in (("a.xml", {"a": {"n": "1"}}), ("b.xml", {"b": {"n": "2"}})):
        assert by_name[name]["status"] == "succeeded", by_name[name]
        (output,) = by_name[name]["outputs"]
        assert json.loads(httpx.get(web.url + output["url"], timeout=10).content) == expected
    failed = by_name["wide.xml.gz"]
    assert failed["status"] == "failed" and failed["outputs"] == []
    assert "wide.xml.gz expands to more than 5.0 MB" in failed["error"]
    assert "XMLFLOW_MAX_DECOMPRESSED_MB" in failed["error"]
