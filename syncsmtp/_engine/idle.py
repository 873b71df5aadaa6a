"""The inactivity limit of a session (``Policy(idle_limit=...)``): how long
it may go without a byte from the server and without the connection taking
any of its data, beside the send's one whole deadline.

Activity is noted, not timed: each read, each write, and each time the
connection asks for more of a large message stores the reactor's clock in
one attribute; one timer looks at it four times per limit. So a busy
transfer costs no timer resets.

Data the socket has taken may still be on its way: a large message's last
megabytes wait in the kernel's send buffer while a slow server reads them.
Where the kernel tells (Linux: ``TCP_INFO``'s count of bytes the server
acknowledged), the timer also asks it, and a count that grew is activity.
Elsewhere, once the whole message is in the socket, the server's silence is
counted from there.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from .. import _twisted
from ..errors import SendTimeout

__all__ = ["IdleWatch", "bytes_acknowledged", "idle_expired"]

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked, a u64, at this offset (Linux 4.1 and later).
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_BYTES_ACKED_AT = 120
_TCP_INFO_SIZE = 136


def bytes_acknowledged(transport: Any) -> int | None:
    """How many bytes the peer has acknowledged on ``transport``'s TCP
    connection; None where the system does not say."""
    handle = _twisted.tcp_socket(transport) if transport is not None else None
    if _TCP_INFO is None or handle is None:
        return None
    try:
        info = handle.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _BYTES_ACKED_AT + 8:
        return None
    acked: int = struct.unpack_from("=Q", info, _BYTES_ACKED_AT)[0]
    return acked


class IdleWatch:
    """Calls ``expired`` once ``limit`` seconds pass without :meth:`touch`
    and without a change in what ``moved`` returns."""

    __slots__ = ("_expired", "_last", "_limit", "_moved", "_reactor", "_seen", "_timer")

    def __init__(self, reactor: Any, limit: float, expired: Callable[[], None],
                 moved: Callable[[], int | None] = lambda: None) -> None:
        self._reactor = reactor
        self._limit = limit
        self._expired = expired
        self._moved = moved
        self._seen: int | None = None
        self._last = 0.0
        self._timer: Any = None

    @property
    def limit(self) -> float:
        """The seconds of silence allowed."""
        return self._limit

    def start(self) -> None:
        """Watch from now (again, after :meth:`stop` or an expiry)."""
        self.stop()
        self._last = float(self._reactor.seconds())
        self._seen = self._moved()
        self._timer = self._reactor.callLater(self._limit / 4, self._check)

    def touch(self) -> None:
        """Something moved: the silence starts again from now."""
        self._last = float(self._reactor.seconds())

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def stopped(self, outcome: Any) -> Any:
        """:meth:`stop` as a Deferred's callback (passes ``outcome`` on)."""
        self.stop()
        return outcome

    def _check(self) -> None:
        now = float(self._reactor.seconds())
        seen = self._moved()
        if seen != self._seen:
            self._seen, self._last = seen, now
        if now - self._last < self._limit:
            self._timer = self._reactor.callLater(self._limit / 4, self._check)
            return
        self._timer = None
        self._expired()


def idle_expired(where: str, limit: float, stage: str, maybe_delivered: bool) -> SendTimeout:
    """The error of a session that went quiet for ``limit`` seconds at ``stage``."""
    after = ("; the whole message was written, so the server may have it: check before "
             "resending") if maybe_delivered else ""
    return SendTimeout(
        f"{where} went quiet for {limit:g} s at stage {stage!r}: nothing received and none of the "
        f"data taken (the policy's idle_limit){after}. The connection was dropped; raise "
        "idle_limit= for a server that is slow to answer",
        stage=stage,
        maybe_delivered=maybe_delivered,
    )
