"""The ``xmlflow`` command (click): the group every subcommand hangs from, and ``main``.

The subcommands live by what they act on: :mod:`.server` (``serve``, ``worker``,
``steps``: run the service), :mod:`.jobs` (``run``, ``submit``, ``jobs``: make and
follow jobs), with :mod:`.localrun` behind ``run``, :mod:`.client` behind ``submit``
and ``jobs``, and :mod:`.display` showing jobs for both. Each imports what a command
needs when it runs: ``xmlflow --help`` loads click and no server library, and
``xmlflow run`` none of Flask, httpx, redis, rq or gunicorn.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from .jobs import jobs, run, submit
from .server import serve, steps, worker


class _Main(click.Group):
    """Usage errors in one line, and never a traceback: ``xmlflow jobs: error: No such …``.

    Click's usual three lines (usage, hint, error) bury the one that matters; its
    suggestions ("Did you mean 'list'?") are kept. Exit status 2, as click's.
    """

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        for name in ("stdout", "stderr"):
            if getattr(sys, name) is None:  # closed by the caller (`xmlflow run … >&-`)
                setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - for the process
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # `xmlflow`, `xmlflow jobs`: the help
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "xmlflow"
            hint = f" (see '{where} --help')" if exc.ctx else ""
            click.echo(f"{where}: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except BrokenPipeError:  # `xmlflow jobs list | head`: the reader left, as click does
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more is written
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # ctx.exit(n), --help, --version

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The ``xmlflow`` program (not :class:`click.testing.CliRunner`, which calls
        :meth:`main`): a command that has ended everything it started may ask, through
        :func:`exit_without_teardown`, to skip the interpreter's teardown."""
        try:
            return self.main(*args, **kwargs)
        except SystemExit as exc:
            if _teardown_skipped:
                _exit_now(exc.code)
            raise


_teardown_skipped = False


def exit_without_teardown() -> None:
    """Let the program end at once when the command returns, without the interpreter's
    teardown: its last garbage collection and the freeing of every module cost a short
    ``xmlflow run`` ~20 ms of CPU (a tenth of it), to give back memory the OS takes
    back anyway. For commands that have stopped their threads and processes and
    removed their files themselves, and that need no ``atexit`` handler."""
    global _teardown_skipped
    _teardown_skipped = True


def _exit_now(code: object) -> None:
    status = code if isinstance(code, int) else 0 if code is None else 1
    if not isinstance(code, int | None):
        print(code, file=sys.stderr)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # the reader left, the disk is full, the stream closed
        pass
    os._exit(status)


@click.group(
    cls=_Main,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "XMLFLOW"},
)
@click.version_option(package_name="xmlflow")
@click.option("--log-level", default="INFO", show_default=True, help="Python logging level.")
def main(log_level: str) -> None:
    """xmlflow: upload XML, run a pipeline of steps on each file, watch it live."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


for command in (serve, worker, steps, run, jobs, submit):
    main.add_command(command)
