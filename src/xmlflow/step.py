"""The step contract: what a pipeline step gets, and what it may do.

A step is a plain function that takes one argument, the :class:`StepContext`::

    # processing_steps/count_records.py
    def run_count_step(ctx):
        n = 0
        with ctx.open_input() as f:
            for line in f:
                n += line.count(b"<record")
                if ctx.cancelled:
                    return
        with ctx.open_output("count.txt", "w") as out:
            out.write(f"{n}\\n")
        ctx.log.info("counted %d records", n)

and is declared in ``config.py``::

    PROCESSING_STEPS = [
        {"id": "count_records", "name": "Count records",
         "module": "run_count_step", "delay": 0, "error_chance": 0.0},
    ]

``id`` names the file (``processing_steps/count_records.py`` beside ``config.py``,
found before xmlflow's built-in steps), ``module`` the function in it (the seed's
naming, kept for compatibility).

Rules a step follows:

- Read ``ctx.input``: the uploaded file, or the document an earlier step passed on
  with :meth:`StepContext.pass_on`. Never modify it in place. Open it with
  :meth:`StepContext.open_input`: an upload may be compressed (gzip, bzip2, xz), and
  that reads the document inside.
- Write results with :meth:`StepContext.open_output`: the file appears as an output
  only once the ``with`` block ends without an error (it is written to a temporary
  name and renamed), so a failed job never offers half a file.
- Report progress with :meth:`StepContext.progress` as often as you like: it is
  throttled to about ten events a second.
- Check :attr:`StepContext.cancelled` in long loops and return (or raise
  :class:`~xmlflow.errors.JobCancelled`) when it is true.
- Raise an exception to fail: :class:`~xmlflow.errors.StepFailed` for a message a
  person can act on; any other exception also fails the step, with its text.
- Declare in ``UPLOAD_OPTIONS`` (a list of :class:`UploadOption`) the options an
  upload's ``options`` field may set; a step that declares none accepts none. Never
  declare a path, code, or a limit an upload could raise::

      UPLOAD_OPTIONS = [
          UploadOption("mode", "string", "what to write", default="json",
                       choices=("json", "jsonl")),
          UploadOption("max_rows", "integer", "stop after this many rows",
                       default=1000, minimum=1, at_most_configured=True),
      ]

This module imports neither Flask nor a storage backend: steps run the same in the
web process, in an RQ worker and under ``xmlflow run``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

__all__ = ["JsonType", "Output", "StepContext", "UploadOption"]

JsonType = Literal["boolean", "integer", "number", "string", "array", "object"]
"""An option value's JSON type; ``array`` is a list of strings, ``object`` maps
strings to strings (or ``null``)."""


@dataclass(frozen=True)
class UploadOption:
    """One option of a step that an upload (and ``xmlflow run --option``) may set.

    The declaration is all the service trusts: a key a step does not declare, a value
    of another type, a value outside ``choices`` or a limit raised above what
    ``config.py`` set are refused before any job exists. ``GET /api/pipelines`` lists
    the declarations, so clients can offer them.
    """

    name: str
    type: JsonType | tuple[JsonType, ...]
    help: str
    default: Any = None
    """What the step uses when neither ``config.py`` nor the upload sets it (shown only)."""
    choices: tuple[Any, ...] = ()
    """If given, the only values allowed."""
    minimum: float | None = None
    """For numbers: the smallest value allowed."""
    at_most_configured: bool = False
    """For limits: an upload may lower the value set in ``config.py`` (else ``default``),
    never raise it."""

    @property
    def types(self) -> tuple[JsonType, ...]:
        return self.type if isinstance(self.type, tuple) else (self.type,)

    def problem(self, value: Any, configured: Any) -> str | None:
        """Why ``value`` may not be set by an upload, or None when it may.

        ``configured`` is the step's value in ``config.py`` (``default`` if it has none).
        """
        if not any(_is_json_type(value, t) for t in self.types):
            return f"must be {' or '.join(_TYPE_WORDS[t] for t in self.types)}, not {_json(value)}"
        if self.choices and value not in self.choices:
            allowed = ", ".join(_json(c) for c in self.choices)
            return f"must be one of {allowed}, not {_json(value)}"
        if _is_number(value):
            if self.minimum is not None and value < self.minimum:
                return f"must be at least {self.minimum:g}, not {_json(value)}"
            if self.at_most_configured and _is_number(configured) and value > configured:
                return f"may only lower the configured limit of {_json(configured)}, not raise it"
        return None

    def to_dict(self, configured: Any = None) -> dict[str, Any]:
        """The declaration as ``GET /api/pipelines`` shows it, with the configured value."""
        types = list(self.types)
        d: dict[str, Any] = {
            "name": self.name,
            "type": types[0] if len(types) == 1 else types,
            "default": self.default if configured is None else configured,
            "help": self.help,
        }
        if self.choices:
            d["choices"] = list(self.choices)
        if self.minimum is not None:
            d["minimum"] = self.minimum
        if self.at_most_configured:
            d["maximum"] = d["default"]
        return d


_TYPE_WORDS: dict[str, str] = {
    "boolean": "true or false",
    "integer": "a whole number",
    "number": "a number",
    "string": "a string",
    "array": "a list of strings",
    "object": "an object of string values",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_json_type(value: Any, kind: JsonType) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return _is_number(value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items()
    )


@dataclass(frozen=True)
class Output:
    """A finished file a step produced, kept until the job's retention ends."""

    name: str
    path: Path
    size: int
    media_type: str = "application/octet-stream"


def _media_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return {
        ".json": "application/json",
        ".jsonl": "application/x-ndjson",
        ".xml": "application/xml",
        ".zip": "application/zip",
        ".txt": "text/plain; charset=utf-8",
        ".csv": "text/csv; charset=utf-8",
        ".html": "text/html; charset=utf-8",
    }.get(suffix, "application/octet-stream")


MAX_NAME_BYTES = 200
"""Longest output name in UTF-8 bytes: file systems allow 255, and ``xmlflow run`` and
temporary names add a few characters of their own."""


def safe_output_name(name: str) -> str:
    """Reduce ``name`` to one harmless file name: no folders, no dot files, no controls.

    A name too long for a file system loses the end of its stem, never its extension:
    the extension decides the media type and how the download opens.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in base if c.isprintable() and c not in '<>:"|?*').strip(" .")
    if not cleaned:
        raise ValueError(f"not a usable output name: {name!r}")
    return _shorten(cleaned, MAX_NAME_BYTES)


def _shorten(name: str, limit: int) -> str:
    """``name`` cut to ``limit`` UTF-8 bytes at a character boundary, keeping a short extension."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = f".{extension}" if dot and stem and len(extension.encode()) <= 16 else ""
    head = stem if suffix else name
    room = limit - len(suffix.encode())
    return head.encode()[:room].decode(errors="ignore").rstrip(" .") + suffix


@dataclass
class StepContext:
    """Everything a step may use. Built by the runner, one per step run."""

    job_id: str
    step_id: str
    input: Path
    """The document this step reads."""
    workdir: Path
    """A folder of this job's where the step may write whatever it needs."""
    filename: str
    """The uploaded file's (sanitised) name, for display and output names."""
    outdir: Path | None = None
    """Where finished outputs go (the runner sets it; defaults to ``workdir``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The step's ``options`` from ``config.py``, merged with per-job options."""
    config_dir: Path | None = None
    """The folder of the ``config.py`` in use: resolve relative option paths here."""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("xmlflow.steps"))
    _report: Callable[..., None] = field(default=lambda fraction, message, *_: None, repr=False)
    """Called as ``(fraction, message)``, or ``(fraction, message, done, total)`` with bytes."""
    _is_cancelled: Callable[[], bool] = field(default=lambda: False, repr=False)
    outputs: list[Output] = field(default_factory=list)
    passed_on: Path | None = None

    @property
    def stem(self) -> str:
        """The upload's name without its extension (nor ``.gz``/``.bz2``/``.xz``): the usual
        base of output names, so ``x.xml.gz`` gives ``x.json``."""
        from .inputs import inner_name  # local: steps import this module first

        return Path(inner_name(self.filename)).stem or "document"

    def open_input(self) -> IO[bytes]:
        """The input for reading, decompressed as it is read when it is a ``.gz``, ``.bz2``
        or ``.xz`` upload (within the expansion caps); prefer it to ``input.open()``."""
        from .inputs import open_input

        return open_input(self.input, name=self.filename)

    @property
    def cancelled(self) -> bool:
        """True once someone asked to cancel the job: stop soon."""
        return self._is_cancelled()

    def progress(
        self,
        fraction: float,
        message: str | None = None,
        *,
        done: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report how far the step is (0..1) with an optional short message.

        A step that streams its input also gives ``done`` and ``total`` bytes: the page
        shows the bytes read, the rate and an ETA from them.
        """
        fraction = min(max(float(fraction), 0.0), 1.0)
        if done is None or total is None:
            self._report(fraction, message)
        else:
            self._report(fraction, message, int(done), int(total))

    @contextlib.contextmanager
    def open_output(
        self, name: str, mode: str = "wb", *, encoding: str | None = None
    ) -> Iterator[IO[Any]]:
        """Write an output file atomically; it is registered when the block succeeds.

        ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise).
        """
        if mode not in ("w", "wb"):
            raise ValueError("open_output() writes new files: mode must be 'w' or 'wb'")
        final = self.output_dir / safe_output_name(name)
        fd, tmp = tempfile.mkstemp(dir=self.output_dir, prefix=".partial-", suffix=".tmp")
        try:
            text = mode == "w"
            with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, OSError) and exc.filename is None:
                exc.filename = final.name  # a failed write names no file: say which output
            raise
        self.add_output(final)

    @property
    def output_dir(self) -> Path:
        return self.outdir or self.workdir

    def add_output(self, path: Path, name: str | None = None) -> Output:
        """Register a complete file under ``workdir`` as a downloadable output.

        The file is moved into the job's output folder under ``name`` (or its own name).
        """
        resolved = Path(path).resolve()
        if not self._is_job_file(resolved):
            raise ValueError(f"outputs must be files inside the job's work folder: {path}")
        final_name = safe_output_name(name or resolved.name)
        final = self.output_dir.resolve() / final_name
        if final != resolved:
            os.replace(resolved, final)
        output = Output(
            name=final_name,
            path=final,
            size=final.stat().st_size,
            media_type=_media_type(final_name),
        )
        self.outputs = [o for o in self.outputs if o.name != output.name] + [output]
        return output

    def pass_on(self, path: Path) -> None:
        """Make ``path`` the input of the steps after this one.

        ``path`` is a scratch file under ``workdir`` or one of this job's outputs (a
        transform's result is both offered and read on): the runner keeps outputs in
        their own folder, so both folders count as the job's.
        """
        resolved = Path(path).resolve()
        if not self._is_job_file(resolved):
            raise ValueError(f"only files inside the job's work folder can be passed on: {path}")
        self.passed_on = resolved

    def _is_job_file(self, resolved: Path) -> bool:
        """A file in this job's work or output folder (``resolved`` is absolute)."""
        folders = (self.workdir.resolve(), self.output_dir.resolve())
        return resolved.is_file() and any(resolved.is_relative_to(d) for d in folders)


def _json(value: Any) -> str:
    """A value as the client wrote it (JSON: ``true``, ``null``, ``"text"``), at most 80
    characters: messages about upload options quote JSON, not Python's ``True``/``None``."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"
