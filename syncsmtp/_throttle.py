"""When a Mailer may start its next transaction: a token bucket for its
``rate``, and pauses after the server's throttling replies (plain code, no
Twisted: the pool calls it in the reactor thread with the reactor's clock).

A token is taken just before a message's MAIL FROM is written, never after
its content went out. A throttling reply (421, ``432 4.3.2``, ``451 4.7.x``,
``454 4.7.0``, ``454 Throttling failure``) pauses new transactions for a
backoff that doubles with each pause in a row, up to a cap, and starts
again from the first step once a message goes through.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol, TypeVar

from .errors import SendTimeout, SMTPError
from .policy import Policy
from .result import Reply, ThrottleEvent

__all__ = ["Gate", "Snapshot", "TokenBucket", "held_too_long", "is_throttling"]

_KEPT_EVENTS = 1000


class _Waiting(Protocol):
    @property
    def bucket(self) -> TokenBucket | None: ...


_W = TypeVar("_W", bound=_Waiting)


def is_throttling(reply: Reply | None) -> bool:
    """Whether ``reply`` asks the client to slow down (rather than refusing this message)."""
    if reply is None:
        return False
    code, enhanced = reply.code, reply.enhanced or ""
    if code == 421:
        return True
    if code == 432:
        return enhanced in ("", "4.3.2")
    if code == 451:
        return enhanced.startswith("4.7.")
    if code == 454:
        return enhanced == "4.7.0" or "throttling" in reply.text.lower()
    return False


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; full at first.

    Two rules together. A virtual schedule (one token every ``1 / rate``
    seconds) keeps the average: a token taken a little late (the reactor's
    timer fires after the moment it was set for) does not push every later
    one back, as long as it is less than one interval late. And no
    one-second window ever holds more starts than ``floor(rate)`` (at least
    one) plus ``burst - 1``, however the schedule catches up."""

    __slots__ = ("_interval", "_ready_at", "_recent", "_slack", "rate")

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.rate = rate
        self._interval = 1.0 / rate
        self._slack = (burst - 1) * self._interval
        # When the bucket is next full enough for one token (virtual schedule).
        self._ready_at = float("-inf")
        # The latest starts, as many as one second may hold.
        self._recent: deque[float] = deque(maxlen=max(1, math.floor(rate)) + burst - 1)

    def delay(self, now: float) -> float:
        """Seconds until a token can be taken (0: now)."""
        wait = self._ready_at - self._slack - now
        recent = self._recent
        if len(recent) == recent.maxlen:
            wait = max(wait, recent[0] + 1.0 - now)
        return max(0.0, wait)

    def take(self, now: float) -> None:
        """Take one token (call only when :meth:`delay` is 0)."""
        on_schedule = self._ready_at > now - self._interval  # late by less than one interval
        self._ready_at = (self._ready_at if on_schedule else now) + self._interval
        self._recent.append(now)


class Snapshot(NamedTuple):
    """The gate's counters at a moment (see :meth:`Gate.since`)."""

    at: float
    events: int
    held: float


@dataclass(eq=False)
class Gate:
    """What holds back a Mailer's new transactions: its bucket and its pauses."""

    bucket: TokenBucket | None
    backoff: float
    backoff_cap: float
    paused_until: float = float("-inf")
    #: Pauses in a row without a message going through.
    level: int = 0
    #: The latest throttling replies (a long-lived Mailer keeps the last
    #: _KEPT_EVENTS), and how many there were in all.
    events: deque[ThrottleEvent] = field(default_factory=lambda: deque(maxlen=_KEPT_EVENTS))
    event_count: int = 0
    #: Seconds during which messages waited while the gate was closed.
    held: float = 0.0
    _held_since: float | None = None

    @property
    def rate(self) -> float | None:
        """The Mailer's rate, in messages per second (None: no limit)."""
        return self.bucket.rate if self.bucket is not None else None

    def delay(self, now: float, own: TokenBucket | None = None) -> float:
        """Seconds until a message (with its batch's ``own`` bucket) may start."""
        wait = max(0.0, self.paused_until - now)
        if self.bucket is not None:
            wait = max(wait, self.bucket.delay(now))
        if own is not None:
            wait = max(wait, own.delay(now))
        return wait

    def next_turn(self, now: float, waiting: Iterable[_W]) -> tuple[_W | None, float]:
        """The first of ``waiting`` (each with its own ``bucket`` or None) that
        may start now; else None, and how long until one may."""
        if self.bucket is None and now >= self.paused_until:
            # No rate and no pause (most Mailers): the first may go when it has
            # no batch rate of its own; asked before every message.
            first = next(iter(waiting), None)
            if first is not None and first.bucket is None:
                return first, 0.0
        wait = float("inf")
        for item in waiting:
            delay = self.delay(now, item.bucket)
            if delay <= 0:
                return item, 0.0
            wait = min(wait, delay)
        return None, wait

    def take(self, now: float, own: TokenBucket | None = None) -> None:
        """A message starts now: one token from each bucket."""
        if self.bucket is not None:
            self.bucket.take(now)
        if own is not None:
            own.take(now)

    def hold(self, now: float, holding: bool) -> None:
        """Messages wait for the gate from ``now`` (``holding``), or stopped waiting."""
        if holding and self._held_since is None:
            self._held_since = now
        elif not holding and self._held_since is not None:
            self.held += now - self._held_since
            self._held_since = None

    def held_until(self, now: float) -> float:
        """:attr:`held`, counting a wait still going on."""
        return self.held + (now - self._held_since if self._held_since is not None else 0.0)

    def throttled(self, now: float, reply: Reply) -> None:
        """The server sent a throttling reply: pause, unless a pause is already in force."""
        pause = 0.0
        if now >= self.paused_until:
            pause = min(self.backoff_cap, self.backoff * 2**self.level)
            self.level += 1
            self.paused_until = now + pause
        self.events.append(ThrottleEvent(at=now, reply=reply, pause=pause))
        self.event_count += 1

    def snapshot(self, now: float) -> Snapshot:
        """Where the gate stands at ``now``, for :meth:`since`."""
        return Snapshot(now, self.event_count, self.held_until(now))

    def since(self, now: float, before: Snapshot) -> tuple[tuple[ThrottleEvent, ...], float]:
        """The throttling replies since ``before`` (``at`` counted from then,
        as far as they are kept), and the seconds messages were held back."""
        new = min(self.event_count - before.events, len(self.events))
        kept = list(self.events)[len(self.events) - new:] if new > 0 else []
        events = tuple(replace(event, at=event.at - before.at) for event in kept)
        return events, self.held_until(now) - before.held

    def saw(self, now: float, error: BaseException | None) -> None:
        """A message's outcome (None: it was accepted, which ends the backoff:
        the next pause starts from the first step again)."""
        if error is None:
            self.level = 0
        elif isinstance(error, SMTPError) and error.reply is not None and is_throttling(error.reply):
            self.throttled(now, error.reply)

    def remaining_pause(self, now: float) -> float:
        """Seconds left of the pause in force (0: none)."""
        return max(0.0, self.paused_until - now)


def held_too_long(policy: Policy, timeout: float, paused: bool) -> SendTimeout:
    """The error of a message whose deadline passed while the Mailer held it back."""
    why = ("the Mailer was pausing after the server's throttling replies" if paused
           else "the Mailer's rate limit gave it no turn")
    return SendTimeout(
        f"the message was not started within {timeout:g} s: {why}; nothing was sent to "
        f"{policy.address}. Raise timeout=, or lower the number of messages sent at once",
        host=policy.host,
        stage="connect",
        maybe_delivered=False,
    )
