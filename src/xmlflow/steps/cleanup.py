"""The seed's last step: confirms the pipeline finished and reports what it produced.

The actual clean-up (deleting the uploaded source and scratch files) is the
runner's job, because it must happen however the job ends, not only when this
step is reached.
"""

from __future__ import annotations

from ..step import StepContext
from ..units import plural


def run_cleanup_step(ctx: StepContext) -> None:
    outputs = sorted(p.name for p in ctx.output_dir.iterdir() if not p.name.startswith("."))
    ctx.progress(1.0, f"{plural(len(outputs), 'output')} ready")
    ctx.log.info("job %s finished its pipeline; outputs: %s", ctx.job_id, ", ".join(outputs))
