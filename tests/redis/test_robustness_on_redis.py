"""The hostile-input suites again, in Redis mode: one web process, two RQ workers.

The tests are the same functions as in ``tests/robustness``; only the server they get
differs. Embedded-only cases (a small tmpfs under the whole data folder, a job's
process killed by its own step) stay there.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from ..conftest import Server, write_config
from ..robustness import test_corpus_http, test_hostile_uploads
from ..test_xml_corpus import canaries, listeners
from .conftest import Cluster, RedisServer

pytestmark = pytest.mark.redis


def _tests_of(module: ModuleType, fixture: str) -> dict[str, object]:
    return {
        name: func
        for name, func in vars(module).items()
        if name.startswith("test_") and fixture in inspect.signature(func).parameters
    }


globals().update(_tests_of(test_hostile_uploads, "hostile"))
globals().update(_tests_of(test_corpus_http, "corpus_server"))
__all__ = ["canaries", "listeners"]


def _cluster(root: Path, redis_server: RedisServer, config: str, env: dict[str, str]) -> Cluster:
    redis.Redis.from_url(redis_server.url).flushdb()
    write_config(root / "conf", config)
    # The default lease: the fault tests' 4 s lease is too short for a machine this busy.
    cluster = Cluster(root, redis_server, extra_env={**env, "XMLFLOW_LEASE_SECONDS": "30"})
    cluster.web()
    cluster.worker(), cluster.worker()
    return cluster


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile-redis")
    cluster = _cluster(
        root, redis_server, test_hostile_uploads.HOSTILE_CONFIG, test_hostile_uploads.HOSTILE_ENV
    )
    yield cluster.webs[0]
    cluster.stop()


@pytest.fixture(scope="module")
def corpus_server(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, corpus: Path
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("corpus-redis")
    cluster = _cluster(
        root, redis_server, test_corpus_http.CORPUS_CONFIG, test_corpus_http.CORPUS_ENV
    )
    yield cluster.webs[0]
    cluster.stop()
