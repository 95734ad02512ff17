"""What the browser tests share: the pipelines they run, page helpers, a stream-cutting proxy.

A module of its own (not ``conftest``) so that tests can import it by name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Locator, Page, Request, expect

DESKTOP = {"width": 1440, "height": 900}
NARROW = {"width": 360, "height": 780}
# The README's pictures are refreshed only when asked (XMLFLOW_UPDATE_SCREENSHOTS=1), so a
# test run leaves the working tree as it found it; otherwise they go to a scratch folder.
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("XMLFLOW_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "xmlflow-screenshots"
)

# The built-in XML converter is the default pipeline's first step once it exists; until
# then the tests use the ``custom`` pipeline for outputs and a stand-in for ``Convert``.
HAVE_PROCESS_XML = importlib.util.find_spec("xmlflow.steps.process_xml") is not None
CONVERT = (
    '{"id": "process_xml", "name": "Convert", "module": "run_xml_processing_step"}'
    if HAVE_PROCESS_XML
    else '{"id": "count", "name": "Convert", "module": "run_count"}'
)
BROWSER_CONFIG = f"""
    CONVERT = {CONVERT}
    PIPELINES = {{
        "default": [CONVERT, {{"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"}}],
        "custom": [
            {{"id": "shout", "name": "Shout", "module": "run_shout", "options": {{"suffix": "!"}}}},
        ],
        "paced": [
            {{"id": "count", "name": "Count records", "module": "run_count",
             "options": {{"seconds": 1.5}}}},
            {{"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step", "delay": 0.5}},
        ],
        "slow": [
            {{"id": "count", "name": "Count records", "module": "run_count",
             "options": {{"seconds": 30}}}},
            {{"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"}},
        ],
        "raising": [
            {{"id": "explode", "name": "Explode", "module": "run_explode"}},
            {{"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"}},
        ],
        "strict": [
            {{"id": "strict", "name": "Check the XML", "module": "run_strict"}},
            {{"id": "cleanup", "name": "Clean up", "module": "run_cleanup_step"}},
        ],
    }}
"""
BROWSER_STEPS = {
    "shout": """
        def run_shout(ctx):
            text = ctx.input.read_text()
            with ctx.open_output(ctx.stem + ".upper.txt", "w") as out:
                out.write(text.upper() + ctx.options["suffix"])
    """,
    "count": """
        import time

        def run_count(ctx):
            # Reports progress ten times a second for `seconds`, like a long conversion.
            seconds = ctx.options.get("seconds", 0.5)
            records = 1000
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                if ctx.cancelled:
                    return
                done = min(elapsed / seconds, 1.0)
                ctx.progress(done, f"{int(done * records)} of {records} records")
                time.sleep(0.1)
            ctx.progress(1.0, f"{records} of {records} records")
    """,
    "explode": """
        def run_explode(ctx):
            raise RuntimeError("the disk of records is on fire")
    """,
    "strict": """
        from xmlflow.errors import XmlError

        def run_strict(ctx):
            raise XmlError("mismatched tag: expected </item>, found </items>", line=3, column=7)
    """,
}


# -- driving the page ------------------------------------------------------------------------

# Records every SSE event the page receives, per stream URL and job, before the page's own
# listeners. On a several-job stream the id is every job's position: the job's own is kept.
RECORD_EVENTS = """
window.__sse = [];
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(url, init) {
    super(url, init);
    const jobs = new URL(url, location.href).searchParams.getAll("job");
    for (const type of ["job", "step", "progress", "end"]) {
      this.addEventListener(type, (e) => {
        const job = JSON.parse(e.data).job ?? null;
        const index = jobs.indexOf(job);
        const id = Number(index < 0 ? e.lastEventId : e.lastEventId.split(".")[index]);
        window.__sse.push({url, job, type, id});
      });
    }
  }
};
"""
STREAM_PATHS = ("/api/events", "/stream/")


class StreamCount:
    """The page's stream requests open at once, seen from Playwright's request events."""

    def __init__(self, page: Page) -> None:
        self.open: set[Request] = set()
        self.most = 0
        self.urls: list[str] = []
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)

    def _ended(self, request: Request) -> None:
        self.open.discard(request)

    def _started(self, request: Request) -> None:
        if any(path in request.url for path in STREAM_PATHS):
            self.urls.append(request.url)
            self.open.add(request)
            self.most = max(self.most, len(self.open))


def open_page(page: Page, url: str) -> None:
    """Load the page (recording its SSE events) and wait until the history is shown."""
    page.add_init_script(RECORD_EVENTS)
    page.goto(url)
    expect(page.locator("#jobs-loading")).to_be_hidden()


def upload(
    page: Page, *files: tuple[str, bytes], pipeline: str | None = None, new_jobs: bool = True
) -> None:
    """Pick files in the file chooser, as a person would (the upload starts on choosing).

    With ``new_jobs``, waits until each file's card is on the page.
    """
    if pipeline:
        page.get_by_label("Pipeline", exact=True).select_option(pipeline)
    cards_before = page.locator(".job").count()
    page.locator("#file-input").set_input_files(
        [{"name": name, "mimeType": "application/xml", "buffer": body} for name, body in files]
    )
    if new_jobs:
        expect(page.locator(".job")).to_have_count(cards_before + len(files))


def card(page: Page, filename: str) -> Locator:
    return page.locator(".job").filter(has=page.locator(".job-name", has_text=filename))


def step(job: Locator, step_id: str) -> Locator:
    return job.locator(f'.step[data-step-id="{step_id}"]')


def received_event_ids(page: Page, job_id: str | None) -> list[int]:
    """The ids of the events the page received for a job, in order, over all its streams."""
    ids: list[int] = page.evaluate(
        "id => window.__sse.filter(e => e.job === id || e.url.includes(`/${id}`)).map(e => e.id)",
        job_id,
    )
    assert ids, f"no event was received for job {job_id}"
    return ids


def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Save ``<SCREENSHOTS>/<name>.png``: the viewport, or the whole page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=full_page, animations="disabled", caret="hide")
    assert path.stat().st_size > 1000, f"{path} is not a picture"
    return path


# -- a proxy that can cut streams ------------------------------------------------------------


class _Pair:
    """A proxied connection: the browser's socket and the server's; closed by the last pump."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self._pumps = 2
        self._lock = threading.Lock()

    def done(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._pumps -= 1
            last = self._pumps == 0
        if last:
            self.client.close()
            self.upstream.close()


class StreamCutter:
    """A TCP proxy in front of a server that can drop every open SSE connection at once.

    It also records where each stream request resumed each job (``Last-Event-ID``, or the
    page's ``?lastEventId=``), so a test can see that nothing started over.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.resumed_from: list[dict[str, int]] = []  # per stream request: job -> resumed after
        self._streams: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_streams(self, wait: float = 10.0) -> int:
        """Drop every open stream connection; waits up to ``wait`` s for one to be open.

        A card can show a step's message from a snapshot (the upload's answer, a
        ``GET /api/jobs/<id>``) before the page has opened its stream, so "the page shows
        progress" does not mean a stream is open yet.
        """
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                if self._streams or time.monotonic() > deadline:
                    streams, self._streams = self._streams, set()
                    break
            time.sleep(0.02)
        for sock in streams:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(streams)

    def close(self) -> None:
        self.listener.close()
        self.cut_streams(wait=0)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            threading.Thread(target=self._pump, args=(pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, False), daemon=True).start()

    def _pump(self, pair: _Pair, from_browser: bool) -> None:
        source, target = (
            (pair.client, pair.upstream) if from_browser else (pair.upstream, pair.client)
        )
        try:
            while chunk := source.recv(65536):
                if from_browser:
                    self._inspect(chunk, source)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            pair.done()

    def _inspect(self, request: bytes, client: socket.socket) -> None:
        """A request on this connection: remember stream connections and their resume ids."""
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        if not head.startswith(tuple(f"GET {path}" for path in STREAM_PATHS)):
            return
        with self._lock:
            self._streams.add(client)
        target = urlsplit(head.split(" ", 2)[1])
        query = parse_qs(target.query)
        header = None
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "last-event-id":
                header = value.strip()
        # EventSource's own reconnection sends the header; the page's first request the query.
        resumed = header or query.get("lastEventId", [""])[0]
        jobs = query.get("job") or [target.path.rsplit("/", 1)[-1]]
        positions = resumed.split(".") if resumed else ["0"] * len(jobs)
        self.resumed_from.append({job: int(p) for job, p in zip(jobs, positions, strict=True)})
