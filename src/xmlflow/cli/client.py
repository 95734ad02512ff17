"""A small client of the xmlflow API (httpx), used by ``xmlflow jobs`` and ``submit``.

Errors come back as :class:`ApiError` carrying the server's own message (the JSON
error body), so the command line shows what the server said, not a status code.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import XmlflowError
from ..models import Event, EventType

if TYPE_CHECKING:
    import httpx  # imported where used: ``xmlflow run`` loads this module, never httpx

DEFAULT_URL = "http://127.0.0.1:5000"
JOBS_PER_STREAM = 100  # /api/events takes the ids in its query: well within a request line
RECONNECTS = 5  # tries in a row without a new event before following gives up


class ApiError(XmlflowError):
    """The server refused a request (or could not be reached); the message says why."""

    code = "api_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    """One server, one connection pool; ``token`` is sent as a bearer token when given."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise ApiError(_error_message(response), status=response.status_code)
        return response

    def list_jobs(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self.request("GET", "/api/jobs", params=params).json()  # type: ignore[no-any-return]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", _job_path(job_id)).json()  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"{_job_path(job_id)}/cancel").json()  # type: ignore[no-any-return]

    def submit(
        self, files: Sequence[Path], pipeline: str | None, options: dict[str, Any]
    ) -> list[str]:
        """Upload ``files`` as one upload (all become jobs, or none do); returns the job ids.

        The files are streamed from disk as they are: the server decides what they hold.
        """
        data: dict[str, str] = {}
        if pipeline is not None:
            data["pipeline"] = pipeline
        if options:
            import orjson

            data["options"] = orjson.dumps(options).decode()
        with contextlib.ExitStack() as stack:
            parts = [
                ("file", (path.name, stack.enter_context(path.open("rb")), "application/xml"))
                for path in files
            ]
            response = self.request("POST", "/api/jobs", files=parts, data=data, timeout=None)
        return [job["id"] for job in response.json()["jobs"]]

    def follow(self, job_ids: Sequence[str]) -> Iterator[Event]:
        """Every event of these jobs, from their first, until each has ended.

        One SSE stream per :data:`JOBS_PER_STREAM` jobs, read one after another (the
        later ones replay what happened meanwhile). A dropped stream is resumed where it
        was with ``Last-Event-ID``: nothing lost, nothing twice.
        """
        for start in range(0, len(job_ids), JOBS_PER_STREAM):
            yield from self._follow_some(list(job_ids[start : start + JOBS_PER_STREAM]))

    def _follow_some(self, job_ids: list[str]) -> Iterator[Event]:
        import httpx

        positions = [0] * len(job_ids)
        ended: set[str] = set()
        failures = 0
        while len(ended) < len(job_ids):
            headers = {"Accept": "text/event-stream"}
            if any(positions):
                headers["Last-Event-ID"] = ".".join(map(str, positions))
            try:
                with self.http.stream(
                    "GET",
                    "/api/events",
                    params=[("job", job_id) for job_id in job_ids],
                    headers=headers,
                    timeout=httpx.Timeout(30, read=60),  # keepalives come every 15 s at most
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise ApiError(_error_message(response), status=response.status_code)
                    for event_id, kind, data in _sse_frames(response.iter_lines()):
                        failures = 0
                        index = job_ids.index(data.pop("job"))
                        positions[index] = int(event_id.split(".")[index])
                        event = Event(job_ids[index], positions[index], EventType(kind), data)
                        if event.type is EventType.END:
                            ended.add(event.job_id)
                        yield event
                reason = "the server closed the stream before the jobs ended"
            except httpx.TransportError as exc:
                reason = str(exc) or type(exc).__name__
            if len(ended) < len(job_ids):
                failures += 1
                if failures > RECONNECTS:
                    raise ApiError(f"lost the stream from {self.url}: {reason}")
                time.sleep(min(0.2 * 2**failures, 5))

    def download(
        self, job_id: str, out_dir: Path, *, as_zip: bool = False, taken: set[Path] | None = None
    ) -> list[Path]:
        """Save the job's outputs (or one zip of them) in ``out_dir``; returns the files.

        ``taken``: the files this command already wrote. An output of the same name
        (``data.xml`` from two folders) gets the job's id in its name instead of
        replacing the other, as ``xmlflow run`` does.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        if as_zip:
            zip_name = _local_name(f"{job_id}.zip")
            return [self._save(f"{_job_path(job_id)}/outputs.zip", out_dir / zip_name)]
        outputs = self.request("GET", f"{_job_path(job_id)}/outputs").json()["outputs"]
        if not outputs:
            job = self.job(job_id)
            raise ApiError(f"job {job_id} is {job['status']} and has no outputs")
        # ``url`` is already percent-encoded by the server: used as given, never re-encoded
        saved = []
        for output in outputs:
            target = out_dir / _local_name(output["name"])
            if taken is not None:
                if target in taken:
                    target = target.with_name(f"{target.stem}-{job_id[:8]}{target.suffix}")
                taken.add(target)
            saved.append(self._save(output["url"], target))
        return saved

    def _save(self, path: str, target: Path) -> Path:
        """Stream one download to a temporary file, renamed only once it is complete."""
        import httpx

        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as f, self.http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(_error_message(response), status=response.status_code)
                for chunk in response.iter_bytes():
                    f.write(chunk)
        except BaseException as exc:
            os.unlink(tmp)
            if isinstance(exc, httpx.TransportError):
                raise ApiError(f"download from {self.url}{path} failed: {exc}") from exc
            raise
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp's 0600 is for the partial file only
        os.replace(tmp, target)
        return target


def umask() -> int:
    """The process's umask (read by setting it, so set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sse_frames(lines: Iterator[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of each complete frame; comments (keepalives) and retries skipped."""
    import orjson

    event_id, kind, data = "", "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event_id, kind, orjson.loads("\n".join(data))
            kind, data = "message", []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "event":
            kind = value
        elif name == "data":
            data.append(value)


def _job_path(job_id: str) -> str:
    """The job's API path; the id is encoded, so a mistyped one is a 404, never another path."""
    return f"/api/jobs/{quote(job_id, safe='')}"


def _local_name(name: str) -> str:
    """A server's output name as a file name in the chosen folder, never a path out of it."""
    local = Path(name.replace("\\", "/")).name
    if local in ("", ".", "..") or local.startswith("."):
        raise ApiError(f"the server offered an output name that is not a file name: {name!r}")
    return local


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['message']} ({response.status_code} {error['code']})"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.reason_phrase} from {response.url}"
