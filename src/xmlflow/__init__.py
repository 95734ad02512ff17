"""xmlflow: real-time XML processing pipelines.

The public names: :func:`create_app` (the Flask application factory),
:class:`StepContext` (what a pipeline step receives; see :mod:`xmlflow.step`) and
:class:`XmlflowError` with :class:`StepFailed` (errors whose message is for people).

``create_app`` is imported on first use, so that a step importing ``xmlflow.step``
(or a job's process) does not pay for Flask.
"""

from typing import TYPE_CHECKING, Any

from .errors import StepFailed, XmlflowError
from .step import StepContext

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["StepContext", "StepFailed", "XmlflowError", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'xmlflow' has no attribute {name!r}")
