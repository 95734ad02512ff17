"""Redis mode asked for where the Redis extra is not installed: a one-line remedy.

The test's Python is given a ``sitecustomize`` that makes ``redis`` unimportable, as on
a machine where only ``make run`` (no ``[redis]`` extra) was installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import free_port

BLOCK = """
import sys
sys.modules["redis"] = None  # `import redis` raises ImportError, as when not installed
"""


@pytest.mark.parametrize("command", [["serve", "--port", "{port}"], ["worker"]])
def test_redis_url_without_the_extra_says_what_to_install(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCK)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "XMLFLOW_REDIS_URL": "redis://127.0.0.1:1/0",
        "XMLFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    argv = [c.format(port=free_port()) for c in command]
    result = subprocess.run(
        [sys.executable, "-m", "xmlflow", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "pip install 'xmlflow[redis]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
