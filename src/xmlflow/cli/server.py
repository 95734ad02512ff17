"""``xmlflow serve``, ``xmlflow worker`` and ``xmlflow steps``: the service's side.

``serve`` runs the web app and API (gunicorn, or werkzeug with ``--dev``), ``worker``
runs jobs from Redis, ``steps`` checks the configured pipelines. What they start is
imported when they run, so the other commands never load it.
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
from pathlib import Path

import click

from ..errors import XmlflowError


class _ServeCommand(click.Command):
    """``serve --help`` ends with every environment variable the server reads."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ..settings import _ENV

        shown = {p.envvar for p in self.params if isinstance(p.envvar, str)}
        names = [*sorted(set(_ENV) - shown), "XMLFLOW_LOG_LEVEL (same as --log-level)"]
        with formatter.section("Environment variables (see docs/deployment.md)"):
            formatter.write_text(", ".join(names))


@click.command(cls=_ServeCommand)
@click.option(
    "--host", default="127.0.0.1", show_default=True, envvar="XMLFLOW_HOST", show_envvar=True
)
@click.option(
    "--port",
    default=5000,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar="XMLFLOW_PORT",
    show_envvar=True,
    help="The port; taken ones are refused at once (XMLFLOW_PORT=8000 make run).",
)
@click.option(
    "--workers",
    "web_workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    envvar="XMLFLOW_WEB_WORKERS",
    show_envvar=True,
    help="Web processes (gunicorn, gevent); more than 1 needs XMLFLOW_REDIS_URL.",
)
@click.option(
    "--dev",
    is_flag=True,
    help="Serve with werkzeug's threaded server instead, for debugging: one thread per "
    "connection, so it falls behind with hundreds of open streams.",
)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, web_workers: int, dev: bool) -> None:
    """Serve the web app and API: gunicorn with gevent workers.

    Embedded mode (no XMLFLOW_REDIS_URL) is one gevent worker holding SQLite, the
    job processes and every stream; Redis mode may have several.
    """
    from ..gunicorn_conf import run_gunicorn

    if dev and web_workers > 1:
        raise click.UsageError("--dev is one werkzeug process: it takes no --workers")
    check_port_free(host, port)
    try:
        if not dev:
            run_gunicorn(host, port, web_workers, log_level=ctx.find_root().params["log_level"])
        _serve_werkzeug(host, port)
    except XmlflowError as exc:
        raise refusal(exc) from None


def refusal(exc: XmlflowError) -> click.ClickException:
    """Why the service cannot start, as the command's error: an ``XMLFLOW_*`` value that
    is not a number, out of its range or malformed is a usage error (exit 2, one line,
    as ``xmlflow run`` says it); anything else (a broken config.py, Redis extra missing)
    click's ``Error:``, exit 1."""
    from ..settings import BadSetting

    if isinstance(exc, BadSetting):
        return click.UsageError(exc.message)
    return click.ClickException(exc.message)


def check_port_free(host: str, port: int) -> None:
    """Fail at once, saying how to choose another port, when this one is taken.

    Gunicorn would retry for seconds and then say only "Connection in use". The
    check binds as gunicorn will (``SO_REUSEADDR``), so a port in TIME_WAIT is free.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise click.ClickException(
                    f"cannot listen on {host}:{port}: {exc.strerror}"
                ) from None
            raise click.ClickException(
                f"port {port} on {host} is taken (another xmlflow, or another program); "
                f"choose another: XMLFLOW_PORT={port + 1} make run, or "
                f"xmlflow serve --port {port + 1}"
            ) from None


def _serve_werkzeug(host: str, port: int) -> None:
    """``serve --dev``: werkzeug's threaded server, a thread per connection, in this process."""
    from werkzeug.serving import make_server

    from ..app import create_app

    app = create_app()
    server = make_server(host, port, app, threaded=True)  # a thread per connection, daemonic
    signal.signal(signal.SIGTERM, _interrupt)
    settings = app.extensions["xmlflow"].settings
    click.echo(
        f"xmlflow serving http://{host}:{server.port}/ (werkzeug, --dev) "
        f"(data: {settings.data_dir.resolve()}, config: {settings.config_path or 'built-in'})"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.extensions["xmlflow"].close()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops like Ctrl-C: running jobs end ``interrupted`` at once, queued ones wait."""
    raise KeyboardInterrupt


@click.command()
@click.option("--burst", is_flag=True, help="Stop when the queue is empty (for tests and cron).")
@click.option("--name", default=None, help="The RQ worker's name (default: host, pid, random).")
def worker(burst: bool, name: str | None) -> None:
    """Run jobs from Redis (needs XMLFLOW_REDIS_URL); start as many as you like, anywhere."""
    from ..backends import run_rq_worker
    from ..settings import load_settings

    try:
        run_rq_worker(load_settings(), burst=burst, name=name)
    except XmlflowError as exc:
        raise refusal(exc) from None


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="XMLFLOW_CONFIG",
    help="The config.py to read (default: ./config.py, else the built-in pipeline).",
)
def steps(config_path: Path | None) -> None:
    """List the configured pipelines and check that every step loads."""
    from ..pipeline import check_step, step_file
    from ..settings import BadSetting, load_settings

    try:
        settings = load_settings(config_path=config_path)
    except BadSetting as exc:
        raise click.UsageError(exc.message) from None
    except XmlflowError as exc:  # a broken config.py: said as each step's state is
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    click.echo(f"config: {settings.config_path or 'built-in default'}")
    broken = 0
    for name, specs in settings.pipelines.items():
        click.echo(f"pipeline {name}:")
        for i, spec in enumerate(specs):
            where = step_file(spec, settings.steps_dir) or f"xmlflow.steps.{spec.id}"
            try:
                check_step(spec, settings.steps_dir, settings.config_dir)
                state = "ok"
            except XmlflowError as exc:
                state, broken = f"BROKEN: {exc.message}", broken + 1
            click.echo(
                f"  {i + 1}. {spec.id} ({spec.name}) -> {spec.module}() in {where}"
                f" delay={spec.delay:g} error_chance={spec.error_chance:g}  [{state}]"
            )
    sys.exit(1 if broken else 0)
