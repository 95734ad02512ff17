"""What one conversion did: shared by the Python converter and the native path.

A module of its own so that the native path can return it without importing the
Python converter (and lxml) at all.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConvertStats"]


@dataclass
class ConvertStats:
    """What one conversion did."""

    bytes_in: int = 0
    records: int = 0
    elements: int = 0
    skipped: int = 0
    """Elements beside the records that ``jsonl``/``split`` leave out."""
