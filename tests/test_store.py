"""What only the embedded store (SQLite) does; the rest of what it shares with the Redis
store is in ``test_store_contract.py``."""

from __future__ import annotations

import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest

from xmlflow.backends.sqlite import SqliteListeners, SqliteStore, open_sqlite
from xmlflow.models import MAX_EVENT_BYTES, TRUNCATED_NOTE, bounded_data

from .test_store_contract import new_job


@pytest.fixture
def sqlite(tmp_path: Path) -> tuple[SqliteStore, SqliteListeners]:
    return open_sqlite(tmp_path / "db.sqlite")


def test_listeners_free_what_they_held(sqlite: tuple[SqliteStore, SqliteListeners]) -> None:
    store, listeners = sqlite
    store.create(new_job())

    def listen_once() -> None:
        with closing(listeners.listen("a1", 1, 0.3)) as batches:
            next(batches)

    threads = [threading.Thread(target=listen_once) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    assert listeners.count() == 5
    for t in threads:
        t.join()
    assert listeners.count() == 0


@pytest.mark.parametrize(
    "data",
    [
        {
            "index": 0,
            "status": "failed",
            "errors": [{"line": i, "text": "x" * 80} for i in range(10**5)],
        },
        {"index": 0, "message": {str(i): "y" * 50 for i in range(10**5)}},
        {"index": 0, "status": "failed", "nested": [[["z" * 1000] * 100] * 100] * 10},
    ],
    ids=["long-list", "many-keys", "nested"],
)
def test_any_event_data_is_cut_to_the_cap_keeping_what_the_record_needs(
    data: dict[str, Any],
) -> None:
    bounded = bounded_data(data)
    assert len(orjson.dumps(bounded)) <= MAX_EVENT_BYTES
    assert bounded["truncated"] == TRUNCATED_NOTE and bounded["index"] == 0
    assert bounded.get("status") == data.get("status")
    assert bounded_data({"index": 1, "message": "short"}) == {"index": 1, "message": "short"}
