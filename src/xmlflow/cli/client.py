"""A small client of the xmlflow API (httpx), used by ``xmlflow jobs`` and ``submit``.

Errors come back as :class:`ApiError` carrying the server's own message (the JSON
error body), so the command line shows what the server said, not a status code. What
is not xmlflow's (a refused connection, one cut short, another kind of server at the
address, a body that is not xmlflow's JSON) is an :class:`ApiError` too, with one line
saying which: never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import XmlflowError
from ..models import Event, EventType

if TYPE_CHECKING:
    import httpx  # imported where used: ``xmlflow run`` loads this module, never httpx

DEFAULT_URL = "http://127.0.0.1:5000"
TOKEN_ENV = "XMLFLOW_API_TOKEN"  # where ``submit`` and ``jobs`` read the token when not given
JOBS_PER_STREAM = 100  # /api/events takes the ids in its query: well within a request line
RECONNECTS = 5  # tries in a row without a new event before following gives up


class ApiError(XmlflowError):
    """The server refused a request (or could not be reached); the message says why."""

    code = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reply: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=(reply or {}).get("details"))
        self.status = status
        self.reply = reply  # the server's ``error`` object; None when it was not xmlflow's

    @property
    def about_a_file(self) -> bool:
        """The refusal names an input file (a zip with no XML, a damaged file) rather than
        the pipeline or an option."""
        return isinstance(self.details, dict) and "file" in self.details

    @property
    def upload_limit(self) -> int | None:
        """The files one upload may hold, when this is the 413 saying the upload had more
        (``XMLFLOW_MAX_UPLOAD_FILES``). Servers before ``details.limit`` only said it in
        words: read from those."""
        if self.status != 413 or "XMLFLOW_MAX_UPLOAD_FILES" not in self.message:
            return None
        limit = self.details.get("limit") if isinstance(self.details, dict) else None
        if isinstance(limit, int):
            return limit
        said = re.search(r"more than (\d+) files", self.message)
        return int(said.group(1)) if said else None


@dataclass(frozen=True)
class UploadRoom:
    """What the server's ``/api/health`` says about uploads; None where it says nothing."""

    per_upload: int | None  # files one upload may hold (XMLFLOW_MAX_UPLOAD_FILES)
    queued: int | None  # jobs waiting now
    max_queued: int | None  # jobs that may wait (XMLFLOW_MAX_QUEUED)


class ApiClient:
    """One server, one connection pool; ``token`` is sent as a bearer token when given."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        import httpx

        self.url = url.rstrip("/")
        self.token = token
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
            raise ApiError(self._broken(exc)) from exc
        if response.status_code >= 400:
            raise self._refused(response)
        return response

    def request_json(self, method: str, path: str, key: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object of a successful answer, which must have ``key``: anything else
        (an HTML page, a redirect, another API's JSON) is not an xmlflow server's."""
        response = self.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or key not in body:
            raise ApiError(self._not_xmlflow(response))
        return body

    def list_jobs(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self.request_json("GET", "/api/jobs", "jobs", params=params)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request_json("GET", _job_path(job_id), "steps")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request_json("POST", f"{_job_path(job_id)}/cancel", "status")

    def upload_room(self) -> UploadRoom:
        """The upload limits ``/api/health`` reports (public, and answered with the checks
        even when one failed, as a 503). A server that does not report them (an older
        one, or a proxy in front) gives an empty answer: a 413 tells the limit instead."""
        import httpx

        try:
            response = self.http.get("/api/health")
            queue = response.json()["checks"]["queue"]
        except httpx.TransportError as exc:
            raise ApiError(self._broken(exc)) from exc
        except (ValueError, KeyError, TypeError):
            return UploadRoom(None, None, None)

        def number(key: str) -> int | None:
            value = queue.get(key) if isinstance(queue, dict) else None
            return value if isinstance(value, int) else None

        return UploadRoom(number("max_upload_files"), number("queued"), number("max_queued"))

    def _refused(self, response: httpx.Response) -> ApiError:
        """The server's error, as it said it; a 401 says how this command line sends a token."""
        try:
            error = response.json()["error"]
            message, code = str(error["message"]), str(error["code"])
        except (ValueError, KeyError, TypeError):
            return ApiError(self._not_xmlflow(response), status=response.status_code)
        if response.status_code == 401:
            message = (
                f"the server refused the API token given (--token or {TOKEN_ENV})"
                if self.token
                else f"this server needs its API token: pass --token TOKEN or set {TOKEN_ENV}"
            )
        return ApiError(
            f"{message} ({response.status_code} {code})",
            status=response.status_code,
            reply=error if isinstance(error, dict) else None,
        )

    def _not_xmlflow(self, response: httpx.Response) -> str:
        """A reply without xmlflow's JSON: what answered, and (unless it is a gateway's
        502/503/504, whose server behind may well be xmlflow) the question to ask about
        ``--url``."""
        said = f"{response.request.method} {response.url} answered {response.status_code}"
        said += f" {response.reason_phrase}" if response.reason_phrase else ""
        if response.is_redirect and "location" in response.headers:
            said += f" (to {response.headers['location']})"
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        if response.status_code in (502, 503, 504):
            return f"{said}, {kind}"
        return f"{said}, {kind}, not xmlflow's JSON: is {self.url} an xmlflow server?"

    def _broken(self, exc: httpx.TransportError) -> str:
        """A connection that could not be made, or that broke before the whole answer."""
        import httpx

        reason = str(exc) or type(exc).__name__
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return f"cannot reach {self.url}: {reason}"
        if isinstance(exc, httpx.TimeoutException):
            return f"{self.url} did not answer in time: {reason}"
        return f"the connection to {self.url} broke: {reason}"

    def submit(
        self, files: Sequence[Path], pipeline: str | None, options: dict[str, Any]
    ) -> list[str]:
        """Upload ``files`` as one upload (all become jobs, or none do); returns the job ids.

        The files are streamed from disk as they are: the server decides what they hold.
        More files than the server takes in one upload: see :meth:`upload_room`.
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
            reply = self.request_json(
                "POST", "/api/jobs", "jobs", files=parts, data=data, timeout=None
            )
        return [job["id"] for job in reply["jobs"]]

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
                        raise self._refused(response)
                    if not response.headers.get("content-type", "").startswith("text/event-stream"):
                        raise ApiError(self._not_xmlflow(response))
                    for event_id, kind, data in _sse_frames(response.iter_lines()):
                        failures = 0
                        try:
                            index = job_ids.index(data.pop("job"))
                            positions[index] = int(event_id.split(".")[index])
                            event = Event(job_ids[index], positions[index], EventType(kind), data)
                        except (KeyError, ValueError, IndexError, AttributeError):
                            raise ApiError(
                                f"{self.url} sent an event that is not xmlflow's: {kind} {data}"
                            ) from None
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
        outputs = self.request_json("GET", f"{_job_path(job_id)}/outputs", "outputs")["outputs"]
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
                    raise self._refused(response)
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
                try:
                    decoded = orjson.loads("\n".join(data))
                except orjson.JSONDecodeError:
                    raise ApiError(f"the event stream sent data that is not JSON: {data}") from None
                yield event_id, kind, decoded
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
