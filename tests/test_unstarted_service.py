"""A service that was built but not started runs nothing: ``create_app(start=False)``.

Tests and tools build an app to look at it (its routes, its OpenAPI document) without
taking over the data folder; the embedded executor's runner threads start with the
service, not with its constructor, so such an app accepts an upload and leaves it
queued for whichever process starts on that folder.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from xmlflow.app import create_app

from .conftest import TEST_STEPS, write_config


def test_an_app_that_was_not_started_leaves_its_jobs_queued(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "conf",
        'PROCESSING_STEPS = [{"id": "shout", "name": "Shout", "module": "run_shout"}]',
        TEST_STEPS,
    )
    app = create_app({"data_dir": tmp_path / "data", "config_path": config}, start=False)
    try:
        client = app.test_client()
        response = client.post(
            "/api/jobs",
            data={"file": (io.BytesIO(b"<a>1</a>"), "a.xml")},
            content_type="multipart/form-data",
        )
        assert response.status_code == 202, response.json
        job_id = response.json["jobs"][0]["id"]
        time.sleep(0.3)  # a started runner would have claimed it by now
        assert client.get(f"/api/jobs/{job_id}").json["status"] == "queued"
    finally:
        app.extensions["xmlflow"].close()
