"""A web process of Redis mode stopping while streams are open (the embedded suite's
``tests/test_serve_shutdown.py``): every stream ends at once and cleanly, saying the
server is going away, whether its job runs on a worker or waits in the queue; the
client resumes on another web process, and the jobs run on."""

from __future__ import annotations

import re

import pytest

from ..test_serve_shutdown import GOING_AWAY, RawStream, running_and_queued, stop_with_streams_open
from .conftest import Cluster

pytestmark = pytest.mark.redis


def test_sigterm_ends_every_stream_at_once_and_another_web_process_resumes(
    cluster: Cluster,
) -> None:
    web = cluster.web(web_workers=1)
    cluster.worker()  # one job at a time: the second waits in the queue
    running, queued = running_and_queued(web, slow="long")
    streams = stop_with_streams_open(web, running, queued)
    for stream in streams:  # the jobs are the workers': no end here, only the web's going
        assert stream.text.endswith(GOING_AWAY + "\n\n"), (stream.url, stream.text)

    other = cluster.web(web_workers=1)
    on_queued = streams[1]
    resumed = RawStream(
        f"{other.url}/stream/{queued}", headers={"Last-Event-ID": on_queued.last_id}
    ).start()
    resumed.wait_ended(30)
    assert resumed.error is None, resumed.error
    assert "event: end" in resumed.text and '"succeeded"' in resumed.text, resumed.text
    first = int(re.findall(r"^id: (\d+)$", resumed.text, re.MULTILINE)[0])
    assert first == int(on_queued.last_id) + 1
