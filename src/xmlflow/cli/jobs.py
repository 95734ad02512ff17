"""``xmlflow run`` (pipelines on local files, in-process), ``xmlflow submit`` (files to a
server, followed live) and ``xmlflow jobs`` (a server's jobs).

Kept apart from the service's commands (:mod:`.server`), so that those and these
client-side ones can change independently. Every option falls back to an environment
variable, shown in ``--help``. ``run`` and ``submit`` show jobs the same way
(:mod:`.display`) and exit the same way (:data:`EXIT_STATUS`, shown in ``--help``): 0
when every job succeeded, 1 when one did not or a request failed, 2 for a usage error
(a bad command line, pipeline or option), 130 on Ctrl-C (``run`` also stops that way
on SIGTERM and SIGHUP, exiting 143 and 129).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import click
import orjson

from ..errors import BadRequest, Unprocessable, XmlflowError
from ..models import EventType
from ..units import format_duration, format_size, plural
from .client import DEFAULT_URL, TOKEN_ENV, ApiClient, ApiError, UploadRoom

if TYPE_CHECKING:
    from .display import FileJob, Reporter

F = TypeVar("F", bound=Callable[..., Any])
STEP_ICONS = {"succeeded": "✔", "failed": "✖", "skipped": "–", "running": "…", "pending": " "}
EXIT_STATUS = """\b
Exit status:
  0    it worked (submit, jobs follow: every job succeeded)
  1    a job did not succeed, or a request failed: the server is down or
       is not xmlflow, no token or a wrong one, no such job, queue full...
  2    a usage error, as click's: a bad command line or XMLFLOW_* setting
       (run, serve, worker, steps), or a pipeline or option the server
       refused (its 400 or 422)
  130  Ctrl-C (following stops; the jobs go on)"""


_json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="XMLFLOW_JSON",
    show_envvar=True,
    help="Print the server's JSON answer.",
)


_events_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="XMLFLOW_JSON",
    show_envvar=True,
    help="Print the events as JSON lines instead of the live display.",
)


_step_option = click.option(  # `run` and `submit`: the same check, locally or on the server
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


_files_argument = click.argument(  # `run` and `submit`
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


_save_option = click.option(
    "--out",
    "-o",
    "out_dir",
    envvar="XMLFLOW_OUT",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to save the outputs of the jobs that succeed in (default: not saved).",
)


@click.command()
@_files_argument
@click.option(
    "--pipeline",
    "-p",
    default="default",
    show_default=True,
    envvar="XMLFLOW_PIPELINE",
    show_envvar=True,
    help="The pipeline to run (see `xmlflow steps`).",
)
@_out_option("Folder the outputs are saved in.")
@_step_option
@_events_option
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
    import gc

    # The collector would run dozens of times over what these imports create, all of
    # which lives as long as the run (a tenth of their cost)
    gc.disable()
    try:
        from ..settings import BadSetting, load_settings
        from . import exit_without_teardown
        from .localrun import LocalRun
    finally:
        gc.enable()

    options = _options(option_texts)
    _quiet_logs()
    reporter = _reporter(as_json)
    _stop_on_signals()
    try:
        settings = load_settings(config_path=config_path, workers=workers)
        jobs = LocalRun(settings, pipeline, options, out_dir, reporter).run(files)
    except (BadRequest, Unprocessable, BadSetting) as exc:  # the pipeline, an option, a setting
        raise click.UsageError(exc.message) from None
    except XmlflowError as exc:
        raise Failed(exc.message) from None
    except OSError as exc:  # the temporary folder full, a file gone: this machine's say
        raise Failed(str(exc)) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or a Stopped signal
        sys.exit(exit_status(exc))
    exit_without_teardown()  # every job, thread and process of the run has ended
    sys.exit(0 if all(job.status == "succeeded" for job in jobs) else 1)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``timeout``, systemd, a closed terminal): stop as Ctrl-C does —
    cancel the jobs, stop their processes, remove the run's temporary folder."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def exit_status(exc: KeyboardInterrupt) -> int:
    """128 + the signal that stopped the command (143 SIGTERM, 129 SIGHUP), 130 for Ctrl-C."""
    return 128 + exc.signum if isinstance(exc, Stopped) else 130


def _stop_on_signals() -> None:
    import signal

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)


def _options(texts: Sequence[str]) -> dict[str, dict[str, Any]]:
    from .localrun import collect_options

    try:
        return collect_options(texts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--option") from None


def _reporter(as_json: bool) -> Reporter:
    """JSON lines; the live display on a terminal (as wide as it is: 80 if unknown); or,
    into a pipe or a file, the display's lasting lines as plain text.

    Only the live display loads rich. It colours what it means to (icons, errors),
    not every number and path on its lines: rich's guessing (its highlighter) costs a
    run ~30 ms of regular expressions before its first line.
    """
    from .display import DisplayStream, JsonLinesReporter, PlainReporter, is_terminal

    # what the display writes and flushes, as a file (rich asks for one)
    out = cast(IO[str], DisplayStream(sys.stdout, click.get_current_context().command_path))
    if as_json:
        return JsonLinesReporter(out)
    if not is_terminal(sys.stdout):
        return PlainReporter(out)
    from rich.console import Console

    from .display import RichReporter

    return RichReporter(Console(file=out, highlight=False))


def _quiet_logs() -> None:
    """Steps' and httpx's info logs would tear the live display and bury the answers;
    they stay off unless --log-level was given."""
    import logging

    root = click.get_current_context().find_root()
    if root.get_parameter_source("log_level") is click.core.ParameterSource.DEFAULT:
        logging.getLogger().setLevel(logging.WARNING)


class Failed(click.ClickException):
    """A request that failed (exit 1), in the one line a usage error gets (exit 2):
    ``xmlflow jobs show: error: no job 'x' (404 not_found)``, not click's ``Error: …``."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        ctx = click.get_current_context(silent=True)
        self.where = ctx.command_path if ctx else "xmlflow"

    def show(self, file: IO[Any] | None = None) -> None:
        from .display import printable  # a file's name in it, the user's or the server's

        click.echo(f"{self.where}: error: {printable(self.format_message())}", err=True)


def _api_errors(f: F) -> F:
    """The server's refusals as the command's errors (:data:`EXIT_STATUS`): a 400 or 422
    about what the user typed (the pipeline, an option: not a file) is a usage error, 2;
    anything else failed, 1."""

    @functools.wraps(f)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except ApiError as exc:
            typed = exc.status in (400, 422) and exc.reply is not None and not exc.about_a_file
            raise (click.UsageError(exc.message) if typed else Failed(exc.message)) from None

    return checked  # type: ignore[return-value]


@dataclass
class _Server:
    """The server ``jobs`` talks to, as given before the subcommand (or by env, default)."""

    url: str
    token: str | None


_URL_HELP = "The server's address."


class _ServerUrl(click.ParamType[str]):
    """``--url``: http(s)://host[:port][/prefix], checked when given. httpx found out only
    at the first request, and said "the connection … broke" (exit 1), or raised (a
    port that is not a number): a mistyped address is a usage error, exit 2."""

    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from urllib.parse import urlsplit

        text = str(value)
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError when it is not a port number
        except ValueError as exc:
            self.fail(f"{text!r} is not a server address ({exc}): give http(s)://host[:port]")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(f"{text!r} is not a server address: give http(s)://host[:port]")
        return text


_TOKEN_HELP = "The server's API token, if it has one."


def _server_options(f: F) -> F:
    """``--url`` and ``--token`` on a ``jobs`` subcommand too: ``jobs list --url …``.

    Given after the subcommand they win over those before it, which fall back to
    ``XMLFLOW_URL`` / ``XMLFLOW_API_TOKEN`` and the default; the command gets the client,
    and the server's refusals become its errors (:func:`_api_errors`).
    """

    @_api_errors
    def with_client(
        ctx: click.Context, /, *args: Any, sub_url: str | None, sub_token: str | None, **kwargs: Any
    ) -> Any:
        server = ctx.find_object(_Server) or _Server(DEFAULT_URL, None)
        client = ApiClient(sub_url or server.url, sub_token or server.token)
        return f(ctx.with_resource(client), *args, **kwargs)

    with_client.__name__, with_client.__doc__ = f.__name__, f.__doc__
    url = click.option(
        "--url",
        "sub_url",
        type=_ServerUrl(),
        metavar="URL",
        help=_URL_HELP + "  [env var: XMLFLOW_URL]",
    )
    token = click.option(
        "--token", "sub_token", metavar="TOKEN", help=_TOKEN_HELP + f"  [env var: {TOKEN_ENV}]"
    )
    return url(token(click.pass_context(with_client)))  # type: ignore[return-value]


_url_option = click.option(  # `jobs` (before its subcommand) and `submit`
    "--url",
    type=_ServerUrl(),
    default=DEFAULT_URL,
    show_default=True,
    envvar="XMLFLOW_URL",
    show_envvar=True,
    help=_URL_HELP,
)
_token_option = click.option("--token", envvar=TOKEN_ENV, show_envvar=True, help=_TOKEN_HELP)


@click.group(epilog=EXIT_STATUS)
@_url_option
@_token_option
@click.pass_context
def jobs(ctx: click.Context, url: str, token: str | None) -> None:
    """List, inspect, follow, cancel and download a server's jobs.

    --url and --token go before or after the subcommand.
    """
    _quiet_logs()
    ctx.obj = _Server(url, token)


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
@_server_options
def list_jobs(client: ApiClient, /, as_json: bool, **filters: Any) -> None:
    """Jobs, newest first: id, status, pipeline, elapsed, file."""
    page = client.list_jobs(**filters)
    if as_json:
        click.echo(_json(page))
        return
    room = _file_column_room(len(_ROW.format("", "", "", "", "")))
    if page["jobs"]:
        click.echo(_ROW.format("JOB", "STATUS", "PIPELINE", "ELAPSED", "FILE"))
    for job in page["jobs"]:
        click.echo(job_row(job, room))
    shown = f"{page['offset'] + 1}-{page['offset'] + len(page['jobs'])}" if page["jobs"] else "0"
    click.echo(f"{shown} of {plural(page['total'], 'job')}", err=True)


_ROW = "{:<32}  {:<11} {:<14} {:>9}  {}"


def job_row(job: dict[str, Any], room: int | None) -> str:
    """A job's row in ``jobs list``; its file name escaped (:func:`.display.printable`),
    then cut to ``room`` characters when given."""
    from .display import printable

    elapsed = format_duration(job["elapsed"]) if job["elapsed"] is not None else "-"
    name = printable(job["filename"])
    if room is not None and len(name) > room:
        name = name[: room - 1] + "…"
    return _ROW.format(job["id"], job["status"], printable(job["pipeline"]), elapsed, name)


def _file_column_room(used: int) -> int | None:
    """How many characters of a file name fit on a row in the terminal (``COLUMNS`` or
    its width), at least 8; ``None`` when the output goes to a pipe or file (keep it
    whole for scripts), as ``ls`` does."""
    if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        return None
    return max(8, shutil.get_terminal_size().columns - used)


@jobs.command()
@click.argument("job_id")
@_json_option
@_server_options
def show(client: ApiClient, job_id: str, as_json: bool) -> None:
    """One job: its status, each step, its outputs."""
    job = client.job(job_id)
    for line in [_json(job)] if as_json else describe_job(job):
        click.echo(line)


def describe_job(job: dict[str, Any]) -> list[str]:
    """``jobs show``: the job, a line per step (with its duration), its outputs; every
    name and message the server sent escaped (:func:`.display.printable`), one line each."""
    from .display import located_error, printable

    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created_at"]))
    elapsed = format_duration(job["elapsed"]) if job["elapsed"] is not None else "-"
    source = printable(job["filename"])
    lines = [
        f"job {job['id']}: {job['status']}",
        f"  file: {source} ({plural(job['size'], 'byte')}), pipeline: {job['pipeline']}",
        f"  created: {created}, elapsed: {elapsed}",
    ]
    for i, step in enumerate(job["steps"], 1):
        took = f" {format_duration(step['elapsed'])}" if step.get("elapsed") is not None else ""
        icon = STEP_ICONS.get(step["status"], "?")
        lines.append(f"  {i}. {icon} {step['name']} ({step['id']}) {step['status']}{took}")
        if step.get("error"):
            lines.append(f"     {located_error(source, step['error'])}")
    if job["error"]:
        lines.append(f"  {located_error(source, job['error'])}")
    lines += [
        f"  output: {o['name']} ({plural(o['size'], 'byte')}) {o['url']}" for o in job["outputs"]
    ]
    return [printable(line) for line in lines]


@jobs.command()
@click.argument("job_id")
@_server_options
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
@_server_options
def download(client: ApiClient, job_id: str, out_dir: Path, as_zip: bool) -> None:
    """Save a succeeded job's outputs; prints each file saved."""
    from .display import printable

    for path in client.download(job_id, out_dir, as_zip=as_zip):
        click.echo(printable(str(path)))


@jobs.command(epilog=EXIT_STATUS)
@click.argument("job_ids", metavar="JOB...", nargs=-1, required=True)
@_save_option
@_events_option
@_server_options
def follow(client: ApiClient, job_ids: Sequence[str], out_dir: Path | None, as_json: bool) -> None:
    """Follow jobs live until they end, as `xmlflow submit` does (and exit as it does)."""
    all_succeeded = _watch(client, _server_jobs(client, job_ids), _reporter(as_json), out_dir)
    sys.exit(0 if all_succeeded else 1)


def _server_jobs(client: ApiClient, job_ids: Sequence[str]) -> list[FileJob]:
    from .display import FileJob

    jobs = [client.job(job_id) for job_id in job_ids]
    return [
        FileJob(Path(job["filename"]), job["size"], job["id"], steps=len(job["steps"]))
        for job in jobs
    ]


@click.command(epilog=EXIT_STATUS)
@_files_argument
@click.option(
    "--pipeline",
    "-p",
    default=None,
    envvar="XMLFLOW_PIPELINE",
    show_envvar=True,
    help="The pipeline to run (GET /api/pipelines lists them).  [default: the server's]",
)
@_step_option
@_save_option
@_events_option
@_url_option
@_token_option
@_api_errors
def submit(
    files: Sequence[Path],
    pipeline: str | None,
    option_texts: Sequence[str],
    out_dir: Path | None,
    as_json: bool,
    url: str,
    token: str | None,
) -> None:
    """Upload FILES to a server and follow their jobs live, as `xmlflow run` shows them.

    The files are sent as they are, in as few uploads as the server takes (at most its
    XMLFLOW_MAX_UPLOAD_FILES files each), and only if its queue has room for them all.
    Exits 0 only when every job succeeded; Ctrl-C stops following (the jobs go on).
    """
    options = _options(option_texts)
    _quiet_logs()
    with ApiClient(url, token) as client:
        sent = _upload(client, files, pipeline, options)
        all_succeeded = _watch(client, sent.jobs, _reporter(as_json), out_dir)
        if sent.refused is not None:
            unsent = files[sent.count :]
            raise Failed(
                f"{len(unsent)} of {plural(len(files), 'file')} not sent "
                f"(from {unsent[0]} on): {sent.refused.message}"
            )
    sys.exit(0 if all_succeeded else 1)


@dataclass
class _Sent:
    """What :func:`_upload` sent: the jobs of the first ``count`` files, and why the
    files after them were not sent (None when all were)."""

    jobs: list[FileJob]
    count: int
    refused: ApiError | None = None


def _upload(
    client: ApiClient, files: Sequence[Path], pipeline: str | None, options: dict[str, Any]
) -> _Sent:
    """Send ``files`` in uploads of at most the files the server takes in one: the number
    its ``/api/health`` gives, else the one its 413 names (then the files are sent again,
    in smaller uploads).

    Each upload becomes jobs whole or not at all. Nothing is sent when the queue has no
    room for them all; when a later upload is still refused (another client filled the
    queue meanwhile, a bad zip), the jobs of the earlier ones stand: they are returned,
    with the refusal, to be followed.
    """
    room = client.upload_room()
    weights = [_documents(path, room.per_upload) for path in files]
    _check_queue_room(sum(weights), len(files), room)
    size = room.per_upload or sum(weights)
    sent = _Sent([], 0)
    _stop_on_signals()  # SIGTERM, SIGHUP while sending: as Ctrl-C
    try:
        while sent.count < len(files):
            end = _batch_end(weights, sent.count, size)
            batch = files[sent.count : end]
            try:
                job_ids = client.submit(batch, pipeline, options)
            except ApiError as exc:
                limit = exc.upload_limit
                if (
                    limit is not None
                    and len(batch) > 1
                    and 0 < limit < sum(weights[sent.count : end])
                ):
                    size = limit
                    continue
                if not sent.jobs:
                    raise
                sent.refused = exc
                return sent
            sent.jobs += _file_jobs(client, batch, job_ids)
            sent.count += len(batch)
    except KeyboardInterrupt as exc:
        if sent.jobs:
            ids = " ".join(job.job_id for job in sent.jobs)
            click.echo(f"stopped sending; the jobs sent go on: xmlflow jobs follow {ids}", err=True)
        sys.exit(exit_status(exc))
    return sent


def _documents(path: Path, per_upload: int | None) -> int:
    """The jobs a file becomes: a zip's XML members, counted as the server counts them,
    else 1. A zip this cannot count counts 1: it goes alone, and the server's refusal
    says what is wrong with it."""
    from ..inputs import count_xml_members, sniff_format

    try:
        with path.open("rb") as f:
            if sniff_format(f.read(6)) != "zip":
                return 1
        # without the server's limit, no cap on the entries read (it caps them at 10x it)
        return max(1, count_xml_members(path, path.name, per_upload or sys.maxsize))
    except (OSError, XmlflowError):
        return 1


def _batch_end(weights: Sequence[int], start: int, size: int) -> int:
    """Where the upload of the files from ``start`` ends: as many as make at most
    ``size`` documents, and always one (a zip over the limit goes alone, to be refused
    in the server's words)."""
    end, total = start + 1, weights[start]
    while end < len(weights) and total + weights[end] <= size:
        total += weights[end]
        end += 1
    return end


def _check_queue_room(jobs: int, files: int, room: UploadRoom) -> None:
    """Refuse, before any file is sent, more jobs than the server's queue has room for
    (``jobs``: what the ``files`` make, a zip counting its XML members): the server
    refuses such an upload whole, and so does this command."""
    if room.queued is None or room.max_queued is None:
        return
    free = max(0, room.max_queued - room.queued)
    if jobs <= free:
        return
    made, them = plural(files, "file"), "them"
    if jobs != files:  # a zip is a job per XML member
        made += f" {'make' if files > 1 else 'makes'} {plural(jobs, 'job')}"
        them = "files that make"
    if jobs > room.max_queued:
        raise ApiError(
            f"{made}, but at most {room.max_queued} jobs can wait on this server "
            f"(XMLFLOW_MAX_QUEUED): nothing was sent; submit {them} {room.max_queued} or "
            "fewer at a time"
        )
    raise ApiError(
        f"{made}, but the server's queue has room for {plural(free, 'job')} now "
        f"({room.queued} waiting, XMLFLOW_MAX_QUEUED={room.max_queued}): nothing was "
        "sent; try again when it has drained",
        status=503,
    )


def _file_jobs(client: ApiClient, files: Sequence[Path], job_ids: list[str]) -> list[FileJob]:
    """The jobs of one upload, named as the user named the files; an archive became a
    job per member, named as the server names them."""
    from .display import FileJob

    if len(job_ids) != len(files):
        return _server_jobs(client, job_ids)
    return [
        FileJob(p, size=p.stat().st_size, job_id=i) for p, i in zip(files, job_ids, strict=True)
    ]


def _watch(
    client: ApiClient, jobs: list[FileJob], reporter: Reporter, out_dir: Path | None
) -> bool:
    """Show the jobs' events as they come; True when every job succeeded.

    Outputs of succeeded jobs are downloaded to ``out_dir`` when one is given; otherwise
    each is named with its size, and ``jobs download`` fetches them.
    """
    steps = len(client.job(jobs[0].job_id)["steps"])
    by_id = {job.job_id: job for job in jobs}
    taken: set[Path] = set()  # outputs written by this command: none replaces another
    reporter.start(jobs, steps)
    _stop_on_signals()  # SIGTERM, SIGHUP: as Ctrl-C, not a dead display and no word
    try:
        for event in client.follow(list(by_id)):
            job = by_id[event.job_id]
            job.last_event = event.id
            if event.type is EventType.END:
                _ended(client, job, event.data, out_dir, taken)
            reporter.event(job, event)
    except KeyboardInterrupt as exc:
        reporter.finish(jobs)
        left = " ".join(job.job_id for job in jobs if not job.done)
        click.echo(f"stopped following; the jobs go on: xmlflow jobs follow {left}", err=True)
        sys.exit(exit_status(exc))
    except ApiError:
        reporter.finish(jobs)
        raise
    reporter.finish(jobs)
    return all(job.status == "succeeded" for job in jobs)


def _ended(
    client: ApiClient,
    job: FileJob,
    data: dict[str, Any],
    out_dir: Path | None,
    taken: set[Path],
) -> None:
    job.status, job.error = str(data["status"]), data.get("error")
    outputs = data.get("outputs", [])
    if out_dir is not None and job.status == "succeeded" and outputs:
        job.outputs = [str(p) for p in client.download(job.job_id, out_dir, taken=taken)]
    else:
        job.outputs = [f"{o['name']} ({format_size(o['size'])})" for o in outputs]


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
