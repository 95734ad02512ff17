"""Every Redis key xmlflow uses, as class-level templates (RQ's ``key_template`` habit).

One place to read the whole data model::

    xmlflow:job:<id>          hash   doc (the Job as JSON), status, cancel, attempts, nonce
    xmlflow:events:<id>       stream one entry per event, entry id "<Event.id>-0"; never trimmed
    xmlflow:lease:<id>        string the running attempt's number, while its process lives (expires)
    xmlflow:jobs              zset   every job, by creation time
    xmlflow:jobs:<status>     zset   jobs in one status, by creation time
    xmlflow:ended             zset   finished jobs, by end time (the retention sweep reads it)
    xmlflow:monitor           string a short lock: one process looks for lost workers at a time
    xmlflow:webhook:<id>      hash   a webhook delivery not yet done: job_id, body (the JSON
                                     sent), created_at, attempts, token (its current claim),
                                     error (the last try's); written with the job's end event
    xmlflow:webhooks          zset   delivery ids, by when each may be claimed next: its next
                                     try, or the end of its current claim's lease
"""

from __future__ import annotations

from ...models import JobStatus

QUEUE_NAME = "xmlflow"


class Keys:
    job = "xmlflow:job:{0}"
    events = "xmlflow:events:{0}"
    lease = "xmlflow:lease:{0}"
    all_jobs = "xmlflow:jobs"
    by_status = "xmlflow:jobs:{0}"
    ended = "xmlflow:ended"
    monitor = "xmlflow:monitor"
    webhook = "xmlflow:webhook:{0}"
    webhooks_due = "xmlflow:webhooks"

    @classmethod
    def status_sets(cls) -> list[str]:
        return [cls.by_status.format(s) for s in JobStatus]


def stream_id(event_id: int) -> str:
    """The stream entry id of an event: its per-job number in the milliseconds part.

    So ``XRANGE <key> <n+1> +`` and ``XREAD ... <n>`` both mean "after event n", and
    ``XADD`` itself refuses an id that does not increase.
    """
    return f"{event_id}-0"


def event_id(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])
