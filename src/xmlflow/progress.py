"""How ``xmlflow run`` shows its jobs: a live rich display, or the events as JSON lines.

Both read the same events the stream sends (see ARCHITECTURE.md, "Events"); the JSON
lines are those events with the job and file they belong to, one object a line:
``{"job": id, "file": name, "id": n, "event": type, "data": {...}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from .localrun import FileJob
from .models import Event, EventType

ICONS = {"succeeded": "[green]✔[/]", "failed": "[red]✖[/]", "skipped": "[dim]–[/]"}


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


class RichReporter:
    """A bar per file that follows its current step; a line per finished step; a summary."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.fields[file]}", markup=False),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.labels: dict[TaskID, str] = {}  # the running step's label, kept under messages
        self.steps = 0

    def start(self, jobs: Sequence[FileJob], steps: int) -> None:
        self.steps = steps
        for job in jobs:
            self.tasks[job.job_id] = self.progress.add_task(
                "[dim]queued[/]", total=steps, file=job.source.name
            )
        self.progress.start()

    def event(self, job: FileJob, event: Event) -> None:
        task, data = self.tasks[job.job_id], event.data
        if event.type is EventType.STEP:
            self._step(job, task, data)
        elif event.type is EventType.PROGRESS:
            message = f" [dim]{escape(data['message'])}[/]" if data.get("message") else ""
            self.progress.update(
                task,
                completed=data["index"] + data["fraction"],
                description=self.labels.get(task, "") + message,
            )
        elif event.type is EventType.END:
            status = str(data["status"])
            self.progress.update(task, description=status)
            if status == "succeeded":
                self.progress.update(task, completed=self.steps)

    def _step(self, job: FileJob, task: TaskID, data: dict[str, Any]) -> None:
        label = f"{data['index'] + 1}/{data['total']} {escape(data['name'])}"
        if data["status"] == "running":
            self.labels[task] = label
            self.progress.update(task, description=label, completed=data["index"])
            return
        self.progress.update(task, completed=data["index"] + 1)
        elapsed = f" {data['elapsed']:.2f}s" if data.get("elapsed") is not None else ""
        error = f" [red]{escape(data['error'])}[/]" if data.get("error") else ""
        icon = ICONS.get(data["status"], "?")
        self.progress.console.print(
            f"{icon} {escape(job.source.name)}: {label} {data['status']}{elapsed}{error}"
        )

    def finish(self, jobs: Sequence[FileJob]) -> None:
        self.progress.stop()
        for job in jobs:
            icon = ICONS.get(job.status or "", "[yellow]■[/]")
            line = f"{icon} {escape(str(job.source))}: {job.status}"
            if job.error:
                line += f" [red]{escape(job.error)}[/]"
            self.console.print(line)
            for path in job.outputs:
                self.console.print(f"    → {escape(str(path))}")
