"""The RQ job function's old name, ``xmlflow.rqjobs.run_job``, for jobs enqueued by it.

RQ stores the function's dotted name with each job. Jobs that an older xmlflow put in
a running Redis, and that still wait there, name this module: it resolves them to
:func:`xmlflow.backends.redis.worker.run_job`, where RQ code lives now. New jobs name
that function directly (:data:`xmlflow.backends.redis.jobs.JOB_FUNCTION`).
"""

from __future__ import annotations

from .backends.redis.worker import run_job

__all__ = ["run_job"]
