"""kill -9 in Redis mode: the next process to start removes only what no live one owns."""

from __future__ import annotations

import os
import time

import pytest

from ..robustness.test_leftovers import kill_mid_upload
from .conftest import Cluster

pytestmark = pytest.mark.redis


def test_redis_mode_removes_an_upload_no_live_process_holds(cluster: Cluster) -> None:
    """A web process killed mid-upload in Redis mode: its file is fresh at once (another
    process might still be receiving it), and removed by the next process that starts
    once it is older than STALE_AFTER (aged here with utime rather than waited for)."""
    from xmlflow.leftovers import STALE_AFTER

    web = cluster.web()
    part = kill_mid_upload(web)
    web.start()  # too fresh to be sure: kept
    assert part.exists()
    old = time.time() - STALE_AFTER - 1
    os.utime(part, (old, old))
    cluster.web()  # any process starting (a worker too) removes it now
    assert not part.exists()
