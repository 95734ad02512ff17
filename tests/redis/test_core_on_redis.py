"""The integration suite (``tests/integration/test_core.py``) again, in Redis mode.

Every test there that uses the shared ``server`` fixture runs here too, against the
``server`` of ``tests/redis/conftest.py``: a web process and two ``xmlflow worker``
processes on a real redis-server. Tests of embedded-only behaviour (a killed server
marks its running jobs interrupted, one process per data folder) stay there.
"""

from __future__ import annotations

import inspect

import pytest

from ..integration import test_core

pytestmark = pytest.mark.redis

SHARED = [
    name
    for name, func in vars(test_core).items()
    if name.startswith("test_") and "server" in inspect.signature(func).parameters
]
globals().update({name: getattr(test_core, name) for name in SHARED})
