"""The list filters (``tests/integration/test_jobs_filters.py``) again, in Redis mode."""

from __future__ import annotations

import pytest

from ..integration.test_jobs_filters import (
    test_bad_filters_are_refused_with_a_reason,
    test_search_filters_and_pages_the_list,
    test_status_filter_without_search_merges_the_sets,
)

pytestmark = pytest.mark.redis

__all__ = [
    "test_bad_filters_are_refused_with_a_reason",
    "test_search_filters_and_pages_the_list",
    "test_status_filter_without_search_merges_the_sets",
]
