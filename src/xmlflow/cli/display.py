"""How ``xmlflow run`` and ``xmlflow submit`` show jobs: a live rich display, its lasting
lines as plain text where the output is not a terminal, or JSON lines.

Both read the same events the stream sends (docs/api.md, "Events"), whether from the
local event log (``run``) or a server's SSE stream (``submit``, ``jobs follow``); the
JSON lines are those events with the job and file they belong to, one object a line:
``{"job": id, "file": name, "id": n, "event": type, "data": {...}}``. Only the live
display loads rich, when it is made: plain text and JSON lines start without it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import orjson

from ..models import Event, EventType
from ..units import format_duration, format_rate, format_size, plural

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

ICONS = {"succeeded": "[green]✔[/]", "failed": "[red]✖[/]", "skipped": "[dim]–[/]"}
PLAIN_ICONS = {"succeeded": "✔", "failed": "✖", "skipped": "–"}
SUMMARY_ORDER = ("succeeded", "failed", "cancelled", "interrupted", "not ended")
NAME_WIDTH = 18  # a file's column in the live display: the rest of 80 columns is the step's
_POSITION = re.compile(r"^line (\d+), column (\d+): (.*)$", re.DOTALL)
# What a terminal does not print as it is: C0 and C1 controls, and the line and bidi
# marks that move or reorder the text after them
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


@dataclass
class FileJob:
    """One input file and what became of its job."""

    source: Path
    size: int = 0
    job_id: str = ""
    steps: int = 0  # its pipeline's steps, when the jobs shown may have different ones
    last_event: int = 0
    status: str | None = None
    error: str | None = None
    outputs: list[str] = field(default_factory=list)  # where each output is, as shown

    @property
    def done(self) -> bool:
        return self.status is not None


class Reporter(Protocol):
    """Shows the jobs: a live display for people, or JSON lines for programs."""

    def start(self, jobs: Sequence[FileJob], steps: int) -> None: ...

    def event(self, job: FileJob, event: Event) -> None: ...

    def finish(self, jobs: Sequence[FileJob]) -> None: ...


def located_error(source: Path | str, error: str) -> str:
    """A parser's ``line L, column C: what`` as compilers say it: ``file:L:C: error: what``.

    Editors and terminals turn ``file:line:col`` into a link to the place.

    >>> located_error("bad.xml", "line 3, column 7: mismatched tag")
    'bad.xml:3:7: error: mismatched tag'
    >>> located_error("a.xml", "step timed out")
    'a.xml: error: step timed out'
    """
    match = _POSITION.match(error)
    if match:
        return f"{source}:{match[1]}:{match[2]}: error: {match[3]}"
    return f"{source}: error: {error}"


def printable(text: str) -> str:
    r"""A file name (or path) as one line of text: a newline, an escape sequence or a
    bidi mark in it would break the display's lines or restyle the terminal, so each is
    shown as Python writes it in a string.

    >>> printable("a\nb.xml"), printable("\x1b[31mred.xml"), printable("plain é.xml")
    ('a\\nb.xml', '\\x1b[31mred.xml', 'plain é.xml')
    """
    return _UNPRINTABLE.sub(lambda found: repr(found[0])[1:-1], text)


def escape(text: str) -> str:
    """Text shown as it is in rich markup (rich is loaded by the live display only)."""
    from rich.markup import escape as escape_markup

    return escape_markup(text)


class JsonLinesReporter:
    """One JSON object per event on ``out``: for scripts and ``jq``."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def start(self, jobs: Sequence[FileJob], steps: int) -> None:
        pass

    def event(self, job: FileJob, event: Event) -> None:
        line: dict[str, Any] = {
            "job": job.job_id,
            "file": str(job.source),
            "id": event.id,
            "event": str(event.type),
            "data": event.data,
        }
        self.out.write(orjson.dumps(line).decode() + "\n")
        self.out.flush()

    def finish(self, jobs: Sequence[FileJob]) -> None:
        pass


BURST = 0.05  # seconds: events closer than this were replayed (live ones are >= 0.1 s apart)


@dataclass
class _Running:
    """The step a file is in: its label, and the point its rate is measured from.

    The rate is measured from when this display saw the step at a fraction, not from
    the step's start: a followed job replays its past events in one burst, so within a
    burst the point moves to the latest event, and the rate is what was seen live.
    """

    label: str
    since: float = field(default_factory=time.monotonic)
    since_fraction: float = 0.0
    last: float = field(default_factory=time.monotonic)

    def seen(self, fraction: float) -> tuple[float, float]:
        """(fraction moved, seconds) since the point, this event included."""
        now = time.monotonic()
        if now - self.last < BURST:
            self.since, self.since_fraction = now, fraction
        self.last = now
        return fraction - self.since_fraction, now - self.since


class RichReporter:
    """A bar per file that follows its current step; a line per finished step; a summary.

    Inside a running step the bar's text says how far it is in bytes of the input
    (the bytes the step says it read, else its fraction of the file's size), the rate
    so far and an ETA, so a long conversion can be planned around. Every line fits the
    console's width (80 columns in a terminal of 80): long names and messages are cut
    with an ellipsis.
    """

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Column

        self.console = console
        self.progress = Progress(
            TextColumn(
                "{task.fields[file]}",
                markup=False,
                table_column=Column(no_wrap=True, overflow="ellipsis", max_width=NAME_WIDTH),
            ),
            BarColumn(bar_width=12),
            TextColumn(
                "{task.description}",
                table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
            ),
            console=console,
            expand=True,
        )
        self.tasks: dict[str, TaskID] = {}
        self.running: dict[TaskID, _Running] = {}
        self.steps = 0

    def start(self, jobs: Sequence[FileJob], steps: int) -> None:
        self.steps = steps
        for job in jobs:
            self.tasks[job.job_id] = self.progress.add_task(
                "[dim]queued[/]", total=job.steps or steps, file=printable(job.source.name)
            )
        self.progress.start()

    def event(self, job: FileJob, event: Event) -> None:
        task, data = self.tasks[job.job_id], event.data
        if event.type is EventType.STEP:
            self._step(job, task, data)
        elif event.type is EventType.PROGRESS:
            self._progress(job, task, data)
        elif event.type is EventType.END:
            self.running.pop(task, None)
            status = str(data["status"])
            self.progress.update(task, description=status)
            if status == "succeeded":
                self.progress.update(task, completed=job.steps or self.steps)

    def _progress(self, job: FileJob, task: TaskID, data: dict[str, Any]) -> None:
        running = self.running.get(task)
        label = running.label if running else ""
        where = ""
        size, fraction = where_in_input(job, data)
        if running and size and fraction > 0:
            where = " " + reading_rate(size, fraction, *running.seen(fraction))
        message = f" [dim]{escape(data['message'])}[/]" if data.get("message") else ""
        self.progress.update(
            task, completed=data["index"] + fraction, description=label + where + message
        )

    def _step(self, job: FileJob, task: TaskID, data: dict[str, Any]) -> None:
        label = escape(printable(step_label(data)))
        if data["status"] == "running":
            self.running[task] = _Running(label)
            self.progress.update(task, description=label, completed=data["index"])
            return
        self.running.pop(task, None)
        self.progress.update(task, completed=data["index"] + 1)
        icon = ICONS.get(data["status"], "?")
        self.progress.console.print(
            f"{icon} {escape(step_ended(job, data))}", overflow="ellipsis", no_wrap=True
        )
        if data.get("error"):
            self.progress.console.print(
                f"  [red]{escape(located_error(printable(str(job.source)), data['error']))}[/]"
            )

    def finish(self, jobs: Sequence[FileJob]) -> None:
        self.progress.stop()
        for job in jobs:
            icon = ICONS.get(job.status or "", "[yellow]■[/]")
            self.console.print(f"{icon} {escape(job_ended(job))}")
            if job.error:
                source = printable(str(job.source))
                self.console.print(f"  [red]{escape(located_error(source, job.error))}[/]")
            for path in job.outputs:
                self.console.print(f"    → {escape(printable(path))}")
        if len(jobs) > 1:
            self.console.print(summary(jobs))


class PlainReporter:
    """The live display's lasting lines as plain text, for a pipe or a log file.

    Where the output is not a terminal (``xmlflow run … > run.log``, CI), a display
    redrawn ten times a second has nobody to show it to: rich would leave its last
    frame of bars in the file. This writes what the display prints and keeps: a line
    per finished step, errors at ``file:line:col``, each file's outcome, its outputs and
    the summary. Lines are whole (a log is not 80 columns wide) unless ``COLUMNS`` is
    set: then a step's line is cut to it, as the display cuts it, and the others are
    folded, since they hold errors and paths. A step still running says where it is
    every ``every`` seconds (10), so a long conversion shows it lives. It does not load
    rich, which is a tenth of a short run's start-up.
    """

    EVERY = 10.0  # seconds between the lines of a running step

    def __init__(self, out: IO[str], every: float = EVERY) -> None:
        self.out = out
        self.every = every
        self.running: dict[str, _Running] = {}
        self.said: dict[str, float] = {}
        columns = os.environ.get("COLUMNS", "")
        self.width = max(int(columns), 20) if columns.isdigit() else None

    def _line(self, text: str, cut: bool = False) -> None:
        width = self.width
        if width is not None and len(text) > width:
            if cut:
                text = text[: width - 1] + "…"
            else:
                text = textwrap.fill(text, width, break_on_hyphens=False)
        self.out.write(text + "\n")
        self.out.flush()

    def start(self, jobs: Sequence[FileJob], steps: int) -> None:
        pass

    def event(self, job: FileJob, event: Event) -> None:
        data = event.data
        if event.type is EventType.STEP:
            self.running.pop(job.job_id, None)
            if data["status"] == "running":
                self.running[job.job_id] = _Running(step_label(data))
                self.said[job.job_id] = time.monotonic()
                return
            self._line(f"{PLAIN_ICONS.get(data['status'], '?')} {step_ended(job, data)}", cut=True)
            if data.get("error"):
                self._line(f"  {located_error(printable(str(job.source)), data['error'])}")
        elif event.type is EventType.PROGRESS:
            running = self.running.get(job.job_id)
            size, fraction = where_in_input(job, data)
            if running is None or not size:
                return
            moved, seconds = running.seen(fraction)
            if time.monotonic() - self.said[job.job_id] >= self.every:
                self.said[job.job_id] = time.monotonic()
                where = reading_rate(size, fraction, moved, seconds)
                self._line(f"  {printable(job.source.name)}: {running.label} {where}", cut=True)

    def finish(self, jobs: Sequence[FileJob]) -> None:
        for job in jobs:
            self._line(f"{PLAIN_ICONS.get(job.status or '', '■')} {job_ended(job)}")
            if job.error:
                self._line(f"  {located_error(printable(str(job.source)), job.error)}")
            for path in job.outputs:
                self._line(f"    → {printable(path)}")
        if len(jobs) > 1:
            self._line(summary(jobs))


class DisplayStream:
    """stdout for a display, which a run outlives: when writing it fails (the reader of
    ``xmlflow run … | head`` left, ``> /dev/full``), the display stops, with one line on
    stderr saying why, and the jobs go on to their end and their outputs. Before, the
    first failed write ended the run with 4 of 60 outputs written."""

    def __init__(self, stream: IO[str], command: str) -> None:
        self.stream = stream
        self.command = command
        self.failed: OSError | None = None

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        if self.failed is None:
            try:
                self.stream.write(text)
            except OSError as exc:
                self._stop(exc)
        return len(text)

    def flush(self) -> None:
        if self.failed is None:
            try:
                self.stream.flush()
            except OSError as exc:
                self._stop(exc)

    def isatty(self) -> bool:
        return is_terminal(self.stream)

    def fileno(self) -> int:
        return self.stream.fileno()

    def _stop(self, exc: OSError) -> None:
        self.failed = exc
        with contextlib.suppress(OSError, ValueError):
            # what is still buffered would fail again when Python flushes it at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            reason = exc.strerror or str(exc)
            sys.stderr.write(
                f"{self.command}: the display stopped, its output failed ({reason}); "
                "the jobs go on\n"
            )
            sys.stderr.flush()


def is_terminal(out: IO[str]) -> bool:
    """Whether ``out`` is a terminal, by rich's rule (without loading rich): the
    ``TTY_COMPATIBLE`` and ``FORCE_COLOR`` conventions first, then ``isatty()``."""
    tty_compatible = os.environ.get("TTY_COMPATIBLE", "")
    if tty_compatible in ("0", "1"):
        return tty_compatible == "1"
    force_color = os.environ.get("FORCE_COLOR")
    if force_color is not None:
        return force_color != ""
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def step_label(data: dict[str, Any]) -> str:
    """``2/3 Convert``: a step by its place in the pipeline and its name."""
    return f"{data['index'] + 1}/{data['total']} {data['name']}"


def step_ended(job: FileJob, data: dict[str, Any]) -> str:
    """``a.xml: 1/2 Convert succeeded 10 ms``."""
    elapsed = f" {format_duration(data['elapsed'])}" if data.get("elapsed") is not None else ""
    name = printable(job.source.name)
    return f"{name}: {printable(step_label(data))} {data['status']}{elapsed}"


def job_ended(job: FileJob) -> str:
    """``/data/a.xml: succeeded, 1 output``."""
    outputs = f", {plural(len(job.outputs), 'output')}" if job.outputs else ""
    return f"{printable(str(job.source))}: {job.status or 'not ended'}{outputs}"


def where_in_input(job: FileJob, data: dict[str, Any]) -> tuple[int, float]:
    """(the input's size, the fraction of it read) from a ``progress`` event: the bytes
    a streaming step says it read of its own total, else the step's fraction of the
    file's size."""
    fraction = float(data.get("fraction") or 0)
    size = int(data.get("total") or job.size)
    if data.get("done") is not None and size:
        fraction = min(int(data["done"]) / size, 1.0)
    return size, fraction


def reading_rate(size: int, fraction: float, moved: float, seconds: float) -> str:
    """``12.0 MB/40.0 MB 4.1 MB/s ETA 7.0 s``: where a step is in its input.

    The bytes are ``fraction`` of ``size``; the rate is ``moved`` (a fraction) over
    ``seconds``, and the ETA assumes it holds.

    >>> reading_rate(40_000_000, 0.25, 0.2, 2.0)
    '10.0 MB/40.0 MB 4.0 MB/s ETA 7.50 s'
    """
    done = size * min(fraction, 1.0)
    text = f"{format_size(done)}/{format_size(size)}"
    if seconds > 0.2 and moved > 0:
        rate = size * moved / seconds
        text += f" {format_rate(rate)}"
        if fraction < 1:
            text += f" ETA {format_duration(size * (1 - fraction) / rate)}"
    return text


def summary(jobs: Sequence[FileJob]) -> str:
    """``3 files: 2 succeeded, 1 failed; 4 outputs``."""
    counts = dict.fromkeys(SUMMARY_ORDER, 0)  # the same order whichever ended first
    for job in jobs:
        status = job.status or "not ended"
        counts[status] = counts.get(status, 0) + 1
    states = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    outputs = plural(sum(len(job.outputs) for job in jobs), "output")
    return f"{plural(len(jobs), 'file')}: {states}; {outputs}"
