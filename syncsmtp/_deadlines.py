"""The deadlines of a pool's requests, watched by one timer (reactor side).

A Twisted timer (``callLater``, then ``cancel``) per message cost
``send_many`` about 4% of its instructions a message (callgrind, 2,000
messages over 8 connections). Here the deadlines wait in a heap of their
own, ordered by time, and one timer is set for the earliest. A request that
finishes is not taken out at once (its entry lets go of it, and of the
message it held): the entry is passed over when its turn comes, and the
heap is rebuilt when such entries outnumber the live ones, so it stays
about as small as the number of requests under way. The timer is left set
when the last live request finishes (one message after another would
otherwise set and cancel it for each); it finds nothing to do when it
fires, and is cancelled once the pool is closed and nothing is under way.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._request import Request

__all__ = ["Deadlines"]

# Finished requests tolerated in the heap before it is rebuilt without them.
_MIN_STALE = 64


class Deadlines:
    """Calls ``expire(request)`` when a request's time is up, unless it finished first."""

    def __init__(self, reactor: Any, expire: Callable[[Request], None]) -> None:
        self._reactor = reactor
        self._expire = expire
        # (deadline, order, [request]): the list is emptied to None when the
        # request finishes, so that a passed-over entry holds nothing.
        self._heap: list[tuple[float, int, list[Request | None]]] = []
        self._order = itertools.count()  # ties in time go first come, first served
        self._live = 0
        self._stale = 0
        self._timer: Any = None
        self._timer_at = float("inf")
        self._closed = False

    def add(self, request: Request, timeout: float) -> None:
        """Watch ``request``: expired ``timeout`` seconds from now."""
        at = float(self._reactor.seconds()) + timeout
        entry: list[Request | None] = [request]
        heapq.heappush(self._heap, (at, next(self._order), entry))
        request.deadline = entry
        request.deadlines = self
        self._live += 1
        if at < self._timer_at:
            self._set_timer(at)

    def finished(self, entry: list[Request | None]) -> None:
        """The request of ``entry`` finished (see ``Request.abandon``)."""
        entry[0] = None
        self._live -= 1
        self._stale += 1
        if not self._live and self._closed:
            self._clear()
        elif self._stale > max(_MIN_STALE, self._live):
            # In place: _time_up may be walking this heap.
            self._heap[:] = [kept for kept in self._heap if kept[2][0] is not None]
            heapq.heapify(self._heap)
            self._stale = 0

    def close(self) -> None:
        """The pool is closing: no timer is left once nothing is under way."""
        self._closed = True
        if not self._live:
            self._clear()

    def _set_timer(self, at: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        delay = max(0.0, at - float(self._reactor.seconds()))
        self._timer = self._reactor.callLater(delay, self._time_up)
        self._timer_at = at

    def _clear(self) -> None:
        """Nothing is watched: no timer is left behind in the reactor."""
        self._heap.clear()
        self._stale = 0
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer, self._timer_at = None, float("inf")

    def _time_up(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        heap, now = self._heap, float(self._reactor.seconds())
        while heap and heap[0][0] <= now:
            request = heapq.heappop(heap)[2][0]
            if request is None:
                self._stale -= 1
            else:
                # Out of the heap now: not watched, and not to be counted as a
                # finished entry still in it when the request finishes.
                request.deadline = request.deadlines = None
                self._live -= 1
                self._expire(request)  # it finishes the request (see SessionPool._deadline)
        while heap and heap[0][2][0] is None:
            heapq.heappop(heap)
            self._stale -= 1
        if heap:
            self._set_timer(heap[0][0])
