"""Every exception xmlflow raises on purpose.

One base, :class:`XmlflowError`, with an HTTP status: errors derived from it are
"nice" — their message is shown to users as is. Anything else is a bug and is
logged with its traceback (the idea is Sphinx's ``SphinxError``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


class XmlflowError(Exception):
    """Base of the errors whose message is meant for a person."""

    status_code = 500
    code = "internal_error"
    retry_after: int | None = None  # seconds: sent as ``Retry-After`` (503s the client may retry)

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ConfigError(XmlflowError):
    """A broken ``config.py``: names the entry and the reason, stops start-up."""

    code = "config_error"


class StepLoadError(ConfigError):
    """A step's module or function cannot be found or imported."""

    code = "step_load_error"


class BadRequest(XmlflowError):
    status_code = 400
    code = "bad_request"


class UploadTooLarge(XmlflowError):
    status_code = 413
    code = "upload_too_large"


class UnsupportedMediaType(XmlflowError):
    status_code = 415
    code = "unsupported_media_type"


class NotFound(XmlflowError):
    status_code = 404
    code = "not_found"


class Conflict(XmlflowError):
    status_code = 409
    code = "conflict"


class Unprocessable(XmlflowError):
    status_code = 422
    code = "unprocessable"


class Unauthorized(XmlflowError):
    status_code = 401
    code = "unauthorized"


class Forbidden(XmlflowError):
    status_code = 403
    code = "forbidden"


class TooManyRequests(XmlflowError):
    """Too many wrong tokens from one client address; ``retry_after`` says when to try."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class QueueFull(XmlflowError):
    """Back-pressure: too many jobs are waiting; the client should retry later."""

    status_code = 503
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = 5, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after: int | None = retry_after


class BackendUnavailable(XmlflowError):
    """The job store cannot be used for now (Redis down, paused, out of memory...)."""

    status_code = 503
    code = "backend_unavailable"
    retry_after = 5

    @classmethod
    def of_redis(cls, exc: BaseException) -> BackendUnavailable:
        """What a client is told: the kind of outage, never Redis's text (commands, keys,
        job ids), which goes to the log instead."""
        log.warning("Redis unavailable: %s", exc)
        return cls(f"Redis is unavailable for now ({type(exc).__name__}); try again later")


class DiskFull(XmlflowError):
    """The data folder has no room for an upload (ENOSPC while receiving it): 507,
    nothing kept, try again once space is freed."""

    status_code = 507
    code = "insufficient_storage"
    retry_after = 30


def is_backend_outage(exc: BaseException) -> bool:
    """A Redis error that means "not now" (down, paused, out of memory...), not a bug.

    For the errors that reach us unwrapped, from RQ say. ``redis`` is imported only in
    Redis mode; when its backend is not loaded, no error is Redis's.
    """
    store = sys.modules.get("xmlflow.backends.redis.store")
    return store is not None and isinstance(exc, store.REDIS_DOWN)


class StepFailed(XmlflowError):
    """Raised by steps (or for them) with a message a person can act on."""

    status_code = 422
    code = "step_failed"


class InjectedFailure(StepFailed):
    """The failure that ``error_chance`` simulates."""

    code = "injected_failure"


class StepTimeout(StepFailed):
    code = "step_timeout"


class JobCancelled(XmlflowError):
    """Raised inside a step when its job was cancelled; ends the job ``cancelled``."""

    status_code = 409
    code = "cancelled"


class XmlError(StepFailed):
    """XML that cannot be read: not well-formed, forbidden (entities, DTDs) or over a limit.

    The message always starts with ``line L, column C:`` when the position is known,
    so that users find the place in their file.
    """

    code = "xml_error"

    def __init__(
        self,
        reason: str,
        *,
        line: int | None = None,
        column: int | None = None,
        filename: str | None = None,
    ) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        self.filename = filename
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(
            f"{where}{reason}",
            details={"line": line, "column": column, "file": filename},
        )


class ExpansionLimit(StepFailed):
    """A compressed input expands past ``XMLFLOW_MAX_EXPANSION_RATIO`` or
    ``XMLFLOW_MAX_DECOMPRESSED_MB`` (a zip or gzip bomb): refused, at upload or mid-run."""

    status_code = 413
    code = "expansion_limit"


class DamagedInput(StepFailed):
    """A compressed input or zip that cannot be read to its end: truncated or corrupt."""

    code = "damaged_input"
