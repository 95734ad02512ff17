"""The page in a real browser: Debian's Chromium driven by Playwright (sync API).

No browser is downloaded: ``playwright install`` is never run; the tests use
``/usr/bin/chromium`` (``apt-get install chromium``) and skip when it is missing.
The servers run the pipelines of :data:`BROWSER_CONFIG`, made to be watched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")
from browser_kit import BROWSER_CONFIG, BROWSER_STEPS, DESKTOP, StreamCutter  # noqa: E402
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

CHROMIUM = Path(os.environ.get("XMLFLOW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def suite(pytestconfig: pytest.Config) -> ModuleType:
    """The suite's ``tests/conftest.py`` (``Server``, ``write_config``).

    Conftests outside packages are all named ``conftest``, so ``from conftest import``
    is ambiguous; the plugin manager holds each one under its path.
    """
    module = pytestconfig.pluginmanager.get_plugin(str(Path(__file__).parents[1] / "conftest.py"))
    assert module is not None, "tests/conftest.py was not loaded"
    return module  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def ui_config(tmp_path_factory: pytest.TempPathFactory, suite: ModuleType) -> Path:
    config: Path = suite.write_config(
        tmp_path_factory.mktemp("ui-conf"), BROWSER_CONFIG, BROWSER_STEPS
    )
    return config


@pytest.fixture(scope="session")
def ui_server(
    tmp_path_factory: pytest.TempPathFactory, suite: ModuleType, ui_config: Path
) -> Iterator[Any]:
    """One server for the tests that only upload and watch."""
    root = tmp_path_factory.mktemp("ui-server")
    server = suite.Server(config=ui_config, data_dir=root / "data", env={"XMLFLOW_WORKERS": "6"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_server(tmp_path: Path, suite: ModuleType, ui_config: Path) -> Iterator[Any]:
    """Start servers of the test's own (empty history; free to kill and restart)."""
    servers: list[Any] = []

    def make(**env: str) -> Any:
        data_dir = tmp_path / f"data{len(servers)}"
        servers.append(suite.Server(config=ui_config, data_dir=data_dir, env=env))
        return servers[-1].start()

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def fresh_server(make_server: Any) -> Any:
    return make_server()


# -- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Chromium at {CHROMIUM}, and CI=true: the browser tests must run")
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh desktop-sized page; fails the test on any uncaught JavaScript error."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(15_000)
    expect.set_options(timeout=15_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def stream_cutter(ui_server: Any) -> Iterator[StreamCutter]:
    cutter = StreamCutter(ui_server.port)
    yield cutter
    cutter.close()
