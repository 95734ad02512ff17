"""``xmlflow run`` (pipelines on local files, in-process) and ``xmlflow jobs`` (a server's jobs).

Kept apart from ``cli.py``, which only registers them, so that the server commands
and these client-side ones can change independently. Every option falls back to an
environment variable, shown in ``--help``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from .client import DEFAULT_URL, ApiClient, ApiError
from .errors import Unprocessable, XmlflowError

F = TypeVar("F", bound=Callable[..., Any])
STEP_ICONS = {"succeeded": "✔", "failed": "✖", "skipped": "–", "running": "…", "pending": " "}


_json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="XMLFLOW_JSON",
    show_envvar=True,
    help="Print the server's JSON answer.",
)


def _out_option(help: str) -> Callable[[F], F]:
    """``--out DIR`` (env ``XMLFLOW_OUT``), shared by ``run`` and ``jobs download``."""
    return click.option(
        "--out",
        "-o",
        "out_dir",
        default=Path("."),
        show_default=True,
        envvar="XMLFLOW_OUT",
        show_envvar=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=help,
    )


@click.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--pipeline",
    "-p",
    default="default",
    show_default=True,
    envvar="XMLFLOW_PIPELINE",
    show_envvar=True,
    help="The pipeline to run (see `xmlflow steps`).",
)
@_out_option("Folder the outputs are copied to.")
@click.option(
    "--option",
    "-O",
    "option_texts",
    multiple=True,
    metavar="STEP.KEY=VALUE",
    envvar="XMLFLOW_OPTIONS",
    show_envvar=True,
    help="A per-job step option an upload may set (repeatable; GET /api/pipelines lists "
    "them); VALUE is JSON when it parses as JSON.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="XMLFLOW_JSON",
    show_envvar=True,
    help="Print the events as JSON lines instead of the live display.",
)
@click.option(
    "--config",
    "config_path",
    envvar="XMLFLOW_CONFIG",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The config.py to read (default: ./config.py, else the built-in pipeline).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    envvar="XMLFLOW_WORKERS",
    show_envvar=True,
    help="Files processed at the same time.  [default: 2]",
)
def run(
    files: Sequence[Path],
    pipeline: str,
    out_dir: Path,
    option_texts: Sequence[str],
    as_json: bool,
    config_path: Path | None,
    workers: int | None,
) -> None:
    """Run a pipeline on local FILES in this process, the way the server would.

    Exits 0 only when every file's job succeeded.
    """
    from rich.console import Console

    from .localrun import LocalRun, collect_options
    from .progress import JsonLinesReporter, RichReporter
    from .settings import load_settings

    try:
        options = collect_options(option_texts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--option") from None
    _quiet_logs()
    stdout = sys.stdout
    reporter = JsonLinesReporter(stdout) if as_json else RichReporter(Console(file=stdout))
    try:
        settings = load_settings(config_path=config_path, workers=workers)
        jobs = LocalRun(settings, pipeline, options, out_dir, reporter).run(files)
    except Unprocessable as exc:
        raise click.UsageError(exc.message) from None
    except XmlflowError as exc:
        raise click.ClickException(exc.message) from None
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0 if all(job.status == "succeeded" for job in jobs) else 1)


def _quiet_logs() -> None:
    """Steps' info logs would tear the live display; keep them unless --log-level was given."""
    import logging

    root = click.get_current_context().find_root()
    if root.get_parameter_source("log_level") is click.core.ParameterSource.DEFAULT:
        logging.getLogger().setLevel(logging.WARNING)


class _ApiGroup(click.Group):
    """Shows the server's error message instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise click.ClickException(exc.message) from None


@click.group(cls=_ApiGroup)
@click.option(
    "--url",
    default=DEFAULT_URL,
    show_default=True,
    envvar="XMLFLOW_URL",
    show_envvar=True,
    help="The server's address.",
)
@click.option(
    "--token",
    envvar="XMLFLOW_API_TOKEN",
    show_envvar=True,
    help="The server's API token, if it has one.",
)
@click.pass_context
def jobs(ctx: click.Context, url: str, token: str | None) -> None:
    """List, inspect, cancel and download a server's jobs."""
    ctx.obj = ctx.with_resource(ApiClient(url, token))


@jobs.command("list")
@click.option(
    "--status",
    envvar="XMLFLOW_JOBS_STATUS",
    show_envvar=True,
    type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]),
    help="Only jobs in this state.",
)
@click.option(
    "--pipeline",
    envvar="XMLFLOW_JOBS_PIPELINE",
    show_envvar=True,
    help="Only jobs of this pipeline.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 500),
    default=50,
    show_default=True,
    envvar="XMLFLOW_JOBS_LIMIT",
    show_envvar=True,
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    envvar="XMLFLOW_JOBS_OFFSET",
    show_envvar=True,
)
@_json_option
@click.pass_obj
def list_jobs(client: ApiClient, /, as_json: bool, **filters: Any) -> None:
    """Jobs, newest first: id, status, pipeline, elapsed, file."""
    page = client.list_jobs(**filters)
    if as_json:
        click.echo(_json(page))
        return
    for job in page["jobs"]:
        elapsed = f"{job['elapsed']:.1f}s" if job["elapsed"] is not None else "-"
        status, pipeline = job["status"], job["pipeline"]
        click.echo(f"{job['id']}  {status:<11} {pipeline:<14} {elapsed:>8}  {job['filename']}")
    shown = f"{page['offset'] + 1}-{page['offset'] + len(page['jobs'])}" if page["jobs"] else "0"
    click.echo(f"{shown} of {page['total']} job(s)", err=True)


@jobs.command()
@click.argument("job_id")
@_json_option
@click.pass_obj
def show(client: ApiClient, job_id: str, as_json: bool) -> None:
    """One job: its status, each step, its outputs."""
    job = client.job(job_id)
    for line in [_json(job)] if as_json else describe_job(job):
        click.echo(line)


def describe_job(job: dict[str, Any]) -> list[str]:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created_at"]))
    lines = [
        f"job {job['id']}: {job['status']}",
        f"  file: {job['filename']} ({job['size']} bytes), pipeline: {job['pipeline']}",
        f"  created: {created}, elapsed: {job['elapsed'] if job['elapsed'] is not None else '-'}",
    ]
    for i, step in enumerate(job["steps"], 1):
        elapsed = f" {step['elapsed']:.2f}s" if step.get("elapsed") is not None else ""
        error = f": {step['error']}" if step.get("error") else ""
        icon = STEP_ICONS.get(step["status"], "?")
        lines.append(
            f"  {i}. {icon} {step['name']} ({step['id']}) {step['status']}{elapsed}{error}"
        )
    if job["error"]:
        lines.append(f"  error: {job['error']}")
    lines += [f"  output: {o['name']} ({o['size']} bytes) {o['url']}" for o in job["outputs"]]
    return lines


@jobs.command()
@click.argument("job_id")
@click.pass_obj
def cancel(client: ApiClient, job_id: str) -> None:
    """Cancel a queued job, or ask a running one to stop."""
    job = client.cancel(job_id)
    state = "cancelled" if job["status"] == "cancelled" else "asked to stop"
    click.echo(f"job {job_id}: {state}")


@jobs.command()
@click.argument("job_id")
@_out_option("Folder to save the outputs in.")
@click.option(
    "--zip",
    "as_zip",
    is_flag=True,
    envvar="XMLFLOW_ZIP",
    show_envvar=True,
    help="Save one zip of all outputs instead of each file.",
)
@click.pass_obj
def download(client: ApiClient, job_id: str, out_dir: Path, as_zip: bool) -> None:
    """Save a succeeded job's outputs; prints each file saved."""
    for path in client.download(job_id, out_dir, as_zip=as_zip):
        click.echo(str(path))


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
