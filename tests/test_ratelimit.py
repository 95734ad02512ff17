"""The wrong-token limiter on its own, with a clock the test moves (the HTTP side is in
tests/integration/test_signin.py)."""

from __future__ import annotations

import pytest

from xmlflow.web.ratelimit import FailureLimiter, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_failures_then_one_per_interval() -> None:
    clock = Clock()
    limiter = FailureLimiter(6, clock=clock)  # 6 a minute: one every 10 s after the burst
    for _ in range(6):
        assert limiter.retry_after("10.0.0.1") == 0
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 10
    assert limiter.retry_after("10.0.0.2") == 0
    clock.now += 4
    assert limiter.retry_after("10.0.0.1") == 6
    clock.now += 6
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 10


def test_the_bucket_refills_to_the_burst_and_no_further() -> None:
    clock = Clock()
    limiter = FailureLimiter(60, burst=3, clock=clock)
    limiter.failed("a")
    clock.now += 3600
    for _ in range(3):
        limiter.failed("a")
    assert limiter.retry_after("a") == 1


def test_memory_is_bounded_by_max_clients() -> None:
    clock = Clock()
    limiter = FailureLimiter(1, max_clients=100, clock=clock)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    assert limiter.retry_after("10.0.3.231") > 0  # the latest are kept
    assert limiter.retry_after("10.0.0.0") == 0  # the oldest were forgotten


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unknown", "unknown"),
    ],
)
def test_clients_are_counted_by_ipv4_address_or_ipv6_slash_64(address: str, key: str) -> None:
    assert client_key(address) == key
