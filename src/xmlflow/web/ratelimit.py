"""How many wrong tokens a client address may try: a token bucket per address.

Only failures take from the bucket, so a person who mistypes the token once is not
slowed down, while a guesser gets ``burst`` tries and then one every
``60 / per_minute`` seconds. An IPv6 client is counted by its /64, the block one
subscriber usually holds, so that walking through its own addresses buys nothing.

The buckets live in this process: with several gunicorn workers each has its own,
so a client may try ``workers`` times as many tokens (the docs say so). Memory is
bounded: a full bucket is forgotten, and past ``max_clients`` the oldest go first.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class FailureLimiter:
    """``retry_after(client)`` is 0 while the client may try; ``failed(client)`` counts."""

    def __init__(
        self,
        per_minute: float,
        *,
        burst: int | None = None,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, math.ceil(per_minute)))
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many client addresses are remembered."""
        return len(self._buckets)

    def retry_after(self, client: str) -> int:
        """Whole seconds until ``client`` may try a token again (0: now)."""
        with self._lock:
            tokens = self._tokens(client_key(client))
        return 0 if tokens >= 1 else math.ceil((1 - tokens) / self.rate)

    def failed(self, client: str) -> None:
        """One wrong token from ``client``."""
        key = client_key(client)
        with self._lock:
            self._buckets[key] = (self._tokens(key) - 1, self.clock())
            self._buckets.move_to_end(key)
            if len(self._buckets) > self.max_clients:
                self._forget()

    def _tokens(self, key: str) -> float:
        if key not in self._buckets:
            return self.burst
        tokens, since = self._buckets[key]
        return min(self.burst, tokens + (self.clock() - since) * self.rate)

    def _forget(self) -> None:
        """Drop the clients whose bucket has refilled; then, if need be, the oldest."""
        for key in [k for k in self._buckets if self._tokens(k) >= self.burst]:
            del self._buckets[key]
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)


def client_key(address: str) -> str:
    """An IPv4 address as is, an IPv6 address as its /64; anything else as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
