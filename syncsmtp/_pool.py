"""Reused sessions to one server (reactor side: every method runs in the reactor thread).

A pool keeps up to ``size`` sessions set up (EHLO, TLS, AUTH done) and hands
each message to an idle one, or, with PIPELINING, behind the messages of a
busy one that has room (see ``can_take``). While there are fewer than
``size`` sessions it opens another when no session can take the message
now, and one at a time when only a busy one can: messages sent at once then
spread over the connections asked for instead of queueing on one. A session
the server closed, or that idled past ``idle_timeout``, is dropped. If the
connection is lost before any of the message's data was sent (the server
closed an idle connection as the message arrived), the message is tried
once more on another session; once DATA began, never.

A message starts only when the pool's :class:`~syncsmtp._throttle.Gate` lets
it (the Mailer's rate, its own batch's rate, a pause after a throttling
reply): a token is taken just before its MAIL FROM is written. Its deadline
runs while it waits.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from ._deadlines import Deadlines
from ._engine import Progress, SMTPClientProtocol, connect_timeout, open_session
from ._pool_sessions import PoolSessions
from ._request import Report, Request, SessionOutcome
from ._throttle import Gate, TokenBucket, held_too_long
from .errors import ConnectionLostError, SMTPError
from .message import Envelope
from .policy import Policy
from .result import SendResult

__all__ = ["SessionPool"]

# Stages at which nothing of the message has reached the server yet.
_BEFORE_DATA = frozenset({"mail", "rcpt", "data"})
#: Seconds without new connections after one could not be set up while
#: another session was: the server may limit how many connections a client
#: has, and the sessions it has carry the messages meanwhile.
GROWTH_PAUSE = 60.0


def _worth_retrying(outcome: Any, session: SMTPClientProtocol, request: Request) -> bool:
    """A reused connection that died before any of the message's data went out."""
    if not isinstance(outcome, Failure) or request.retried or request.finished:
        return False
    error = outcome.value
    return (
        isinstance(error, ConnectionLostError)
        and not error.maybe_delivered
        and error.stage in _BEFORE_DATA
        and session.transactions > 1
    )


@dataclass(eq=False)
class SessionPool:
    """Up to ``size`` reusable sessions to the policy's server."""

    reactor: Any
    policy: Policy
    size: int
    idle_timeout: float
    gate: Gate = field(default_factory=lambda: Gate(None, 1.0, 60.0))
    _sessions: PoolSessions = field(init=False)
    _waiting: deque[Request] = field(default_factory=deque)
    _expired: set[SMTPClientProtocol] = field(default_factory=set)
    _no_growth_until: float = float("-inf")  # see GROWTH_PAUSE
    # open() calls waiting for a session to be set up.
    _openers: list[defer.Deferred[None]] = field(default_factory=list)
    _closing: bool = False
    _wake: Any = None  # a dispatch when the gate opens again
    # Set once a session here was set up with PIPELINING (see ``pipelines``).
    _pipelining_seen: bool = False
    _deadlines: Deadlines = field(init=False)  # the requests' deadlines

    def __post_init__(self) -> None:
        self._deadlines = Deadlines(self.reactor, self._deadline)
        self._sessions = PoolSessions(self.reactor, self.idle_timeout)

    def open(self, timeout: float) -> defer.Deferred[None]:
        """Fire once a session is set up (connecting one now when none is), or
        fail with the reason the next one could not be."""
        opened: defer.Deferred[None] = defer.Deferred()
        if self._closing:
            opened.errback(Failure(SMTPError("the Mailer is closed", host=self.policy.host)))
        elif self._sessions.up:
            opened.callback(None)
        else:
            self._openers.append(opened)
            if not self._sessions.connecting:
                self._connect(timeout)
        return opened

    def _opened(self, outcome: Failure | None) -> None:
        openers, self._openers = self._openers, []
        for opened in openers:
            if isinstance(outcome, Failure):
                opened.errback(outcome)
            else:
                opened.callback(None)

    # -- sending -------------------------------------------------------------------------

    def send(self, envelope: Envelope, timeout: float, progress: Progress,
             bucket: TokenBucket | None = None) -> defer.Deferred[SendResult]:
        """Queue one message (see :meth:`submit`); the Deferred fires with its
        outcome (cancel it to abandon the message)."""
        done: defer.Deferred[SendResult] = defer.Deferred(lambda _: self.cancel(request))
        request = self.submit(envelope, timeout, progress, done.callback, bucket)
        return done

    def submit(self, envelope: Envelope, timeout: float, progress: Progress, report: Report,
               bucket: TokenBucket | None = None) -> Request:
        """Queue one message (taking a token of ``bucket`` too when it starts);
        ``report`` gets its outcome, a SendResult or a Failure, unless the
        request is cancelled first (:meth:`cancel`)."""
        request = Request(envelope, progress, timeout, report, bucket)
        if self._closing:
            request.finish(Failure(SMTPError("the Mailer is closed", host=self.policy.host)))
            return request
        self._deadlines.add(request, timeout)
        progress.stage = "connect"
        self._waiting.append(request)
        self._dispatch()
        return request

    def _dispatch(self) -> None:
        while self._waiting:
            now = float(self.reactor.seconds())
            request, wait = self.gate.next_turn(now, self._waiting)
            self.gate.hold(now, request is None)
            if request is None:
                self._wake_in(wait)
                return
            session = self._sessions.take_idle()
            if session is None:
                session = self._sessions.take_with_room()
                # Behind a busy session's messages, one connection more at a time.
                if self._may_grow(now) and (session is None or not self._sessions.connecting):
                    self._connect()
                if session is None:
                    return
            self._waiting.remove(request)
            self.gate.take(now, request.bucket)
            self._start(session, request)
        self.gate.hold(float(self.reactor.seconds()), False)

    def _wake_in(self, delay: float) -> None:
        if self._wake is not None and self._wake.active():
            if self._wake.getTime() <= self.reactor.seconds() + delay:
                return
            self._wake.cancel()
        self._wake = self.reactor.callLater(delay, self._dispatch)

    def _may_grow(self, now: float) -> bool:
        sessions = self._sessions
        return sessions.total < self.size and (not sessions.up or now >= self._no_growth_until)

    def _has_room(self, session: SMTPClientProtocol) -> None:
        """``session`` (busy) may take another message: remember it and hand one over."""
        self._sessions.remember_room(session)
        self._dispatch()

    def _start(self, session: SMTPClientProtocol, request: Request) -> None:
        self._sessions.busy.add(session)
        request.session = session
        request.outcome = SessionOutcome(self._transaction_done, session, request)
        session.transact(request.envelope, request.progress, request.outcome, quit_after=False)

    def _transaction_done(self, outcome: SendResult | Failure, session: SMTPClientProtocol,
                          request: Request) -> None:
        self._judge(outcome)
        # Whether a waiting message may now go: only this session changed (a
        # lost one is forgotten, and dispatched for, when it closes).
        room = False
        if session.idle or session.closed.called:
            self._sessions.busy.discard(session)
        elif session.can_take:
            self._sessions.remember_room(session)  # a finished message made room
            room = True
        request.session = request.outcome = None
        # Park the session first: the outcome's callbacks may queue the next message.
        if session.idle:
            if self._closing:
                session.quit()
            else:
                self._sessions.park(session)
                room = True
        if _worth_retrying(outcome, session, request):
            request.retried = True
            request.progress.stage = "connect"
            self._waiting.appendleft(request)
            room = True
        else:
            request.finish(outcome)
        if room:
            self._dispatch()

    def _judge(self, outcome: Any) -> None:
        self.gate.saw(float(self.reactor.seconds()), outcome.value if isinstance(outcome, Failure) else None)

    # -- sessions -------------------------------------------------------------------------

    def _connect(self, timeout: float | None = None) -> None:
        timeout = timeout or self._connect_timeout()
        self._sessions.connecting += 1
        try:
            session, _ = open_session(self.reactor, self.policy, Progress(), timeout)
        except SMTPError as error:
            self._sessions.connecting -= 1
            self._opened(Failure(error))
            if not self._pause_growth():
                self._fail_oldest(Failure(error))
            return
        self._sessions.all.add(session)
        # A session stuck in set-up (no greeting, a stalled handshake) must not
        # hold a place in the pool for ever.
        setup_timer = self.reactor.callLater(timeout, self._setup_expired, session)

        def stop_setup_timer(outcome: Any) -> Any:
            if setup_timer.active():
                setup_timer.cancel()
            return outcome

        session.ready.addBoth(stop_setup_timer)
        session.ready.addCallbacks(self._ready, self._setup_failed, callbackArgs=(session,),
                                   errbackArgs=(session,))
        session.closed.addCallback(lambda _: self._forget(session))

    def _connect_timeout(self) -> float:
        waiting = [request.timeout for request in self._waiting]
        return max(waiting) if waiting else 30.0

    def _setup_expired(self, session: SMTPClientProtocol) -> None:
        if not session.ready.called:
            # The messages that were waiting for it have deadlines of their own.
            self._expired.add(session)
            if session.transport is not None:
                session.abort_for_deadline()
            else:
                session.ready.errback(Failure(SMTPError("connecting took too long", stage="connect")))

    def _ready(self, _: None, session: SMTPClientProtocol) -> None:
        self._sessions.connecting -= 1
        if b"PIPELINING" in session.capabilities:
            self._pipelining_seen = True
        session.on_room = functools.partial(self._has_room, session)
        if self._closing:
            session.quit()
            return
        self._sessions.park(session)
        self._opened(None)
        self._dispatch()

    def _setup_failed(self, reason: Failure, session: SMTPClientProtocol) -> None:
        self._sessions.connecting -= 1
        self._judge(reason)
        self._sessions.all.discard(session)
        self._opened(reason)
        if self._pause_growth() or session in self._expired:
            self._expired.discard(session)
        else:
            # The server's refusal goes to the waiting message that asked for
            # this connection; the others get connections of their own.
            self._fail_oldest(reason)
        self._dispatch()

    def _pause_growth(self) -> bool:
        """After a connection could not be set up: when another session is up,
        open none for GROWTH_PAUSE (the messages wait for that one) and True."""
        if not self._sessions.up:
            return False
        self._no_growth_until = float(self.reactor.seconds()) + GROWTH_PAUSE
        return True

    def _fail_oldest(self, reason: Failure) -> None:
        while self._waiting:
            request = self._waiting.popleft()
            if not request.finished:
                request.finish(reason)
                return

    def _forget(self, session: SMTPClientProtocol) -> None:
        self._sessions.forget(session)
        if not self._closing:
            self._dispatch()  # a waiting message may now get a connection of its own

    # -- deadlines, cancellation, closing --------------------------------------------------------

    def _deadline(self, request: Request) -> None:
        if request.finished:
            return
        if request.session is not None:
            request.session.abort_for_deadline(request.outcome)
            return
        if request in self._waiting:
            self._waiting.remove(request)
        now = float(self.reactor.seconds())
        if self.gate.delay(now, request.bucket) > 0:
            error = held_too_long(self.policy, request.timeout, self.gate.remaining_pause(now) > 0)
        else:
            error = connect_timeout(self.policy, request.timeout)
        request.finish(Failure(error))

    def cancel(self, request: Request) -> None:
        """Abandon ``request``: its outcome is not reported."""
        request.abandon()
        if request in self._waiting:
            self._waiting.remove(request)
        if request.session is not None and request.session.transport is not None:
            # Mid-transaction: the session cannot be trusted for another message.
            request.session.abort()

    def close(self) -> defer.Deferred[None]:
        """QUIT every session (busy ones after their message) and fail waiting messages."""
        self._closing = True
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._sessions.stop_reaper()
        self._opened(Failure(SMTPError("the Mailer was closed before a connection was set up",
                                       host=self.policy.host, stage="connect")))
        while self._waiting:
            request = self._waiting.popleft()
            error = SMTPError("the Mailer was closed before this message was sent",
                              host=self.policy.host, stage="connect")
            request.finish(Failure(error))
        self._deadlines.close()
        # Sessions still connecting are QUIT when they become ready (see _ready).
        closing = [session.closed for session in self._sessions.all if session.ready.called]
        for session in list(self._sessions.idle):
            self._forget(session)
            session.quit()
        return defer.DeferredList(closing, consumeErrors=True).addCallback(lambda _: None)

    @property
    def pipelines(self) -> bool:
        """Whether the server is known to offer PIPELINING (a session here was
        set up with it), so that messages can go back to back on one
        connection (see ``can_take``). Kept from the first such session
        rather than asked of every session: a batch asks before each message."""
        return self._pipelining_seen

    @property
    def counts(self) -> dict[str, int]:
        """How many sessions are idle, busy and connecting, and messages waiting
        (for tests and diagnostics)."""
        return {**self._sessions.counts, "waiting": len(self._waiting)}

