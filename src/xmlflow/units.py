"""Numbers for people: counts with their noun, sizes, rates and durations with units.

One home for the wording the command line prints (and steps may use in their
progress messages), so that "1 record", "2 outputs" and "1.5 s" read the same
everywhere. Pure functions, no imports: cheap for ``xmlflow run`` and for job processes.
"""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 record``, ``2 records``, ``0 records``; ``nouns`` for irregular plurals.

    >>> plural(1, "record"), plural(2, "output"), plural(0, "entry", "entries")
    ('1 record', '2 outputs', '0 entries')
    """
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def format_size(n: float) -> str:
    """Bytes in decimal units, as disks and networks count them.

    >>> format_size(999), format_size(1500), format_size(12_345_678), format_size(3e9)
    ('999 B', '1.5 kB', '12.3 MB', '3.0 GB')
    """
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            break
    return f"{n:.1f} {unit}"


def format_rate(bytes_per_second: float) -> str:
    """Bytes a second.

    >>> format_rate(4_200_000)
    '4.2 MB/s'
    """
    return f"{format_size(bytes_per_second)}/s"


def format_duration(seconds: float) -> str:
    """A duration with its unit, precise where it matters.

    >>> format_duration(0.0123), format_duration(1.5), format_duration(75), format_duration(3725)
    ('12 ms', '1.50 s', '1 min 15 s', '1 h 02 min')
    """
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
