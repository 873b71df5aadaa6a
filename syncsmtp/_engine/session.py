"""One SMTP session: set-up on Twisted's ``ESMTPClient`` (greeting, EHLO with
HELO fallback, STARTTLS, EHLO again, AUTH), then transactions on its command
queue (:mod:`.transactions`).

Where set-up departs from Twisted's stock client, and why:

- One connection, no hidden retries (see :mod:`.connect`).
- TCP_NODELAY: without it each message waits for a delayed ACK.
- STARTTLS: bytes the server sent after its 220 in the same read are
  plaintext an attacker may have injected; they end the connection.
- Credentials only over TLS unless the policy allows plaintext.
- Twisted's ``LineLog`` is off (it would keep credentials); the transcript
  kept here redacts them.
- Replies are checked line by line (:mod:`syncsmtp._replies`); after a fatal
  error nothing more is read or written.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import protocol
from twisted.internet.interfaces import IHandshakeListener
from twisted.mail import smtp
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import _twisted
from ..errors import CertificateError, SMTPError
from ..message import Envelope
from ..result import Reply
from . import failures
from .auth_steps import AuthSteps
from .base import do_nothing
from .capabilities import parse_ehlo
from .progress import Progress
from .tls_steps import TLSSteps
from .transactions import Outcome, Transaction, Transactions

__all__ = ["SMTPClientProtocol"]


@implementer(IHandshakeListener)  # handshakeCompleted (TLSSteps) is called
class SMTPClientProtocol(AuthSteps, TLSSteps):
    """One SMTP session as its policy says: greeting, EHLO, TLS and AUTH, then
    any number of transactions, one at a time.

    ``ready`` fires with the session once it can take a message, or fails with
    one :class:`~syncsmtp.SMTPError`. :meth:`transact` sends a message and
    fires its own Deferred exactly once with a :class:`SendResult` or an
    error. ``closed`` fires when the connection is gone.
    """

    _greeting: tuple[int, bytes] | None = None  # parsed only when asked for

    # -- what the server announced (read by syncsmtp._probe) ----------------------------------

    @property
    def greeting(self) -> Reply | None:
        """The server's greeting (None before it came)."""
        return None if self._greeting is None else Reply.parse(*self._greeting)

    # -- the connection -----------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        if self.policy.tls == "implicit":
            self._stop_tls_writes = _twisted.tls_writes_at_once(self.transport)
            self._stop_quick_acks = _twisted.acknowledge_reads_at_once(self.transport)
        smtp.ESMTPClient.connectionMade(self)
        self._stage("greeting")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        self._reading = False  # not idle any more, though ``closed`` fires last
        self._stop_quick_acks()
        self._stop_tls_writes()
        smtp.ESMTPClient.connectionLost(self, reason)
        if self._queue is not None:
            self._queue.stop()
        if self._quit_timer is not None and self._quit_timer.active():
            self._quit_timer.cancel()
        if not self._inflight and not self.ready.called:  # lost during set-up
            error = self._lost(reason, self._progress)
            self._settle(error, None)
            self._fire(self.ready, error)
        while self._inflight:
            tx = self._inflight.popleft()
            error = self._lost(reason, tx.progress)
            self._settle(error, tx)
            self._fire(tx.done, error)
        if not self.closed.called:
            self.closed.callback(None)
        self._let_go()

    def _let_go(self) -> None:
        """Every outcome has fired: drop what points back at the session (its
        queue, the pool's hook, timers and reply handlers bound to it), so
        that reference counting frees it once nobody holds it. Left in cycles,
        a session and its connection waited for the cycle collector, whose
        full passes over a process with Twisted loaded took about 0.7 ms of
        each STARTTLS send's CPU (gc callbacks over 100 sends)."""
        self.factory = None
        if self.transport is not None:
            _twisted.release_transport(self.transport)
        self._queue = None
        self.on_room = do_nothing
        self._stop_quick_acks = self._stop_tls_writes = do_nothing
        self._quit_timer = None
        self._idle_watch = None
        self.first = None
        _twisted.forget_reply_handlers(self)

    def _lost(self, reason: Failure, progress: Progress) -> SMTPError:
        where = self.policy.address
        if isinstance(reason.value, CertificateError):
            # syncsmtp._tls refused the certificate's names, with its own message.
            return reason.value
        if reason.check(SSL.Error):
            why = reason.getErrorMessage()
            if "certificate verify failed" in str(reason.value):
                return failures.certificate_failed(where, why)
            return failures.handshake_failed(where, why)
        return failures.lost(where, progress.stage, reason.getErrorMessage(), progress.maybe_delivered)

    def smtpConnectionFailed(self, code: int, resp: bytes) -> None:  # noqa: N802
        self._greeting = (code, resp)
        self._fail(failures.turned_away(self.policy.address, Reply.parse(code, resp)))

    def sendError(self, exc: Exception) -> None:  # noqa: N802
        # Only Twisted's own paths (a reply that is not "NNN text") get here.
        resp = getattr(exc, "resp", exc)
        line = resp if isinstance(resp, bytes) else str(resp).encode("utf-8", "replace")
        self._fail(failures.not_a_reply(self.policy.address, line), fatal=True)

    # -- EHLO / HELO ----------------------------------------------------------------------------

    def esmtpState_ehlo(self, code: int, resp: bytes) -> None:  # noqa: N802
        if self._greeting is None:
            self._greeting = (code, resp)
        self._stage("ehlo")
        smtp.ESMTPClient.esmtpState_ehlo(self, code, resp)

    def smtpState_helo(self, code: int, resp: bytes) -> None:  # noqa: N802
        self._stage("helo")
        smtp.ESMTPClient.smtpState_helo(self, code, resp)
        # Stock code would answer a refused HELO with HELO again, forever.
        _twisted.on_refusal(self, self._helo_refused)

    def _helo_refused(self, code: int, resp: bytes) -> None:
        self._fail(failures.helo_refused(self.policy.address, Reply.parse(code, resp)))

    def esmtpEHLORequired(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        reply = Reply.parse(code, resp or b"") if code > 0 else None
        needs_security = bool(self.requireTransportSecurity or self.requireAuthentication)
        self._fail(failures.ehlo_required(self.policy.address, reply, needs_security))

    def esmtpState_serverConfig(self, code: int, resp: bytes) -> None:  # noqa: N802
        self._stop_quick_acks()  # the first reply after the handshake has come
        if self.tls is not None and self.tls_creator is not None:
            self.tls_creator.keep_session(self.transport.getHandle())
        self.capabilities = parse_ehlo(resp)
        self.tryTLS(code, resp, self.capabilities)

    # -- ready, and transactions ------------------------------------------------------------------

    def smtpState_from(self, code: int, resp: bytes) -> None:  # noqa: N802
        # Twisted calls this when EHLO, TLS and AUTH are done: the session is ready.
        self._queue = Transactions(self)
        self._progress.stage = "idle"
        self.ready.callback(None)
        if self.first is not None and self.idle:
            first, self.first = self.first, None
            self.transact(*first)

    def _pipeline_auth(self, command: bytes) -> bool:
        """RFC 4954 section 4 allows a client to pipeline AUTH with an initial
        response: AUTH, MAIL and every RCPT (and DATA without CHUNKING) go in
        one write. The content itself waits for the 235 (see Transactions)."""
        if self.first is None or b"PIPELINING" not in self.capabilities:
            return False
        queue = Transactions(self)
        envelope, progress, done, quit_after = self.first
        if queue.refusal(envelope) is not None:
            return False  # it fails before sending anything: authenticate first as usual
        self.first = None
        self._queue = queue
        self.transactions += 1
        tx = Transaction(envelope, progress, done, quit_after, self._started, self.conversation.open(True))
        self._inflight.append(tx)
        queue.start(tx, auth=(command, self._auth_reply))
        return True

    def transcript(self) -> tuple[str, ...]:
        """The conversation so far (credentials redacted)."""
        return self.conversation.lines()

    def transact(self, envelope: Envelope, progress: Progress, done: Outcome,
                 quit_after: bool) -> None:
        """Send one message on this session (idle, or busy but with room:
        :attr:`can_take`); ``done`` gets the outcome. With ``quit_after``, the
        session QUITs afterwards (pipelined with the message when the server
        allows)."""
        assert self.can_take and self._queue is not None, "transact() needs a session with room"
        # Later messages on a reused session: their own transcript and time;
        # the first one's include connecting, TLS and AUTH.
        first = not self.transactions
        started = self._started if first else self.now()
        self.transactions += 1
        tx = Transaction(envelope, progress, done, quit_after, started, self.conversation.open(first))
        self._inflight.append(tx)
        # Behind a message whose outcome is unknown (see Transactions.start for
        # when that means RSET first).
        self._queue.start(tx, follows=len(self._inflight) > 1)

    def content_written(self) -> None:
        """A message's content is all written: there may be room for the next."""
        if self._inflight and self.can_take:
            self.on_room()
