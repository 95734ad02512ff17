"""Settings: defaults, then ``XMLFLOW_*`` environment variables, then explicit overrides.

Also loads and validates ``config.py`` (the seed's ``PROCESSING_STEPS``, and named
``PIPELINES``) so that a broken configuration stops start-up with the entry and the
reason, instead of failing at the first upload.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import os
import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .inputs import Limits
from .models import StepSpec


class BadSetting(ConfigError):
    """An ``XMLFLOW_*`` value that is not a number or out of its range: the command
    line's mistake (a usage error, exit 2, as click's own for a bad option value)
    rather than a broken ``config.py``."""

    code = "bad_setting"


DEFAULT_PIPELINE = "default"
STEP_KEYS = frozenset({"id", "name", "module", "delay", "error_chance", "options"})
BUILTIN_STEPS: list[dict[str, Any]] = [
    {
        "id": "process_xml",
        "name": "Processing XML and Generating JSON Structures",
        "module": "run_xml_processing_step",
        "delay": 0.0,
        "error_chance": 0.0,
    },
    {
        "id": "cleanup",
        "name": "Finalizing and Cleaning Up",
        "module": "run_cleanup_step",
        "delay": 0.0,
        "error_chance": 0.0,
    },
]


@dataclass(frozen=True)
class Settings:
    """Everything that can be configured; one instance per process, passed explicitly."""

    data_dir: Path = Path("data")
    config_path: Path | None = None
    max_upload_mb: float = 1024.0
    max_upload_files: int = 1000
    max_expansion_ratio: float = 200.0
    max_decompressed_mb: float | None = None  # None: 10 x max_upload_mb
    workers: int = 2
    retention_hours: float = 24.0
    max_queued: int = 1000
    step_timeout: float | None = None
    job_memory_mb: float | None = 4096.0
    sse_keepalive: float = 15.0
    sse_retry_ms: int = 2000
    redis_url: str | None = None
    api_token: str | None = None
    secret_key: str | None = None
    session_hours: float = 12.0
    auth_failures_per_minute: float = 10.0
    trusted_proxies: int = 0
    sweep_interval: float = 60.0
    retries: int = 0
    lease_seconds: float = 30.0
    # webhooks (operator only: see xmlflow.webhooks)
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_attempts: int = 12
    webhook_max_age_hours: float = 24.0
    webhook_backoff: float = 5.0
    webhook_timeout: float = 10.0
    pipelines: dict[str, list[StepSpec]] = field(default_factory=dict)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def input_limits(self) -> Limits:
        """How far a compressed upload may expand: a bomb stops at the first of the two caps."""
        total = self.max_decompressed_mb or 10 * self.max_upload_mb
        return Limits(ratio=self.max_expansion_ratio, max_bytes=int(total * 1024 * 1024))

    @property
    def config_dir(self) -> Path | None:
        return self.config_path.parent if self.config_path else None

    @property
    def steps_dir(self) -> Path | None:
        """The user's ``processing_steps/`` folder: beside ``config.py``."""
        return self.config_dir / "processing_steps" if self.config_dir else None

    def pipeline(self, name: str | None = None) -> list[StepSpec]:
        name = name or DEFAULT_PIPELINE
        try:
            return self.pipelines[name]
        except KeyError:
            raise ConfigError(
                f"unknown pipeline {name!r}", details={"pipelines": sorted(self.pipelines)}
            ) from None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_ENV: dict[str, tuple[str, Any]] = {
    "XMLFLOW_DATA_DIR": ("data_dir", Path),
    "XMLFLOW_CONFIG": ("config_path", Path),
    "XMLFLOW_MAX_UPLOAD_MB": ("max_upload_mb", float),
    "XMLFLOW_MAX_UPLOAD_FILES": ("max_upload_files", int),
    "XMLFLOW_MAX_EXPANSION_RATIO": ("max_expansion_ratio", float),
    "XMLFLOW_MAX_DECOMPRESSED_MB": ("max_decompressed_mb", float),
    "XMLFLOW_WORKERS": ("workers", int),
    "XMLFLOW_RETENTION_HOURS": ("retention_hours", float),
    "XMLFLOW_MAX_QUEUED": ("max_queued", int),
    "XMLFLOW_STEP_TIMEOUT": ("step_timeout", float),
    "XMLFLOW_JOB_MEMORY_MB": ("job_memory_mb", float),
    "XMLFLOW_SSE_KEEPALIVE": ("sse_keepalive", float),
    "XMLFLOW_REDIS_URL": ("redis_url", str),
    "XMLFLOW_API_TOKEN": ("api_token", str),
    "XMLFLOW_SECRET_KEY": ("secret_key", str),
    "XMLFLOW_SESSION_HOURS": ("session_hours", float),
    "XMLFLOW_AUTH_FAILURES_PER_MINUTE": ("auth_failures_per_minute", float),
    "XMLFLOW_TRUSTED_PROXIES": ("trusted_proxies", int),
    "XMLFLOW_SWEEP_INTERVAL": ("sweep_interval", float),
    "XMLFLOW_RETRIES": ("retries", int),
    "XMLFLOW_LEASE_SECONDS": ("lease_seconds", float),
    "XMLFLOW_WEBHOOK_URL": ("webhook_url", str),
    "XMLFLOW_WEBHOOK_SECRET": ("webhook_secret", str),
    "XMLFLOW_WEBHOOK_ATTEMPTS": ("webhook_attempts", int),
    "XMLFLOW_WEBHOOK_MAX_AGE_HOURS": ("webhook_max_age_hours", float),
    "XMLFLOW_WEBHOOK_BACKOFF": ("webhook_backoff", float),
    "XMLFLOW_WEBHOOK_TIMEOUT": ("webhook_timeout", float),
}


def load_settings(
    environ: Mapping[str, str] | None = None, *, cwd: Path | None = None, **overrides: Any
) -> Settings:
    """Build the settings: defaults < environment < ``overrides``; then load the pipelines."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var, (name, convert) in _ENV.items():
        raw = environ.get(var, "").strip()
        if raw:
            try:
                values[name] = convert(raw)
            except ValueError:
                kind = "a whole number" if convert is int else "a number"
                allowed = f": it must be {_RANGES[var][1]}" if var in _RANGES else ""
                raise BadSetting(f"{var}={raw!r} is not {kind}{allowed}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("config_path") is None:
        local = (cwd or Path.cwd()) / "config.py"
        values["config_path"] = local if local.is_file() else None
    settings = Settings(**values)
    _check_numbers(settings)
    _check_redis_url(settings.redis_url)
    _check_webhook(settings)
    if settings.config_path is not None:
        settings = settings.replace(config_path=settings.config_path.resolve())
    if not settings.pipelines:
        settings = settings.replace(pipelines=load_pipelines(settings.config_path))
    return settings


# Each number setting's allowed values: the test, and how the refusal words it.
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    # Upper bounds are far past any real use: past them a value reaches the OS or C as
    # an overflow (setrlimit, time_t), a busy loop, or a limit that limits nothing.
    "XMLFLOW_MAX_UPLOAD_MB": (lambda v: 0 < v <= 2**20, "more than 0 and at most 1048576"),
    "XMLFLOW_MAX_UPLOAD_FILES": (lambda v: 1 <= v <= 10**6, "1 to 1000000"),
    "XMLFLOW_MAX_EXPANSION_RATIO": (lambda v: 1 <= v <= 10**6, "1 to 1000000"),
    "XMLFLOW_MAX_DECOMPRESSED_MB": (lambda v: 0 < v <= 2**24, "more than 0 and at most 16777216"),
    "XMLFLOW_WORKERS": (lambda v: 1 <= v <= 256, "1 to 256"),
    "XMLFLOW_RETENTION_HOURS": (lambda v: 0 < v <= 87600, "more than 0 and at most 87600"),
    "XMLFLOW_MAX_QUEUED": (lambda v: 1 <= v <= 10**7, "1 to 10000000"),
    "XMLFLOW_STEP_TIMEOUT": (
        lambda v: 0 < v <= 7 * 86400,
        "more than 0 and at most 604800 seconds (unset: no timeout)",
    ),
    "XMLFLOW_JOB_MEMORY_MB": (lambda v: 64 <= v <= 2**24, "64 to 16777216"),
    "XMLFLOW_SSE_KEEPALIVE": (lambda v: 0 < v <= 15, "more than 0 and at most 15"),
    "XMLFLOW_SESSION_HOURS": (lambda v: 0 < v <= 24 * 366, f"more than 0 and at most {24 * 366}"),
    "XMLFLOW_AUTH_FAILURES_PER_MINUTE": (
        lambda v: 0 < v <= 10**6,
        "more than 0 and at most 1000000",
    ),
    "XMLFLOW_TRUSTED_PROXIES": (lambda v: 0 <= v <= 10, "0 to 10"),
    "XMLFLOW_SWEEP_INTERVAL": (lambda v: 0.1 <= v <= 86400, "0.1 to 86400 seconds"),
    "XMLFLOW_RETRIES": (lambda v: 0 <= v <= 100, "0 to 100"),
    "XMLFLOW_LEASE_SECONDS": (lambda v: 3 <= v <= 86400, "3 to 86400"),
    "XMLFLOW_WEBHOOK_ATTEMPTS": (lambda v: 1 <= v <= 100, "1 to 100"),
    "XMLFLOW_WEBHOOK_MAX_AGE_HOURS": (lambda v: 0 < v <= 87600, "more than 0 and at most 87600"),
    "XMLFLOW_WEBHOOK_BACKOFF": (lambda v: 0.01 <= v <= 3600, "0.01 to 3600"),
    "XMLFLOW_WEBHOOK_TIMEOUT": (lambda v: 0.1 <= v <= 120, "0.1 to 120"),
}


def _check_numbers(s: Settings) -> None:
    """Refuse a number out of its range, saying the range: "out of range" alone left
    the reader to guess (``XMLFLOW_JOB_MEMORY_MB=32`` needs at least 64)."""
    for var, (ok, allowed) in _RANGES.items():
        value = getattr(s, _ENV[var][0])
        if value is not None and not math.isfinite(value):  # `inf`, `1e999`: no limit at all
            raise BadSetting(f"{var} is {value:g}: it must be a finite number, {allowed}")
        if value is not None and not ok(value):
            raise BadSetting(f"{var} is {value:g}, out of range: it must be {allowed}")


REDIS_URL_FORMS = "redis://[:password@]host[:port][/db], rediss://... or unix:///path"


def _check_redis_url(url: str | None) -> None:
    """A Redis URL redis-py would refuse at the first connection (in a web worker's or
    ``xmlflow worker``'s traceback) is refused here. The value is never shown: it may
    hold a password."""
    problem = _redis_url_problem(url) if url is not None else None
    if problem:
        raise BadSetting(
            f"XMLFLOW_REDIS_URL is not a Redis URL ({problem}): it must be {REDIS_URL_FORMS}"
        )


def _redis_url_problem(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "its host cannot be read"
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "its port is not a number"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
    if parts.scheme == "unix":
        return None if parts.path else "no socket path"
    db = parts.path.strip("/")
    return "its database is not a number" if db and not db.isdigit() else None


def _check_webhook(s: Settings) -> None:
    """A webhook URL is checked at start-up, not at the first job's end: an http(s) URL
    with a host, no credentials in it (they would be logged), and a secret to sign with."""
    if s.webhook_url is None:
        return
    from urllib.parse import urlsplit

    try:
        url = urlsplit(s.webhook_url)
        url.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"XMLFLOW_WEBHOOK_URL is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(
            f"XMLFLOW_WEBHOOK_URL must be an http:// or https:// URL with a host, "
            f"got {s.webhook_url!r}"
        )
    if url.username or url.password:
        raise ConfigError("XMLFLOW_WEBHOOK_URL must not hold credentials (user:password@)")
    if not s.webhook_secret:
        raise ConfigError(
            "XMLFLOW_WEBHOOK_URL needs XMLFLOW_WEBHOOK_SECRET: every delivery is signed with it"
        )


def load_pipelines(config_path: Path | None) -> dict[str, list[StepSpec]]:
    """Read ``PROCESSING_STEPS`` / ``PIPELINES`` from ``config.py`` (or the built-in default)."""
    if config_path is None:
        return {DEFAULT_PIPELINE: parse_steps(BUILTIN_STEPS, "built-in default")}
    if not config_path.is_file():
        raise ConfigError(f"config file not found: {config_path}")
    try:
        namespace = runpy.run_path(str(config_path))
    except Exception as exc:
        raise ConfigError(f"{config_path}: cannot be loaded: {exc!r}") from exc
    return pipelines_from_namespace(namespace, str(config_path))


def pipelines_from_namespace(ns: Mapping[str, Any], where: str) -> dict[str, list[StepSpec]]:
    pipelines: dict[str, list[StepSpec]] = {}
    declared = ns.get("PIPELINES")
    if declared is not None:
        if not isinstance(declared, dict) or not declared:
            raise ConfigError(f"{where}: PIPELINES must be a non-empty dict of name -> steps")
        for name, steps in declared.items():
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"{where}: PIPELINES has a name that is not a string: {name!r}")
            pipelines[name] = parse_steps(steps, f"{where}: PIPELINES[{name!r}]")
    if "PROCESSING_STEPS" in ns:
        pipelines[DEFAULT_PIPELINE] = parse_steps(
            ns["PROCESSING_STEPS"], f"{where}: PROCESSING_STEPS"
        )
    if not pipelines:
        raise ConfigError(f"{where}: defines neither PROCESSING_STEPS nor PIPELINES")
    if DEFAULT_PIPELINE not in pipelines:
        pipelines[DEFAULT_PIPELINE] = next(iter(pipelines.values()))
    return pipelines


def parse_steps(entries: Any, where: str) -> list[StepSpec]:
    if not isinstance(entries, list | tuple) or not entries:
        raise ConfigError(f"{where} must be a non-empty list of step entries")
    specs = [parse_step(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.id in seen:
            raise ConfigError(f"{where}[{i}] (id {spec.id!r}): duplicate id in the same pipeline")
        seen.add(spec.id)
    return specs


def parse_step(entry: Any, where: str) -> StepSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a step entry must be a dict, not {type(entry).__name__}")
    label = f"{where} (id {entry.get('id')!r})"
    unknown = set(entry) - STEP_KEYS
    if unknown:
        raise ConfigError(
            f"{label}: unknown key(s) {sorted(unknown)}; allowed: {sorted(STEP_KEYS)}"
        )
    for key in ("id", "module"):
        value = entry.get(key)
        if not isinstance(value, str) or not value.isidentifier() or keyword.iskeyword(value):
            raise ConfigError(f"{label}: {key!r} must be a Python identifier, got {value!r}")
    name = entry.get("name", entry["id"])
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{label}: 'name' must be a non-empty string")
    delay = _number(entry.get("delay", 0.0), f"{label}: 'delay'")
    if delay < 0:
        raise ConfigError(f"{label}: 'delay' must not be negative, got {delay}")
    chance = _number(entry.get("error_chance", 0.0), f"{label}: 'error_chance'")
    if not 0.0 <= chance <= 1.0:
        raise ConfigError(f"{label}: 'error_chance' must be between 0 and 1, got {chance}")
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{label}: 'options' must be a dict")
    return StepSpec(entry["id"], name, entry["module"], delay, chance, dict(options))


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    return float(value)
