"""xmlflow: real-time XML processing pipelines.

The public names: :func:`create_app` (the Flask application factory),
:class:`StepContext` (what a pipeline step receives; see :mod:`xmlflow.step`) and
:class:`XmlflowError` with :class:`StepFailed` (errors whose message is for people).
"""

from .app import create_app
from .errors import StepFailed, XmlflowError
from .step import StepContext

__all__ = ["StepContext", "StepFailed", "XmlflowError", "create_app"]
