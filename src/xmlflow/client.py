"""A small client of the xmlflow API (httpx), used by ``xmlflow jobs``.

Errors come back as :class:`ApiError` carrying the server's own message (the JSON
error body), so the command line shows what the server said, not a status code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import XmlflowError

if TYPE_CHECKING:
    import httpx  # imported where used: ``xmlflow run`` loads this module, never httpx

DEFAULT_URL = "http://127.0.0.1:5000"


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

    def download(self, job_id: str, out_dir: Path, *, as_zip: bool = False) -> list[Path]:
        """Save the job's outputs (or one zip of them) in ``out_dir``; returns the files."""
        out_dir.mkdir(parents=True, exist_ok=True)
        if as_zip:
            zip_name = _local_name(f"{job_id}.zip")
            return [self._save(f"{_job_path(job_id)}/outputs.zip", out_dir / zip_name)]
        outputs = self.request("GET", f"{_job_path(job_id)}/outputs").json()["outputs"]
        if not outputs:
            job = self.job(job_id)
            raise ApiError(f"job {job_id} is {job['status']} and has no outputs")
        # ``url`` is already percent-encoded by the server: used as given, never re-encoded
        return [self._save(o["url"], out_dir / _local_name(o["name"])) for o in outputs]

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
        os.replace(tmp, target)
        return target


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
