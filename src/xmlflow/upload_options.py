"""What an upload's ``options`` may set: only what each step declares, checked before any job.

``config.py`` is the operator's; an upload is anyone's. So an upload (the multipart
field ``options``, and ``xmlflow run --option``, which goes through the same check)
may set only the options a step lists in its ``UPLOAD_OPTIONS`` (see
:class:`xmlflow.step.UploadOption`): never a path, code, or a limit above the
configured one. Everything is refused with 422 naming the step and the key, before a
job or a file exists, and the step's own ``check_options`` then sees the merged
options, so a bad value fails the upload, not the job later.
"""

from __future__ import annotations

import difflib
from typing import Any

from .errors import ConfigError, Unprocessable
from .models import StepSpec
from .pipeline import check_step_options, upload_options
from .settings import Settings
from .step import UploadOption

__all__ = ["MAX_OPTIONS_CHARS", "check_job_options", "upload_options_json"]

MAX_OPTIONS_CHARS = 16 * 1024
"""The whole ``options`` form field, as sent: every job of the upload keeps a copy."""


def check_job_options(
    options: dict[str, dict[str, Any]], specs: list[StepSpec], settings: Settings
) -> None:
    """Refuse (422, naming step and key) anything the pipeline's steps do not let uploads set."""
    unknown = sorted(set(options) - {s.id for s in specs})
    if unknown:
        raise Unprocessable(
            f"options name step(s) not in this pipeline: {', '.join(unknown)}",
            details={"unknown": unknown, "steps": [s.id for s in specs]},
        )
    for step_id, values in options.items():
        if not isinstance(values, dict):
            raise Unprocessable(f"options for step {step_id!r} must be an object of key: value")
        for spec in (s for s in specs if s.id == step_id):
            _check_step(spec, values, settings)


def _check_step(spec: StepSpec, values: dict[str, Any], settings: Settings) -> None:
    allowed = upload_options(spec, settings.steps_dir)
    for key, value in values.items():
        option = allowed.get(key)
        if option is None:
            raise _not_settable(spec, key, allowed)
        problem = option.problem(value, spec.options.get(key, option.default))
        if problem:
            raise Unprocessable(
                f"step {spec.id!r}: option {key!r} {problem}",
                details={"step": spec.id, "key": key},
            )
    if values:
        merged = {**spec.options, **values}
        try:
            check_step_options(spec, merged, settings.steps_dir, settings.config_dir)
        except ConfigError as exc:
            raise Unprocessable(
                f"step {spec.id!r}: {exc.message}", details={"step": spec.id}
            ) from None


def _not_settable(spec: StepSpec, key: str, allowed: dict[str, UploadOption]) -> Unprocessable:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    settable = ", ".join(sorted(allowed)) or "none"
    return Unprocessable(
        f"step {spec.id!r}: an upload may not set option {key!r}{hint}; "
        f"options an upload may set: {settable}",
        details={"step": spec.id, "key": key, "allowed": sorted(allowed)},
    )


def upload_options_json(spec: StepSpec, settings: Settings) -> list[dict[str, Any]]:
    """The step's settable options as ``GET /api/pipelines`` lists them."""
    declared = upload_options(spec, settings.steps_dir)
    return [o.to_dict(spec.options.get(name)) for name, o in declared.items()]
