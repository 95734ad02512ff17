"""Several jobs on one stream in Redis mode: gunicorn (gevent) web process, RQ workers.

The same checks as the embedded suite's (``tests/integration/test_stream_many.py``):
each job's events on the shared stream are its own stream's, a ``Last-Event-ID``
resumes every job, and one ``requests.Session`` gets three streams in a row.
"""

from __future__ import annotations

import pytest

from ..integration.test_stream_many import (
    assert_same_as_own_streams,
    read_many,
    stream_url,
    three_streams_on_one_session,
    upload_jobs,
)
from .conftest import Cluster
from .test_faults import assert_sigterm_ends_streams

pytestmark = pytest.mark.redis


def test_one_stream_for_several_jobs_resumes_and_closes_on_gunicorn(cluster: Cluster) -> None:
    web = cluster.web(web_workers=1)
    cluster.worker(), cluster.worker()
    job_ids = upload_jobs(web, paced=2, quick=2)
    first = read_many(web, job_ids, stop_after=5)
    rest = read_many(web, job_ids, last_event_id=first[-1][0])
    assert_same_as_own_streams(web, job_ids, first + rest)
    assert sum(type_ == "end" for _, type_, _ in first + rest) == len(job_ids)
    assert all(web.job(j)["status"] == "succeeded" for j in job_ids)


def test_three_stream_requests_in_a_row_on_one_requests_session_on_gunicorn(
    cluster: Cluster,
) -> None:
    web = cluster.web(web_workers=1)
    cluster.worker()
    job_ids = upload_jobs(web, paced=1, quick=1)
    for job_id in job_ids:
        web.wait_finished(job_id)
    three_streams_on_one_session(web, job_ids)


def test_a_live_job_followed_from_beyond_its_last_event_still_ends(cluster: Cluster) -> None:
    web = cluster.web(web_workers=1)
    cluster.worker()
    [job_id] = upload_jobs(web, paced=1, quick=0)
    events = read_many(web, [job_id], last_event_id="999")
    assert events[-1][1] == "end"
    assert web.job(job_id)["status"] == "succeeded"


@pytest.mark.parametrize("web_workers", [None, 1], ids=["werkzeug", "gunicorn"])
def test_sigterm_ends_several_job_streams_promptly(
    cluster: Cluster, web_workers: int | None
) -> None:
    """Each job's pump ends with the event log, and so the stream: no wait for keepalives."""
    web = cluster.web(web_workers)  # no worker: the jobs stay queued, the streams open
    job_ids = upload_jobs(web, paced=0, quick=3)
    assert_sigterm_ends_streams(web, [stream_url(web, job_ids)] * 3)
