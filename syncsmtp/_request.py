"""One message handed to a :class:`~syncsmtp._pool.SessionPool` (reactor side):
its deadline, the session sending it, and where its outcome goes, once.

Outcomes are handed on by plain calls rather than Deferreds: ``send_many``
makes one request a message, and the two Deferreds each had (the session's
outcome for the pool, the pool's for the batch) cost it about 7% of its
instructions a message (callgrind, 2,000 messages over 8 connections: 536k
to 500k).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from ._deadlines import Deadlines
    from ._engine import Progress, SMTPClientProtocol
    from ._throttle import TokenBucket
    from .message import Envelope
    from .result import SendResult

__all__ = ["Report", "Request", "SessionOutcome"]

#: Where a request's outcome goes: a result, or a Failure wrapping an SMTPError.
Report = Callable[["SendResult | Failure"], object]


class Request:
    """One message waiting for, or on, a session of the pool."""

    __slots__ = ("_report", "bucket", "deadline", "deadlines", "envelope", "finished", "outcome", "progress",
                 "retried", "session", "timeout")

    def __init__(self, envelope: Envelope, progress: Progress, timeout: float, report: Report,
                 bucket: TokenBucket | None = None) -> None:
        self.envelope = envelope
        self.progress = progress
        self.timeout = timeout
        self._report = report
        self.bucket = bucket  # its batch's own rate
        self.deadlines: Deadlines | None = None  # what watches its deadline
        self.deadline: list[Request | None] | None = None  # its entry there
        self.session: SMTPClientProtocol | None = None
        self.outcome: SessionOutcome | None = None  # where that session puts its outcome
        self.retried = False
        #: True once the outcome was reported, or the request abandoned.
        self.finished = False

    def finish(self, outcome: SendResult | Failure) -> None:
        """Report ``outcome``, unless an outcome was reported already."""
        if not self.finished:
            self.abandon()
            self._report(outcome)

    def abandon(self) -> None:
        """Report nothing from now on (the caller gave up); its deadline is no longer watched."""
        if self.finished:
            return
        self.finished = True
        if self.deadlines is not None and self.deadline is not None:
            self.deadlines.finished(self.deadline)
        self.deadlines = self.deadline = None


class SessionOutcome:
    """Where a session puts the outcome of the message it was handed: passed
    straight on to ``deliver`` with the session and the request."""

    __slots__ = ("_deliver", "_request", "_session", "called")

    def __init__(self, deliver: Callable[[SendResult | Failure, SMTPClientProtocol, Request], None],
                 session: SMTPClientProtocol, request: Request) -> None:
        self._deliver = deliver
        self._session = session
        self._request = request
        self.called = False

    def callback(self, result: SendResult) -> None:
        self.called = True
        self._deliver(result, self._session, self._request)

    def errback(self, fail: Failure) -> None:
        self.called = True
        self._deliver(fail, self._session, self._request)
