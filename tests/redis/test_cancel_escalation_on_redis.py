"""``tests/integration/test_cancel_escalation.py`` again, in Redis mode: the pipeline runs
in an RQ work-horse's child, and the same escalation stops it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ..conftest import Server, write_config
from ..integration.test_cancel_escalation import (
    STEP_TIMEOUT,
    STUCK_CONFIG,
    STUCK_STEPS,
    test_a_lone_surrogate_in_a_message_or_error_is_replaced,
    test_cancel_stops_a_step_stuck_in_c,
    test_the_step_timeout_stops_a_step_stuck_in_c,
)
from .conftest import Cluster, RedisServer

pytestmark = pytest.mark.redis

__all__ = [
    "test_a_lone_surrogate_in_a_message_or_error_is_replaced",
    "test_cancel_stops_a_step_stuck_in_c",
    "test_the_step_timeout_stops_a_step_stuck_in_c",
]


@pytest.fixture(scope="module")
def stuck(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("stuck-redis")
    redis.Redis.from_url(redis_server.url).flushdb()
    write_config(root / "conf", STUCK_CONFIG, STUCK_STEPS)
    cluster = Cluster(root, redis_server, extra_env={"XMLFLOW_STEP_TIMEOUT": str(STEP_TIMEOUT)})
    web = cluster.web()
    cluster.worker(), cluster.worker()
    yield web
    cluster.stop()
