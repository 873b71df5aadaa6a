"""Reused sessions to one server (reactor side: every method runs in the reactor thread).

A pool keeps up to ``size`` sessions set up (EHLO, TLS, AUTH done) and hands
each message to an idle one, opening another while there are fewer than
``size``. A session the server closed, or that idled past ``idle_timeout``, is
dropped; a message is only ever handed to a session that is idle at that
moment. If the connection is lost before any of the message's data was sent
(the server closed an idle connection as the message arrived), the message is
tried once more on another session; once DATA began, never.

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
from ._request import Report, Request, SessionOutcome
from ._throttle import Gate, TokenBucket, held_too_long
from .errors import ConnectionLostError, SMTPError
from .message import Envelope
from .policy import Policy
from .result import SendResult

__all__ = ["SessionPool"]

# Stages at which nothing of the message has reached the server yet.
_BEFORE_DATA = frozenset({"mail", "rcpt", "data"})


@dataclass(eq=False)
class SessionPool:
    """Up to ``size`` reusable sessions to the policy's server."""

    reactor: Any
    policy: Policy
    size: int
    idle_timeout: float
    gate: Gate = field(default_factory=lambda: Gate(None, 1.0, 60.0))
    _idle: list[SMTPClientProtocol] = field(default_factory=list)
    _busy: set[SMTPClientProtocol] = field(default_factory=set)
    # Busy sessions that said they had room for another message (PIPELINING),
    # most recent last; one may have filled up since, and is checked when
    # taken. Scanning every busy session instead cost a quarter of the
    # reactor's calls a message in send_many over 8 connections.
    _roomy: list[SMTPClientProtocol] = field(default_factory=list)
    _connecting: int = 0
    _waiting: deque[Request] = field(default_factory=deque)
    # When each idle session was parked, and the one timer that quits those
    # idle for idle_timeout (a timer per park and a cancel per reuse cost a
    # reused send more than this does).
    _idle_since: dict[SMTPClientProtocol, float] = field(default_factory=dict)
    _reaper: Any = None
    _sessions: set[SMTPClientProtocol] = field(default_factory=set)
    _expired: set[SMTPClientProtocol] = field(default_factory=set)
    # open() calls waiting for a session to be set up.
    _openers: list[defer.Deferred[None]] = field(default_factory=list)
    _closing: bool = False
    _wake: Any = None  # a dispatch when the gate opens again
    # Set once a session here was set up with PIPELINING (see ``pipelines``).
    _pipelining_seen: bool = False
    _deadlines: Deadlines = field(init=False)  # the requests' deadlines

    def __post_init__(self) -> None:
        self._deadlines = Deadlines(self.reactor, self._deadline)

    def open(self, timeout: float) -> defer.Deferred[None]:
        """Fire once a session is set up (connecting one now when none is), or
        fail with the reason the next one could not be."""
        opened: defer.Deferred[None] = defer.Deferred()
        if self._closing:
            opened.errback(Failure(SMTPError("the Mailer is closed", host=self.policy.host)))
        elif any(session.ready.called and not session.closed.called for session in self._sessions):
            opened.callback(None)
        else:
            self._openers.append(opened)
            if not self._connecting:
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
            session = self._take_idle() or self._take_with_room()
            if session is None:
                if len(self._sessions) + self._connecting < self.size:
                    self._connect()
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

    def _take_idle(self) -> SMTPClientProtocol | None:
        while self._idle:
            session = self._idle.pop()  # most recently used: least likely to have timed out
            self._idle_since.pop(session, None)
            if session.idle:
                return session
        return None

    def _take_with_room(self) -> SMTPClientProtocol | None:
        """A busy session that can take the next message behind its current ones (PIPELINING)."""
        roomy = self._roomy
        while roomy:
            session = roomy[-1]
            if session.can_take and session in self._busy:
                return session  # kept: it may have room for more after this one
            roomy.pop()
        return None

    def _has_room(self, session: SMTPClientProtocol) -> None:
        """``session`` (busy) may take another message: remember it and hand one over."""
        self._remember_room(session)
        self._dispatch()

    def _remember_room(self, session: SMTPClientProtocol) -> None:
        if session not in self._roomy:
            self._roomy.append(session)

    def _start(self, session: SMTPClientProtocol, request: Request) -> None:
        self._busy.add(session)
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
            self._busy.discard(session)
        elif session.can_take:
            self._remember_room(session)  # a finished message made room
            room = True
        request.session = request.outcome = None
        # Park the session first: the outcome's callbacks may queue the next message.
        if session.idle:
            if self._closing:
                session.quit()
            else:
                self._park(session)
                room = True
        if self._worth_retrying(outcome, session, request):
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

    def _worth_retrying(self, outcome: Any, session: SMTPClientProtocol, request: Request) -> bool:
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

    # -- sessions -------------------------------------------------------------------------

    def _connect(self, timeout: float | None = None) -> None:
        timeout = timeout or self._connect_timeout()
        self._connecting += 1
        try:
            session, _ = open_session(self.reactor, self.policy, Progress(), timeout)
        except SMTPError as error:
            self._connecting -= 1
            self._opened(Failure(error))
            self._fail_oldest(Failure(error))
            return
        self._sessions.add(session)
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
        self._connecting -= 1
        if b"PIPELINING" in session.capabilities:
            self._pipelining_seen = True
        session.on_room = functools.partial(self._has_room, session)
        if self._closing:
            session.quit()
            return
        self._park(session)
        self._opened(None)
        self._dispatch()

    def _setup_failed(self, reason: Failure, session: SMTPClientProtocol) -> None:
        self._connecting -= 1
        self._judge(reason)
        self._sessions.discard(session)
        self._opened(reason)
        if session in self._expired:
            self._expired.discard(session)
        else:
            # The server's refusal goes to the waiting message that asked for
            # this connection; the others get connections of their own.
            self._fail_oldest(reason)
        self._dispatch()

    def _fail_oldest(self, reason: Failure) -> None:
        while self._waiting:
            request = self._waiting.popleft()
            if not request.finished:
                request.finish(reason)
                return

    def _park(self, session: SMTPClientProtocol) -> None:
        self._idle.append(session)
        self._idle_since[session] = float(self.reactor.seconds())
        if self._reaper is None or not self._reaper.active():
            self._reaper = self.reactor.callLater(self.idle_timeout, self._expire_idle)

    def _expire_idle(self) -> None:
        """QUIT the sessions idle for ``idle_timeout``; come back for the next one."""
        now = float(self.reactor.seconds())
        for session, since in list(self._idle_since.items()):
            if now - since >= self.idle_timeout:
                del self._idle_since[session]
                self._idle.remove(session)
                session.quit()
        if self._idle_since:
            first = min(self._idle_since.values())
            self._reaper = self.reactor.callLater(max(0.0, first + self.idle_timeout - now),
                                                  self._expire_idle)

    def _forget(self, session: SMTPClientProtocol) -> None:
        self._sessions.discard(session)
        self._busy.discard(session)
        if session in self._roomy:
            self._roomy.remove(session)
        if session in self._idle:
            self._idle.remove(session)
        self._idle_since.pop(session, None)
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
        for timer in (self._wake, self._reaper):
            if timer is not None and timer.active():
                timer.cancel()
        self._opened(Failure(SMTPError("the Mailer was closed before a connection was set up",
                                       host=self.policy.host, stage="connect")))
        while self._waiting:
            request = self._waiting.popleft()
            error = SMTPError("the Mailer was closed before this message was sent",
                              host=self.policy.host, stage="connect")
            request.finish(Failure(error))
        self._deadlines.close()
        # Sessions still connecting are QUIT when they become ready (see _ready).
        closing = [session.closed for session in self._sessions if session.ready.called]
        for session in list(self._idle):
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
        """How many sessions are idle, busy and connecting (for tests and diagnostics)."""
        return {"idle": len(self._idle), "busy": len(self._busy), "connecting": self._connecting,
                "waiting": len(self._waiting)}

