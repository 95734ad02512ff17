"""The hostile-input suites again, in Redis mode: one web process, two RQ workers.

The tests are the same functions as in ``tests/robustness``; only the server they get
differs. Embedded-only cases (a small tmpfs under the whole data folder, a job's
process killed by its own step) stay there.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from ..conftest import Server, write_config
from ..robustness import test_corpus_http, test_hostile_uploads
from ..test_xml_corpus import canaries, listeners
from .conftest import Cluster, RedisServer, _redis_binary_or_skip

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


@contextmanager
def _cluster(root: Path, config: str, env: dict[str, str]) -> Iterator[Server]:
    """A Redis of its own (the two suites' workers must not take each other's jobs), one
    web process and two workers."""
    _redis_binary_or_skip()
    own_redis = RedisServer(root / "redis").start()
    write_config(root / "conf", config)
    # The default lease: the fault tests' 4 s lease is too short for a machine this busy.
    cluster = Cluster(root, own_redis, extra_env={**env, "XMLFLOW_LEASE_SECONDS": "30"})
    try:
        cluster.web()
        cluster.worker(), cluster.worker()
        yield cluster.webs[0]
    finally:
        cluster.stop()
        own_redis.stop()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile-redis")
    config, env = test_hostile_uploads.HOSTILE_CONFIG, test_hostile_uploads.HOSTILE_ENV
    with _cluster(root, config, env) as server:
        yield server


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("corpus-redis")
    with _cluster(root, test_corpus_http.CORPUS_CONFIG, test_corpus_http.CORPUS_ENV) as server:
        yield server
