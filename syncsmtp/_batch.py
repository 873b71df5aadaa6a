"""Feeding many messages to a SessionPool (reactor side: runs in the reactor thread).

Messages arrive while the caller is still preparing the rest, and a window
of them is kept in flight: two per connection, or, once the server is known
to offer PIPELINING, as many as the connections can have under way
(MAX_IN_FLIGHT back to back on each). So each message's deadline starts
when it is about to be sent, not when the batch began.

A rate (the batch's own, or the Mailer's) is kept by the pool, which takes a
token just before each message's MAIL FROM; both apply, so the stricter one
sets the pace. The window is then no larger than the messages the rate lets
start within a quarter of a deadline, so that none runs out of time while
queued behind the others.

A transient failure (4xx, lost connection, time-out) that cannot have
delivered the message is retried after a capped, doubling delay; after a
throttling reply, once the Mailer's pause is over.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

from ._engine import Progress
from ._engine.base import MAX_IN_FLIGHT
from ._pool import SessionPool
from ._request import Request
from ._throttle import TokenBucket, is_throttling
from .errors import SMTPError
from .message import Envelope
from .result import SendResult

__all__ = ["Batch"]

Outcome = SendResult | SMTPError


class Batch:
    """Sends the items (index, envelope) given to :meth:`add` through ``pool``;
    calls ``report(index, outcome)`` once per item, in completion order."""

    def __init__(
        self,
        reactor: Any,
        pool: SessionPool,
        *,
        timeout: float,
        connections: int,
        rate: float | None,
        retries: int,
        backoff: float,
        backoff_cap: float,
        report: Callable[[int, Outcome], None],
    ) -> None:
        self._reactor = reactor
        self._pool = pool
        self._items: deque[tuple[int, Envelope]] = deque()
        self._timeout = timeout
        self._connections = connections
        self._bucket = TokenBucket(rate) if rate else None
        # How many messages may be queued at once: a quarter of a deadline's
        # worth of tokens at the stricter rate.
        rates = [r for r in (rate, pool.gate.rate) if r]
        self._rate_window = max(1, math.floor(min(rates) * timeout / 4)) if rates else None
        self._retries = retries
        self._backoff = backoff
        self._backoff_cap = backoff_cap
        self._report = report
        self._in_flight: dict[int, Request] = {}
        self._delayed: dict[int, Any] = {}
        self._cancelled = False
        self._filling = False
        self.retried = 0

    def add(self, items: list[tuple[int, Envelope]]) -> None:
        """More messages, sent after those given before."""
        self._items.extend(items)
        if not self._cancelled:
            self._fill()

    def _fill(self) -> None:
        # A send can fail at once and call back into _fill; the loop below
        # picks that up, instead of recursing once per message.
        if self._filling:
            return
        self._filling = True
        try:
            window = self._connections * (MAX_IN_FLIGHT if self._pool.pipelines else 2)
            if self._rate_window is not None:
                window = min(window, self._rate_window)
            while self._items and len(self._in_flight) + len(self._delayed) < window:
                index, envelope = self._items.popleft()
                self._schedule(index, envelope, attempt=0, delay=0.0)
        finally:
            self._filling = False

    def _schedule(self, index: int, envelope: Envelope, attempt: int, delay: float) -> None:
        if delay > 0:
            self._delayed[index] = self._reactor.callLater(delay, self._launch, index, envelope, attempt)
        else:
            self._launch(index, envelope, attempt)

    def _launch(self, index: int, envelope: Envelope, attempt: int) -> None:
        self._delayed.pop(index, None)
        if self._cancelled:
            return
        request = self._pool.submit(envelope, self._timeout, Progress(),
                                    functools.partial(self._finished, index, envelope, attempt), self._bucket)
        if not request.finished:  # (a closed Mailer fails it at once)
            self._in_flight[index] = request

    def _finished(self, index: int, envelope: Envelope, attempt: int, outcome: SendResult | Failure) -> None:
        self._in_flight.pop(index, None)
        if isinstance(outcome, Failure):
            error = outcome.value
            if not isinstance(error, SMTPError):
                error = SMTPError(f"unexpected failure: {error!r}", stage="connect")
            if self._worth_retrying(error, attempt):
                self.retried += 1
                if is_throttling(error.reply):
                    # The Mailer pauses for it: try again when that pause is over.
                    delay = self._pool.gate.remaining_pause(float(self._reactor.seconds()))
                else:
                    delay = min(self._backoff_cap, self._backoff * 2**attempt)
                self._schedule(index, envelope, attempt + 1, delay)
                return
            self._report(index, error)
        else:
            self._report(index, outcome)
        if not self._cancelled:
            self._fill()

    def _worth_retrying(self, error: SMTPError, attempt: int) -> bool:
        if self._cancelled or attempt >= self._retries:
            return False
        return error.transient and not error.maybe_delivered

    def cancel(self) -> None:
        """Stop: nothing new starts, messages under way are abandoned (their
        connections dropped), and no more reports are made."""
        self._cancelled = True
        self._report = lambda index, outcome: None
        for call in self._delayed.values():
            if call.active():
                call.cancel()
        self._delayed.clear()
        in_flight, self._in_flight = self._in_flight, {}
        for request in in_flight.values():
            self._pool.cancel(request)
