"""Who may open a long-lived stream: slots for all clients together, a share per client, a retry hint.

Why: every open stream holds a server thread for its whole life (the
thread-pool server), so streams are counted. Without a per-client share one
client holding open streams (or idle ones) takes every slot and every other
client is refused; idle ClassifyStreams are also closed after the idle
timeout (`classify.micro_batches`), so even a client within its share cannot
sit on slots for ever.

A client is its peer IP address: connections from one host share one share,
so behind a proxy or NAT all clients look like one; raise
`max_streams_per_client` (or set it to 0, no share) there.

A refusal is RESOURCE_EXHAUSTED with a message naming the limit and the
flag that sets it, and the trailer `grpc-retry-pushback-ms` (gRFC A6: gRPC's
own retry support honours it) saying how long to wait before retrying.
"""

from __future__ import annotations

import ipaddress
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass

RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


@dataclass(frozen=True)
class Refusal:
    message: str
    retry_after_ms: int

    @property
    def trailers(self) -> tuple[tuple[str, str], ...]:
        return ((RETRY_PUSHBACK_KEY, str(self.retry_after_ms)),)


def client_of(peer: str) -> str:
    """The client a gRPC peer string belongs to: its IP address without the port ("ipv4:10.0.0.7:51234" -> "10.0.0.7")."""
    kind, _, address = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer  # unix sockets and the like: the whole string
    host = address.rpartition(":")[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:10.0.0.7 on a dual-stack socket is 10.0.0.7
    return str(mapped or ip)


class StreamAdmission:
    """Counts open streams, in total and per client; `admit` refuses beyond either limit."""

    def __init__(self, max_streams: int, max_per_client: int, idle_timeout: float, retry_after_ms: int = 1000):
        if max_streams < 1 or max_per_client < 0:
            raise ValueError("max_streams must be at least 1 and max_per_client at least 0 (0: no per-client limit)")
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self.idle_timeout = idle_timeout
        self.retry_after_ms = retry_after_ms
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def open_streams(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def admit(self, client: str) -> Refusal | None:
        """Take a slot for `client` (None), or say why not (the slot is not taken)."""
        with self._lock:
            total, mine = sum(self._open.values()), self._open[client]
            if self.max_per_client and mine >= self.max_per_client:
                return Refusal(
                    f"this client ({client}) already has {mine} open streams, the per-client limit "
                    f"(--max-streams-per-client {self.max_per_client}); close one, or retry after "
                    f"{self.retry_after_ms} ms with backoff",
                    self.retry_after_ms,
                )
            if total >= self.max_streams:
                return Refusal(
                    f"all {self.max_streams} stream slots of this server are in use (--max-streams); retry after "
                    f"{self.retry_after_ms} ms with backoff (idle streams are closed after {self.idle_timeout:g} s)",
                    self.retry_after_ms,
                )
            self._open[client] += 1
            return None

    def release(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]
