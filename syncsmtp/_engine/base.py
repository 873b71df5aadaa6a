"""What every step of a session shares: its state, reading replies, and ending
the session or one message with an outcome (the bytes in and out are
:mod:`.io`'s)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.mail import smtp
from twisted.python.failure import Failure

from .. import _replies, _twisted
from ..errors import SMTPError
from ..message import Envelope
from ..policy import Policy
from ..result import SendResult, TLSInfo
from . import failures
from .capabilities import Capabilities
from .idle import IdleWatch, bytes_acknowledged, idle_expired
from .io import SessionIO
from .progress import Progress
from .transactions import Outcome, Transaction, Transactions
from .transcript import Transcript

__all__ = ["ANY_CODE", "MAX_IN_FLIGHT", "MAX_IN_FLIGHT_BYTES", "QUIT_GRACE_SECONDS", "SessionBase",
           "do_nothing"]

#: How long a polite QUIT may take after the outcome is known.
QUIT_GRACE_SECONDS = 5.0
#: How many messages may be under way on one connection at once (PIPELINING),
#: and how many bytes of their content.
MAX_IN_FLIGHT = 16
MAX_IN_FLIGHT_BYTES = 1024 * 1024
# Reply codes a set-up step accepts; Twisted's client tests membership with "in".
ANY_CODE: Any = range(0, 1000)


def _default_local_hostname() -> str:
    name = smtp.DNSNAME.decode("ascii", "replace") if isinstance(smtp.DNSNAME, bytes) else ""
    if name and name.isascii() and "." in name and " " not in name:
        return name
    return "localhost"


def do_nothing() -> None:
    """What a session's hooks do until something is hooked in, and after it is over."""


class SessionBase(SessionIO):
    """State and plumbing of one session (see :class:`syncsmtp._engine.SMTPClientProtocol`)."""

    debug = False  # Twisted's LineLog would keep credentials in memory.
    MAX_LENGTH = _replies.MAX_LINE_BYTES

    def __init__(self, reactor: Any, policy: Policy, tls_options: Any, progress: Progress) -> None:
        secret = (policy.password or "").encode("utf-8") if policy.username else None
        smtp.ESMTPClient.__init__(
            self, secret, tls_options if policy.tls in ("starttls", "opportunistic") else None,
            policy.local_hostname or _default_local_hostname(),
        )
        self.requireAuthentication = policy.auth_required
        self.requireTransportSecurity = policy.tls in ("starttls", "implicit")
        self.heloFallback = policy.helo_fallback
        self.reactor = reactor
        self.policy = policy
        #: Makes this session's TLS connections (STARTTLS or implicit); None without TLS.
        self.tls_creator = tls_options
        self._progress = progress
        self.ready: defer.Deferred[Any] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.conversation = Transcript()
        self._started = float(reactor.seconds())
        self.capabilities: Capabilities = {}
        self.tls: TLSInfo | None = None
        self.authenticated_with: str | None = None
        self.transactions = 0  # how many messages this session was given
        # Set once set-up is done: every reply then goes to its queue.
        self._queue: Transactions | None = None
        # Messages whose outcome is still to come, oldest first (several with
        # PIPELINING: see can_take).
        self._inflight: deque[Transaction] = deque()
        #: Called when the session can take another message while busy.
        self.on_room: Callable[[], None] = do_nothing
        # A message to send as soon as set-up allows (a one-shot send): its
        # MAIL and RCPT may then go with AUTH.
        self.first: tuple[Envelope, Progress, Outcome, bool] | None = None
        self._quit_timer: Any = None
        # False once the connection is being dropped: Twisted's line reader
        # would go on with the lines left in its buffer.
        self._reading = True
        self._reply_lines = 0
        self._reply_bytes = 0
        self._reply_code = b""  # of the reply's first line, while more lines follow
        # Undoes the quick ACKs that keep the TLS handshake from stalling.
        self._stop_quick_acks: Callable[[], None] = do_nothing
        # Takes the TLS layer's write hook off when the connection is gone.
        self._stop_tls_writes: Callable[[], None] = do_nothing
        # The policy's idle_limit: watched from the connection's first byte to its end.
        self._idle_watch: IdleWatch | None = None
        if policy.idle_limit:
            self._idle_watch = IdleWatch(reactor, policy.idle_limit, self._went_quiet,
                                         lambda: bytes_acknowledged(self.transport))
            self.closed.addBoth(self._idle_watch.stopped)

    # -- where it stands ---------------------------------------------------------------------

    @property
    def _current(self) -> Transaction | None:
        """The oldest message under way."""
        return self._inflight[0] if self._inflight else None

    @property
    def _where(self) -> Progress:
        """The progress of the message under way, else the session's own."""
        return self._inflight[0].progress if self._inflight else self._progress

    def _stage(self, stage: str) -> None:
        self._where.stage = stage

    @property
    def stage(self) -> str:
        return self._where.stage

    def now(self) -> float:
        return float(self.reactor.seconds())

    @property
    def idle(self) -> bool:
        """Set up, connected, and between transactions."""
        return (self._reading and self.ready.called and not self.closed.called and not self._inflight
                and self._progress.stage == "idle")

    @property
    def can_take(self) -> bool:
        """Idle, or (with PIPELINING) busy with fewer than MAX_IN_FLIGHT
        messages, whose content is all written, and below MAX_IN_FLIGHT_BYTES:
        the next message's commands may then follow at once (RFC 2920)."""
        inflight = self._inflight
        if not inflight:
            return self.idle
        return (len(inflight) < MAX_IN_FLIGHT and inflight[-1].progress.maybe_delivered
                and self._reading and self._progress.stage == "idle"
                and b"PIPELINING" in self.capabilities
                and sum(tx.envelope.size for tx in inflight) < MAX_IN_FLIGHT_BYTES)

    def lineReceived(self, line: bytes) -> Any:  # noqa: N802
        if not self._reading:
            self.clearLineBuffer()  # nothing after a fatal error is read
            return None
        # Every line of every reply comes through here: kept to a few calls.
        queue = self._queue
        self.conversation.note(b"S: " + line, queue.answering if queue is not None else None)
        if _replies.reply_line(line) is None or (self._reply_code and line[:3] != self._reply_code):
            # RFC 5321 4.2.1: every line of a reply has the same code.
            self._fail(failures.not_a_reply(self.policy.address, line), fatal=True)
            return None
        if line[3:4] == b"-":  # more follow: counted here, so the last line makes one more
            self._reply_lines += 1
            self._reply_bytes += len(line)
            if self._reply_lines >= _replies.MAX_REPLY_LINES or self._reply_bytes > _replies.MAX_REPLY_BYTES:
                self._fail(failures.reply_too_long(self.policy.address, _replies.MAX_REPLY_LINES,
                                                   _replies.MAX_REPLY_BYTES), fatal=True)
                return None
            self._reply_code = line[:3]
            self.resp.append(line[4:])
            return None
        if self._reply_lines:
            if self._reply_bytes + len(line) > _replies.MAX_REPLY_BYTES:
                self._fail(failures.reply_too_long(self.policy.address, _replies.MAX_REPLY_LINES,
                                                   _replies.MAX_REPLY_BYTES), fatal=True)
                return None
            self._reply_lines = self._reply_bytes = 0
            self._reply_code = b""
        if queue is None:  # set-up: ESMTPClient's state machine
            return smtp.ESMTPClient.lineReceived(self, line)
        if self.resp:
            self.resp.append(line[4:])
            text, self.resp = b"\n".join(self.resp), []
        else:
            text = line[4:]
        code = int(line[:3])
        if not queue.reply(code, text):
            self._unsolicited(code, text)
        return None

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802
        self._fail(failures.line_too_long(self.policy.address, _replies.MAX_LINE_BYTES), fatal=True)

    def _unsolicited(self, code: int, text: bytes) -> None:
        # Typically "421 idle timeout" before the server hangs up.
        self.conversation.note(b"(unsolicited reply; closing)")
        self._reading = False
        self.transport.loseConnection()

    # -- outcomes ------------------------------------------------------------------------------

    def _settle(self, outcome: SendResult | SMTPError, tx: Transaction | None) -> None:
        """Complete an error with where it happened, before the session moves on."""
        if not isinstance(outcome, SMTPError):
            return
        if tx is not None and tx.progress.maybe_delivered and not tx.refused_after_data:
            # The whole message was written and no well-formed refusal came:
            # the server may have it (a malformed reply, a time-out, a loss).
            outcome.maybe_delivered = True
        outcome.host = outcome.host or self.policy.host
        outcome.stage = outcome.stage or (tx.progress.stage if tx is not None else self.stage)
        outcome.transcript = self.conversation.lines(tx.transcript if tx is not None else None)

    @staticmethod
    def _fire(target: Outcome | defer.Deferred[Any], outcome: Any) -> bool:
        if target.called:
            return False
        if isinstance(outcome, SMTPError):
            target.errback(Failure(outcome))
        else:
            target.callback(outcome)
        return True

    def _fail(self, error: SMTPError, *, fatal: bool = False, culprit: Transaction | None = None) -> None:
        """Report ``error`` for set-up or for the message under way (``culprit``,
        else the oldest); then drop the connection when the conversation can
        no longer be trusted (``fatal``), else QUIT. Other messages under way
        lose their connection with it."""
        tx = culprit or self._current
        others = [other for other in self._inflight if other is not tx]
        self._inflight.clear()
        self._settle(error, tx)
        if fatal or self.transport is None:
            self._abort()
        else:
            self._quit()
        self._fire(tx.done if tx is not None else self.ready, error)
        for other in others:
            self._drop_with(other, error)

    def _drop_with(self, tx: Transaction, cause: SMTPError) -> None:
        """``tx`` was under way on a connection dropped because of another message."""
        error = failures.lost(self.policy.address, tx.progress.stage,
                              f"dropped after another message's error: {cause.message}",
                              tx.progress.maybe_delivered)
        self._settle(error, tx)
        self._fire(tx.done, error)

    def transaction_over(self, tx: Transaction, outcome: SendResult | SMTPError, fatal: bool) -> None:
        """A message's outcome is known: the session goes idle (or QUITs after
        a one-shot send), then the outcome fires: its callbacks may hand over
        the next message."""
        if fatal:
            assert isinstance(outcome, SMTPError)
            self._fail(outcome, fatal=True, culprit=tx)
            return
        self._settle(outcome, tx)
        if tx in self._inflight:
            self._inflight.remove(tx)
        self.conversation.close(tx.transcript)
        if not self._inflight:
            self.conversation.forget()
        if tx.quit_after:
            self._quit()
        elif not self._inflight:
            self._progress.stage = "idle"
        self._fire(tx.done, outcome)

    def _abort(self) -> None:
        self._reading = False
        if self._queue is not None:
            self._queue.stop()
        if self.transport is not None:
            self.transport.abortConnection()

    def abort(self) -> None:
        """Drop the connection now; no further reply is read or command written."""
        self._abort()

    def _quit(self) -> None:
        self._stage("quit")
        self._quit_timer = self.reactor.callLater(QUIT_GRACE_SECONDS, self._abort)
        if self._queue is not None:
            self._queue.quit(self._disconnect)
        else:
            _twisted.expect(self, ANY_CODE, self._disconnect, self._disconnect)
            self.sendLine(b"QUIT")

    def _disconnect(self, code: int, text: bytes | None) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def quit(self) -> defer.Deferred[None]:
        """QUIT an idle session (drop a busy or unready one); ``closed`` fires when it is gone."""
        if self.closed.called:
            return self.closed
        if self.idle:
            self._quit()
        else:
            self._abort()
        return self.closed

    def _went_quiet(self) -> None:
        """The idle limit passed: nothing moved for that long."""
        if self.closed.called or not self._reading or self._idle_watch is None:
            return
        if self.idle:  # between messages, silence is what is expected
            self._idle_watch.start()
            return
        tx = self._current
        progress = tx.progress if tx is not None else self._where
        self._fail(idle_expired(self.policy.address, self._idle_watch.limit, progress.stage,
                                progress.maybe_delivered), fatal=True, culprit=tx)

    def abort_for_deadline(self, done: Outcome | None = None) -> None:
        """The deadline of set-up, or of the message whose outcome goes to ``done``,
        passed: report where it stood and drop the connection."""
        tx = next((tx for tx in self._inflight if tx.done is done), None)
        progress = tx.progress if tx is not None else self._where
        self._fail(failures.deadline(self.policy.address, progress.stage, progress.maybe_delivered),
                   fatal=True, culprit=tx)

