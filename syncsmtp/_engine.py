"""The reactor side of a send: an ``ESMTPClient`` subclass and the function
that connects it (runs only in the reactor thread).

Where this departs from Twisted 26.10's stock client, and why:

- No hidden retries: ``SMTPSenderFactory`` reconnects and sends DATA again
  after a lost connection, which after the final dot is a duplicate delivery.
  One connection is made; a loss is reported, with ``maybe_delivered``.
- TCP_NODELAY, and the data terminator joined to the last write: without them
  each message waits for a delayed ACK (tens of milliseconds on loopback).
- Message data is re-encoded (:mod:`syncsmtp._wire`): stock
  ``transformChunk`` turns CRLF into CR CR LF and misses dots at chunk
  boundaries and on the first line.
- STARTTLS: bytes the server sent after its 220 in the same read are
  plaintext that an attacker may have injected; they end the connection
  instead of being read as replies after the handshake.
- Credentials only over TLS unless the policy allows plaintext; PLAIN is sent
  once (stock retries with another identity), LOGIN answers by step, not by
  prompt text.
- Twisted's ``LineLog`` is off (it would keep credentials); the transcript
  kept here redacts them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer, protocol
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IHandshakeListener, IPullProducer
from twisted.mail import smtp
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _replies, _sasl
from ._tls import client_tls_options
from ._twisted import acknowledge_reads_at_once
from ._wire import CHUNK_SIZE, iter_encoded
from .errors import (
    AuthDeclinedError,
    AuthMalformedChallengeError,
    AuthRequiredError,
    AuthServerError,
    CertificateError,
    ConnectError,
    ConnectionLostError,
    EHLORequiredError,
    MessageRefused,
    ProtocolError,
    RecipientsRefused,
    SenderRefused,
    SendTimeout,
    SMTPError,
    TLSFailedError,
    TLSRequiredError,
)
from .message import Envelope
from .policy import Policy
from .result import Reply, SendResult, TLSInfo

__all__ = ["Progress", "deliver"]

#: How long a polite QUIT may take after the outcome is known.
QUIT_GRACE_SECONDS = 5.0
_TRANSCRIPT_LIMIT = 2000
# Reply codes a state accepts; Twisted's client tests membership with "in".
_ANY_CODE: Any = range(0, 1000)
_SUCCESS_CODES: Any = range(200, 300)


def _default_local_hostname() -> str:
    name = smtp.DNSNAME.decode("ascii", "replace") if isinstance(smtp.DNSNAME, bytes) else ""
    if name and name.isascii() and "." in name and " " not in name:
        return name
    return "localhost"


class Progress:
    """Where a send stands; read from the caller's thread for its timeout message."""

    __slots__ = ("stage",)

    def __init__(self) -> None:
        self.stage = "connect"

    @property
    def maybe_delivered(self) -> bool:
        """True once the whole message and its terminator were written."""
        return self.stage == "end-of-data"


@implementer(IPullProducer)
class _DataProducer:
    """Writes the encoded message as the transport drains, so a large message
    is never copied whole into the transport's buffer.

    It looks one chunk ahead, so that ``finished`` runs as soon as the last
    chunk (with the terminator) is handed over: from then on the server may
    have the whole message, and a failure must say so.
    """

    def __init__(self, consumer: Any, chunks: Iterator[bytes], finished: Callable[[], None]):
        self._consumer = consumer
        self._chunks = chunks
        self._finished = finished
        self._next: bytes | None = None
        self._stopped = False

    def start(self) -> None:
        self._next = next(self._chunks)
        self._consumer.registerProducer(self, False)

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted interface)
        if self._stopped or self._next is None:
            return
        chunk, self._next = self._next, next(self._chunks, None)
        self._consumer.write(chunk)
        if self._next is None:
            self._stopped = True
            self._consumer.unregisterProducer()
            self._finished()

    def stopProducing(self) -> None:  # noqa: N802
        self._stopped = True


def _is_certificate_failure(reason: Failure) -> bool:
    if reason.check(SSL.Error):
        return "certificate verify failed" in str(reason.value)
    return False


@implementer(IHandshakeListener)
class SMTPClientProtocol(smtp.ESMTPClient):
    """One SMTP session as its policy says: greeting, EHLO, TLS and AUTH, then
    any number of transactions, one at a time.

    ``ready`` fires with the session once it can take a message, or fails with
    one :class:`~syncsmtp.SMTPError`. :meth:`transact` sends a message and
    fires its own Deferred exactly once with a :class:`SendResult` or an
    error. ``closed`` fires when the connection is gone.
    """

    debug = False  # Twisted's LineLog would keep credentials in memory.
    MAX_LENGTH = _replies.MAX_LINE_BYTES
    transport: Any
    # ESMTPClient's own __setattr__ only warns about a long-deprecated name, and
    # costs a Python call on every one of the ~100 attribute writes of a send.
    __setattr__ = object.__setattr__

    def __init__(self, reactor: Any, policy: Policy, tls_options: Any, progress: Progress) -> None:
        secret = (policy.password or "").encode("utf-8") if policy.username else None
        identity = policy.local_hostname or _default_local_hostname()
        smtp.ESMTPClient.__init__(
            self, secret, tls_options if policy.tls in ("starttls", "opportunistic") else None,
            identity,
        )
        self.requireAuthentication = policy.auth_required
        self.requireTransportSecurity = policy.tls in ("starttls", "implicit")
        self.heloFallback = policy.helo_fallback
        self._reactor = reactor
        self._policy = policy
        self._progress = progress
        self.ready: defer.Deferred[SMTPClientProtocol] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        # The transaction under way (or the last one); None before the first.
        self._envelope: Envelope | None = None
        self._done: defer.Deferred[SendResult] | None = None
        self._quit_after = False
        self._needs_rset = False
        self.transactions = 0
        self._started = reactor.seconds()
        # Raw lines, decoded only when a result or error is built.
        self._transcript: list[bytes] = []
        self._redacting = False
        self._auth_name: str | None = None
        self._authenticated_with: str | None = None
        self._tls_info: TLSInfo | None = None
        self._capabilities: dict[bytes, bytes | None] = {}
        # What the server said before TLS, kept for syncsmtp._probe (a send never reads it).
        self._greeting: tuple[int, bytes] | None = None  # parsed only when asked for
        self._plaintext_capabilities: dict[bytes, bytes | None] | None = None
        self._accepted: list[str] = []
        self._refused: dict[str, Reply] = {}
        self._pending_recipients: Iterator[str] = iter(())
        self._last_recipient = ""
        self._awaiting = 0
        self._mail_reply: Reply | None = None
        self._quit_pipelined = False
        self._producer: _DataProducer | None = None
        self._quit_timer: Any = None
        # False once the connection is being dropped: Twisted's line reader
        # would go on with the lines left in its buffer.
        self._reading = True
        self._reply_lines = 0
        self._reply_bytes = 0
        self._reply_code = b""  # of the reply's first line, while more lines follow
        # Undoes the quick ACKs that keep the TLS handshake from stalling.
        self._stop_quick_acks: Callable[[], None] = lambda: None
        # Set when the reply after the data is a well-formed refusal, the only
        # outcome after the final dot that says "not delivered".
        self._refused_after_data = False

    # -- bookkeeping -------------------------------------------------------------

    def _stage(self, stage: str) -> None:
        self._progress.stage = stage

    @property
    def stage(self) -> str:
        return self._progress.stage

    def _note(self, line: bytes) -> None:
        if len(self._transcript) < _TRANSCRIPT_LIMIT:
            self._transcript.append(line)

    def _transcript_lines(self) -> tuple[str, ...]:
        return tuple(line.decode("utf-8", "replace") for line in self._transcript)

    def sendLine(self, line: bytes) -> None:  # noqa: N802
        if not self._reading:
            return
        if self._redacting:
            if line.startswith(b"AUTH "):
                words = line.split(b" ")
                shown = b" ".join(words[:2]) + (b" <redacted>" if len(words) > 2 else b"")
            else:
                shown = b"<redacted>"
            self._note(b"C: " + shown)
        else:
            self._note(b"C: " + line)
        smtp.ESMTPClient.sendLine(self, line)

    def lineReceived(self, line: bytes) -> Any:  # noqa: N802
        if not self._reading:
            self.clearLineBuffer()  # nothing after a fatal error is read
            return None
        self._note(b"S: " + line)
        if not _replies.is_reply_line(line) or (self._reply_code and line[:3] != self._reply_code):
            # RFC 5321 4.2.1: every line of a reply has the same code.
            self._fail(ProtocolError(
                f"{self._policy.address} sent something that is not an SMTP reply: "
                f"{line[:80].decode('utf-8', 'replace')!r}"
            ), fatal=True)
            return None
        self._reply_lines += 1
        self._reply_bytes += len(line)
        if self._reply_lines > _replies.MAX_REPLY_LINES or self._reply_bytes > _replies.MAX_REPLY_BYTES:
            self._fail(ProtocolError(
                f"{self._policy.address} sent a reply of more than {_replies.MAX_REPLY_LINES} lines "
                f"or {_replies.MAX_REPLY_BYTES} bytes; no SMTP reply is that long"
            ), fatal=True)
            return None
        if _replies.is_continuation(line):
            # A continuation line (most of an EHLO reply): just collect it.
            self._reply_code = line[:3]
            self.resp.append(line[4:])
            return None
        self._reply_lines = self._reply_bytes = 0
        self._reply_code = b""
        return smtp.ESMTPClient.lineReceived(self, line)

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802
        self._fail(ProtocolError(
            f"{self._policy.address} sent a line longer than {_replies.MAX_LINE_BYTES} bytes; "
            "no SMTP reply line is that long"
        ), fatal=True)

    def _reply(self, code: int, resp: bytes | str) -> Reply:
        return Reply.parse(code, resp)

    # -- what the server announced (read by syncsmtp._probe) ----------------------------

    @property
    def greeting(self) -> Reply | None:
        """The server's greeting (None before it came)."""
        return None if self._greeting is None else self._reply(*self._greeting)

    @property
    def capabilities(self) -> dict[bytes, bytes | None]:
        """The keywords of the latest EHLO reply (upper-cased) and their parameters."""
        return dict(self._capabilities)

    @property
    def plaintext_capabilities(self) -> dict[bytes, bytes | None] | None:
        """The EHLO keywords before STARTTLS; None when STARTTLS was not used."""
        return None if self._plaintext_capabilities is None else dict(self._plaintext_capabilities)

    @property
    def tls_info(self) -> TLSInfo | None:
        """The negotiated TLS version and cipher; None without TLS."""
        return self._tls_info

    @property
    def authenticated_with(self) -> str | None:
        """The AUTH mechanism that succeeded, if any."""
        return self._authenticated_with

    def transcript(self) -> tuple[str, ...]:
        """The conversation so far (credentials redacted)."""
        return self._transcript_lines()

    @property
    def idle(self) -> bool:
        """Set up, connected, and between transactions."""
        return (
            self.ready.called
            and not self.closed.called
            and (self._done is None or self._done.called)
            and self.stage == "idle"
        )

    def _finish_with(self, outcome: SendResult | SMTPError) -> bool:
        """Fire the current transaction's Deferred (or ``ready`` during set-up)
        once; False when it had already fired."""
        target: defer.Deferred[Any] = self._done if self._done is not None else self.ready
        if target.called:
            return False
        if isinstance(outcome, SMTPError):
            if self._progress.maybe_delivered and not self._refused_after_data:
                # The whole message was written and no well-formed refusal came:
                # the server may have it (a malformed reply, a time-out, a loss).
                outcome.maybe_delivered = True
            outcome.host = outcome.host or self._policy.host
            outcome.stage = outcome.stage or self.stage
            outcome.transcript = self._transcript_lines()
            target.errback(Failure(outcome))
        else:
            target.callback(outcome)
        return True

    def _fail(self, error: SMTPError, *, fatal: bool = False) -> None:
        """Report ``error``; then drop the connection when the conversation can
        no longer be trusted (``fatal``), QUIT politely when the session is
        done, or stay for the next transaction (which will RSET first)."""
        in_transaction = self._done is not None and not self._done.called
        error.stage = error.stage or self.stage
        if fatal or self.transport is None:
            self._finish_with(error)
            self._abort()
        elif self._quit_after or not in_transaction:
            self._finish_with(error)
            self._quit()
        else:
            # Idle before the outcome fires: its callbacks may hand over the next message.
            self._needs_rset = True
            self._go_idle()
            self._finish_with(error)

    def quit(self) -> defer.Deferred[None]:
        """QUIT an idle session (drop a busy or unready one); ``closed`` fires when it is gone."""
        if self.closed.called:
            return self.closed
        if self.idle:
            self._quit_after = True
            self._quit_pipelined = False
            self._quit()
        else:
            self._abort()
        return self.closed

    def _go_idle(self) -> None:
        self._stage("idle")
        self._expected = _ANY_CODE
        self._okresponse = self._unsolicited_reply
        self._failresponse = self._unsolicited_reply

    def _unsolicited_reply(self, code: int, resp: bytes) -> None:
        # Typically "421 idle timeout" before the server hangs up.
        self._note(b"(unsolicited reply; closing)")
        self._quit_after = True
        self.transport.loseConnection()

    def _abort(self) -> None:
        self._reading = False
        if self.transport is not None:
            self.transport.abortConnection()

    def abort(self) -> None:
        """Drop the connection now; no further reply is read or command written."""
        self._abort()

    def _quit(self) -> None:
        self._stage("quit")
        self._expected = _ANY_CODE
        self._okresponse = self.smtpState_disconnect
        self._failresponse = self.smtpState_disconnect
        self._quit_timer = self._reactor.callLater(QUIT_GRACE_SECONDS, self._abort)
        if not self._quit_pipelined:
            self.sendLine(b"QUIT")

    def abort_for_deadline(self) -> None:
        """The send's deadline passed: report where it stood and drop the connection."""
        stage = self.stage
        self._fail(
            SendTimeout(
                f"{self._policy.address} did not answer in time (waiting at stage "
                f"{stage!r}); the whole send has one deadline: raise timeout= if the "
                "server or the message is slow",
                stage=stage,
                maybe_delivered=self._progress.maybe_delivered,
            ),
            fatal=True,
        )

    # -- connection ------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        if self._policy.tls == "implicit":
            self._stop_quick_acks = acknowledge_reads_at_once(self.transport)
        smtp.ESMTPClient.connectionMade(self)
        self._stage("greeting")

    def handshakeCompleted(self) -> None:  # noqa: N802
        if self.stage == "starttls":
            self._stage("ehlo")
        handle = self.transport.getHandle()
        try:
            self._tls_info = TLSInfo(
                handle.get_protocol_version_name(), handle.get_cipher_name() or "unknown"
            )
        except (AttributeError, SSL.Error):
            self._tls_info = TLSInfo("unknown", "unknown")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        self._stop_quick_acks()
        smtp.ESMTPClient.connectionLost(self, reason)
        if self._producer is not None:
            self._producer.stopProducing()
        if self._quit_timer is not None and self._quit_timer.active():
            self._quit_timer.cancel()
        self._finish_with(self._lost(reason))
        if not self.closed.called:
            self.closed.callback(None)

    def _lost(self, reason: Failure) -> SMTPError:
        where = self._policy.address
        if isinstance(reason.value, CertificateError):
            # syncsmtp._tls refused the certificate's names, with its own message.
            return reason.value
        if _is_certificate_failure(reason):
            return CertificateError(
                f"the certificate of {where} did not verify ({reason.getErrorMessage()}); "
                "if the server uses a private CA, pass its certificate as ca_file=, and check "
                "that the policy's host is a name the certificate is for",
            )
        if reason.check(SSL.Error):
            return TLSFailedError(
                f"the TLS handshake with {where} failed ({reason.getErrorMessage()}); "
                "check that the port and tls mode match the server (465 is implicit TLS, "
                "587 and 25 use STARTTLS)",
            )
        if self._progress.maybe_delivered:
            return ConnectionLostError(
                f"{where} closed the connection after the whole message was sent but "
                "before it answered: the message may have been delivered. It was not "
                "sent again; check before resending, or risk a duplicate",
                maybe_delivered=True,
            )
        return ConnectionLostError(
            f"{where} closed the connection during {self.stage!r} "
            f"({reason.getErrorMessage()}); nothing was delivered",
        )

    def smtpConnectionFailed(self, code: int, resp: bytes) -> None:  # noqa: N802
        reply = self._reply(code, resp)
        self._greeting = (code, resp)
        self._fail(
            ConnectError(f"{self._policy.address} turned the session away: {reply}", reply=reply)
        )

    def sendError(self, exc: Exception) -> None:  # noqa: N802
        # Only Twisted's own paths (a reply that is not "NNN text") get here.
        resp = getattr(exc, "resp", exc)
        text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
        self._fail(
            ProtocolError(f"{self._policy.address} sent something that is not an SMTP reply: {text}"),
            fatal=True,
        )

    # -- EHLO / HELO -----------------------------------------------------------------

    def esmtpState_ehlo(self, code: int, resp: bytes) -> None:  # noqa: N802
        if self._greeting is None:
            self._greeting = (code, resp)
        self._stage("ehlo")
        smtp.ESMTPClient.esmtpState_ehlo(self, code, resp)

    def smtpState_helo(self, code: int, resp: bytes) -> None:  # noqa: N802
        self._stage("helo")
        smtp.ESMTPClient.smtpState_helo(self, code, resp)
        # Stock code would answer a refused HELO with HELO again, forever.
        self._failresponse = self._helo_refused

    def _helo_refused(self, code: int, resp: bytes) -> None:
        reply = self._reply(code, resp)
        self._fail(ProtocolError(f"{self._policy.address} refused both EHLO and HELO: {reply}", reply=reply))

    def esmtpEHLORequired(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        reply = self._reply(code, resp or b"") if code > 0 else None
        needs = "TLS or authentication" if (self.requireTransportSecurity or self.requireAuthentication) \
            else "ESMTP"
        hint = "" if needs != "ESMTP" else "; set helo_fallback=True to allow plain HELO"
        self._fail(
            EHLORequiredError(
                f"{self._policy.address} refused EHLO ({reply}), and the policy needs {needs}{hint}",
                reply=reply,
            )
        )

    def esmtpState_serverConfig(self, code: int, resp: bytes) -> None:  # noqa: N802
        self._stop_quick_acks()  # the first reply after the handshake has come
        items: dict[bytes, bytes | None] = {}
        for line in resp.splitlines()[1:]:
            words = line.split(None, 1)
            if words:
                items[words[0].upper()] = words[1] if len(words) > 1 else None
        self._capabilities = items
        self.tryTLS(code, resp, items)

    # -- TLS -----------------------------------------------------------------------------

    def tryTLS(self, code: int, resp: bytes, items: dict[bytes, bytes | None]) -> None:  # noqa: N802
        if self._tlsMode or self._policy.tls == "none":
            self.authenticate(code, resp, items)
        elif b"STARTTLS" in items:
            self._stage("starttls")
            self._expected = [220]
            self._okresponse = self.esmtpState_starttls
            self._failresponse = self._starttls_refused
            self.sendLine(b"STARTTLS")
        elif self._policy.tls == "starttls":
            self.esmtpTLSRequired()
        else:
            self.authenticate(code, resp, items)

    def _starttls_refused(self, code: int, resp: bytes) -> None:
        reply = self._reply(code, resp)
        if self._policy.tls == "opportunistic":
            # RFC 3207 lets the session go on in plaintext; "opportunistic" asks for that.
            self.authenticate(code, resp, self._capabilities)
            return
        self._fail(
            TLSFailedError(
                f"{self._policy.address} offered STARTTLS but refused it: {reply}; the policy "
                "requires TLS (tls='opportunistic' would go on without it)",
                reply=reply,
            )
        )

    def esmtpTLSRequired(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self._fail(
            TLSRequiredError(
                f"the server at {self._policy.address} does not offer STARTTLS, and the policy "
                "requires TLS; use tls='implicit' if it expects TLS from the start (port 465), "
                "or tls='opportunistic' to allow plaintext"
            )
        )

    def esmtpState_starttls(self, code: int, resp: bytes) -> None:  # noqa: N802
        if self._buffer:
            # Bytes that came with the 220 were sent before TLS: never read them after it.
            self._buffer = b""
            self._fail(
                TLSFailedError(
                    f"{self._policy.address} sent data after its STARTTLS reply, before the TLS "
                    "handshake; such data could be an injected command (CVE-2011-0411), so the "
                    "connection was closed. Report this to the server's administrators"
                ),
                fatal=True,
            )
            return
        self._stage("starttls")
        try:
            self.transport.startTLS(self.context)
        except Exception as exc:
            self._fail(TLSFailedError(f"cannot start TLS with {self._policy.address}: {exc}"), fatal=True)
            return
        self._tlsMode = True
        self._stop_quick_acks = acknowledge_reads_at_once(self.transport)
        self._plaintext_capabilities, self._capabilities = self._capabilities, {}
        self.esmtpState_ehlo(code, resp)
        # EHLO waits in the TLS layer until the handshake is done; until then, a
        # stall is the handshake's (handshakeCompleted moves the stage on).
        self._stage("starttls")

    def esmtpTLSFailed(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self._fail(TLSFailedError(f"the TLS handshake with {self._policy.address} failed"), fatal=True)

    # -- AUTH ------------------------------------------------------------------------------

    @staticmethod
    def _offered_mechanisms(items: dict[bytes, bytes | None]) -> set[bytes]:
        offered: set[bytes] = set()
        for key, value in items.items():
            if key == b"AUTH" and value:
                offered.update(value.upper().split())
            elif key.startswith(b"AUTH="):  # old servers: "AUTH=LOGIN PLAIN"
                offered.update(key[5:].split())
                if value:
                    offered.update(value.upper().split())
        return offered

    def authenticate(self, code: int, resp: bytes, items: dict[bytes, bytes | None]) -> None:
        offered = self._offered_mechanisms(items)
        policy = self._policy
        if self.secret is not None and offered:
            if not self._tlsMode and not policy.allow_plaintext_auth:
                if self.requireAuthentication:
                    self._fail(
                        TLSRequiredError(
                            f"{policy.address} offers no TLS on this connection, and the policy "
                            "will not send credentials in plaintext; use tls='starttls' or "
                            "'implicit', or allow_plaintext_auth=True for a trusted local relay"
                        )
                    )
                    return
            else:
                for name in policy.mechanisms:
                    if name.encode("ascii") in offered:
                        self._start_auth(name)
                        return
        if self.requireAuthentication:
            self.esmtpAUTHRequired(offered=offered)
        else:
            self.smtpState_from(code, resp)

    def _start_auth(self, name: str) -> None:
        assert self._policy.username is not None and self.secret is not None
        self._stage("auth")
        self._redacting = True
        self._auth_name = name
        self._authinfo = _sasl.mechanism(name, self._policy.username)
        initial = self._authinfo.initial_response(self.secret)
        if initial is not None:
            self._expected = [235, 334]
            self._okresponse = self.smtpState_maybeAuthenticated
            self._failresponse = self._initial_response_refused
            self.sendLine(b"AUTH " + name.encode("ascii") + b" " + base64.b64encode(initial))
        else:
            self._expected = [334]
            self._okresponse = self.esmtpState_challenge
            self._failresponse = self.esmtpAUTHServerError
            self.sendLine(b"AUTH " + name.encode("ascii"))

    def _initial_response_refused(self, code: int, resp: bytes) -> None:
        # With the credentials in the AUTH command itself, 504 (mechanism not
        # supported) is still a refusal of the command, not of the credentials.
        if code == 504:
            self.esmtpAUTHServerError(code, resp)
        else:
            self.esmtpAUTHDeclined(code, resp)

    def _authResponse(self, auth: Any, challenge: bytes) -> None:  # noqa: N802
        self._failresponse = self.esmtpAUTHDeclined
        try:
            decoded = base64.b64decode(challenge, validate=True)
        except binascii.Error:
            self.sendLine(b"*")  # RFC 4954: cancel the exchange
            self._expected = _ANY_CODE
            self._okresponse = self.esmtpAUTHMalformedChallenge
            self._failresponse = self.esmtpAUTHMalformedChallenge
            return
        self._expected = [235, 334]
        self._okresponse = self.smtpState_maybeAuthenticated
        self.sendLine(base64.b64encode(auth.challengeResponse(self.secret, decoded)))

    def smtpState_maybeAuthenticated(self, code: int, resp: bytes) -> None:  # noqa: N802
        if code == 235:
            self._redacting = False
            self._authenticated_with = self._auth_name
            self.smtpState_from(code, resp)
        else:
            self._authResponse(self._authinfo, resp)

    def esmtpAUTHRequired(  # noqa: N802
        self, code: int = -1, resp: bytes | None = None, offered: set[bytes] | None = None
    ) -> None:
        names = ", ".join(sorted(m.decode("ascii", "replace") for m in offered or ())) or "none"
        self._fail(
            AuthRequiredError(
                f"the policy requires authentication, but {self._policy.address} offers no "
                f"mechanism syncsmtp can use (server offers: {names}; policy allows: "
                f"{', '.join(self._policy.mechanisms)}); adjust auth_mechanisms, or "
                "require_auth=False to send without authenticating"
            )
        )

    def esmtpAUTHDeclined(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self._redacting = False
        reply = self._reply(code, resp or b"")
        self._fail(
            AuthDeclinedError(
                f"{self._policy.address} rejected the credentials for "
                f"{self._policy.username!r} with {self._auth_name}: {reply}; check the user "
                "name and password" + (" (a temporary failure: try again later)" if reply.transient else ""),
                reply=reply,
            )
        )

    def esmtpAUTHServerError(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self._redacting = False
        reply = self._reply(code, resp or b"")
        self._fail(
            AuthServerError(
                f"{self._policy.address} refused AUTH {self._auth_name}: {reply}; try another "
                "mechanism with auth_mechanisms=",
                reply=reply,
            )
        )

    def esmtpAUTHMalformedChallenge(self, code: int = -1, resp: bytes | None = None) -> None:  # noqa: N802
        self._redacting = False
        self._fail(
            AuthMalformedChallengeError(
                f"{self._policy.address} sent an AUTH {self._auth_name} challenge that is not "
                "base64; the exchange was cancelled. Try another mechanism with auth_mechanisms="
            )
        )

    # -- the transaction ----------------------------------------------------------------------

    def _current(self) -> Envelope:
        assert self._envelope is not None
        return self._envelope

    def _encode_address(self, address: str) -> bytes:
        return address.encode("utf-8" if self._current().international else "ascii")

    def smtpState_from(self, code: int, resp: bytes) -> None:  # noqa: N802
        # Twisted calls this when EHLO, TLS and AUTH are done: the session is ready.
        self._go_idle()
        self.ready.callback(self)

    def transact(
        self, envelope: Envelope, progress: Progress, done: defer.Deferred[SendResult], quit_after: bool
    ) -> None:
        """Send one message on this (idle) session; ``done`` gets the outcome.
        With ``quit_after``, the session QUITs afterwards (pipelined with the
        data when the server allows)."""
        assert self.idle, "transact() needs an idle session"
        if self.transactions:
            # Later messages on a reused session: their own transcript and time;
            # the first one's include connecting, TLS and AUTH.
            self._transcript = []
            self._started = self._reactor.seconds()
        self.transactions += 1
        self._envelope, self._progress, self._done = envelope, progress, done
        self._quit_after = quit_after
        self._accepted, self._refused = [], {}
        self._awaiting, self._mail_reply = 0, None
        self._refused_after_data = False
        if not self._needs_rset:
            self._begin_mail()
            return
        # Only after a failed transaction: a clean one leaves nothing to reset.
        self._stage("mail")
        self._expected = [250]
        self._okresponse = lambda _code, _resp: self._begin_mail()
        self._failresponse = self._rset_refused
        self.sendLine(b"RSET")

    def _rset_refused(self, code: int, resp: bytes) -> None:
        reply = self._reply(code, resp)
        self._fail(ProtocolError(f"{self._policy.address} refused RSET: {reply}", reply=reply), fatal=True)

    def _begin_mail(self) -> None:
        self._needs_rset = False
        self._stage("mail")
        envelope = self._current()
        caps = self._capabilities
        if envelope.international and b"SMTPUTF8" not in caps:
            self._fail(
                MessageRefused(
                    f"{self._policy.address} does not offer SMTPUTF8, which the non-ASCII "
                    "addresses of this message need; use ASCII (IDNA) addresses",
                )
            )
            return
        limit = caps.get(b"SIZE")
        if limit and limit.isdigit() and 0 < int(limit) < envelope.size:
            self._fail(
                MessageRefused(
                    f"the message is {envelope.size} bytes, and {self._policy.address} "
                    f"accepts at most {int(limit)} (its SIZE); nothing was sent",
                )
            )
            return
        params = b""
        if b"SIZE" in caps:
            params += b" SIZE=%d" % envelope.size
        if envelope.eight_bit and b"8BITMIME" in caps:
            params += b" BODY=8BITMIME"
        if envelope.international:
            params += b" SMTPUTF8"
        mail = b"MAIL FROM:<" + self._encode_address(envelope.sender) + b">" + params
        self._pending_recipients = iter(envelope.recipients)
        if b"PIPELINING" in caps:
            self._send_pipelined(mail)
            return
        self._expected = [250]
        self._okresponse = self.smtpState_to
        self._failresponse = self._sender_refused
        self.sendLine(mail)

    def _rcpt_line(self, recipient: str) -> bytes:
        return b"RCPT TO:<" + self._encode_address(recipient) + b">"

    def _sender_refused(self, code: int, resp: bytes) -> None:
        self._fail(self._sender_error(self._reply(code, resp)))

    def _sender_error(self, reply: Reply) -> SenderRefused:
        hint = "; the server wants authentication: set username and password" \
            if reply.code == 530 else ""
        return SenderRefused(
            f"{self._policy.address} refused the sender {self._current().sender!r}: {reply}{hint}",
            reply=reply,
        )

    def _recipients_error(self) -> RecipientsRefused:
        details = "; ".join(f"{address}: {reply}" for address, reply in self._refused.items())
        return RecipientsRefused(
            f"{self._policy.address} refused every recipient ({details}); nothing was sent",
            refused=self._refused,
            reply=next(iter(self._refused.values()), None),
        )

    def _record_recipient(self, recipient: str, code: int, resp: bytes) -> None:
        if 200 <= code < 300:
            self._accepted.append(recipient)
        else:
            self._refused[recipient] = self._reply(code, resp)

    # Lock-step: one command, one reply.

    def smtpState_to(self, code: int, resp: bytes) -> None:  # noqa: N802
        self._stage("rcpt")
        self._expected = _ANY_CODE
        self._okresponse = self._recipient_reply
        self._next_recipient()

    def _recipient_reply(self, code: int, resp: bytes) -> None:
        self._record_recipient(self._last_recipient, code, resp)
        self._next_recipient()

    def _next_recipient(self) -> None:
        recipient = next(self._pending_recipients, None)
        if recipient is not None:
            self._last_recipient = recipient
            self.sendLine(self._rcpt_line(recipient))
            return
        if not self._accepted:
            self._fail(self._recipients_error())
            return
        self._stage("data")
        self._expected = [354]
        self._okresponse = self.smtpState_data
        self._failresponse = self._data_refused
        self.sendLine(b"DATA")

    # PIPELINING (RFC 2920): MAIL, every RCPT and DATA in one write, replies in order.

    def _send_pipelined(self, mail: bytes) -> None:
        recipients = self._current().recipients
        lines = [mail, *(self._rcpt_line(r) for r in recipients), b"DATA"]
        for line in lines:
            self._note(b"C: " + line)
        self._awaiting = len(recipients)  # RCPT replies still to come
        self._mail_reply = None
        self._expected = _ANY_CODE
        self._okresponse = self._pipelined_reply
        self.transport.write(b"\r\n".join(lines) + b"\r\n")

    def _pipelined_reply(self, code: int, resp: bytes) -> None:
        if self._mail_reply is None:
            self._mail_reply = self._reply(code, resp)
            self._stage("rcpt")
        elif self._awaiting:
            self._record_recipient(next(self._pending_recipients), code, resp)
            self._awaiting -= 1
            if not self._awaiting:
                self._stage("data")
        else:
            self._pipelined_data_reply(code, resp)

    def _pipelined_data_reply(self, code: int, resp: bytes) -> None:
        assert self._mail_reply is not None
        error: SMTPError | None = None
        # Stages as in lock-step, though the replies are judged only now.
        if not 200 <= self._mail_reply.code < 300:
            error = self._sender_error(self._mail_reply)
            error.stage = "mail"
        elif not self._accepted:
            error = self._recipients_error()
            error.stage = "rcpt"
        if error is None:
            if code == 354:
                self.smtpState_data(code, resp)
            else:
                self._data_refused(code, resp)
            return
        final_error = error
        if code != 354:
            self._fail(final_error)
            return
        # DATA was taken with nothing to deliver: end it empty (RFC 2920 section 3.1).
        self._expected = _ANY_CODE
        self._okresponse = lambda _code, _resp: self._fail(final_error)
        self.sendLine(b".")

    def _data_refused(self, code: int, resp: bytes) -> None:
        reply = self._reply(code, resp)
        self._fail(
            MessageRefused(f"{self._policy.address} refused the DATA command: {reply}", reply=reply)
        )

    def smtpState_data(self, code: int, resp: bytes) -> None:  # noqa: N802
        if self._buffer:
            # The server wrote more after its 354 before it could have seen any
            # data: no reply may come then, and one read after the dot would be
            # taken for the message's answer.
            self._fail(ProtocolError(
                f"{self._policy.address} sent more after its 354 reply, before the message data; "
                "nothing was sent. The server or something in between is misbehaving"
            ), fatal=True)
            return
        self._stage("message")
        self._note(b"C: <%d bytes of message data>" % self._current().size)
        self._expected = _SUCCESS_CODES
        self._okresponse = self._final_reply
        self._failresponse = self._final_reply
        # With PIPELINING, QUIT may follow the data in the same write (RFC 2920):
        # one write and one reactor turn fewer per message.
        self._quit_pipelined = self._quit_after and b"PIPELINING" in self._capabilities
        trailer = b"QUIT\r\n" if self._quit_pipelined else b""
        chunks = iter_encoded(self._current().parts, trailer=trailer)
        if self._current().size <= CHUNK_SIZE:
            # One chunk: write it now rather than through a producer's extra loop turn.
            self.transport.write(next(chunks))
            self._data_written()
            return
        self._producer = _DataProducer(self.transport, chunks, self._data_written)
        self._producer.start()

    def _data_written(self) -> None:
        self._producer = None
        self._note(b"C: .")
        if self._quit_pipelined:
            self._note(b"C: QUIT")
        self._stage("end-of-data")

    def _final_reply(self, code: int, resp: bytes) -> None:
        reply = self._reply(code, resp)
        if 200 <= code < 300:
            result = SendResult(
                accepted=tuple(self._accepted),
                refused=self._refused,
                reply=reply,
                message_id=self._current().message_id,
                elapsed=self._reactor.seconds() - self._started,
                tls=self._tls_info,
                auth_mechanism=self._authenticated_with,
                host=self._policy.host,
                port=self._policy.effective_port,
                transcript=self._transcript_lines(),
            )
            # The next state first: the result's callbacks may hand over the next message.
            if self._quit_after:
                self._quit()
            else:
                self._go_idle()
            self._finish_with(result)
        elif _replies.is_refusal(code):
            self._refused_after_data = True
            self._fail(
                MessageRefused(f"{self._policy.address} refused the message: {reply}", reply=reply)
            )
        else:
            self._fail(ProtocolError(
                f"{self._policy.address} answered the message data with {reply}, which is neither "
                "an acceptance nor a refusal: the message may have been delivered. It was not "
                "sent again; check before resending, or risk a duplicate",
                reply=reply,
            ), fatal=True)

    def smtpState_disconnect(self, code: int, resp: bytes | None) -> None:  # noqa: N802
        if self.transport is not None:
            self.transport.loseConnection()


class _OneShotFactory(protocol.ClientFactory):
    """Hands out the one protocol of a send, and never reconnects: stock
    ``SMTPSenderFactory`` retries a lost connection and sends DATA again."""

    noisy = False

    def __init__(self, client: SMTPClientProtocol, failed: Callable[[Failure], None]) -> None:
        self._client = client
        self._failed = failed

    def buildProtocol(self, addr: Any) -> SMTPClientProtocol:  # noqa: N802
        self._client.factory = self
        return self._client

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:  # noqa: N802
        self._failed(reason)


class _Connection:
    """Opens the TCP (and, for implicit TLS, TLS) connection of one send."""

    def __init__(self, reactor: Any, policy: Policy, factory: Any, timeout: float) -> None:
        self._connector: Any = None
        self._resolving: defer.Deferred[Any] | None = None
        host, port = policy.host, policy.effective_port
        if isIPAddress(host) or isIPv6Address(host):
            # No resolver for an IP literal: HostnameEndpoint would still hand it to
            # getaddrinfo in the thread pool, a thread hop and several loop turns.
            self._connector = reactor.connectTCP(host, port, factory, timeout=timeout)
        else:
            endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
            self._resolving = endpoint.connect(factory)
            self._resolving.addErrback(lambda reason: factory.clientConnectionFailed(None, reason))

    def cancel(self) -> None:
        """Stop connecting, if it still is (an open connection is the protocol's to drop)."""
        if self._resolving is not None and not self._resolving.called:
            self._resolving.cancel()
        if self._connector is not None and self._connector.state == "connecting":
            self._connector.stopConnecting()


def open_session(
    reactor: Any, policy: Policy, progress: Progress, timeout: float
) -> tuple[SMTPClientProtocol, _Connection]:
    """Start connecting a session (reactor thread). Its ``ready`` fires when it
    can take a message, or fails (a connect failure included). Raises an
    :class:`SMTPError` when the policy's TLS files cannot be used."""
    tls_options = client_tls_options(policy) if policy.tls != "none" else None
    session = SMTPClientProtocol(reactor, policy, tls_options, progress)

    def connect_failed(reason: Failure) -> None:
        if not session.ready.called:
            session.ready.errback(
                Failure(
                    ConnectError(
                        f"cannot connect to {policy.address}: {reason.getErrorMessage()}; check "
                        "the host name, the port and that the server is running",
                        host=policy.host,
                        stage="connect",
                    )
                )
            )

    factory: Any = _OneShotFactory(session, connect_failed)
    if policy.tls == "implicit":
        assert tls_options is not None
        factory = TLSMemoryBIOFactory(tls_options, True, factory)
    return session, _Connection(reactor, policy, factory, timeout)


def connect_timeout(policy: Policy, timeout: float) -> SendTimeout:
    """The error of a deadline that passed before a connection was made."""
    return SendTimeout(
        f"could not connect to {policy.address} within {timeout:g} s; check the host, the "
        "port and any firewall",
        host=policy.host,
        stage="connect",
    )


def deliver(
    reactor: Any, policy: Policy, envelope: Envelope, timeout: float, progress: Progress
) -> defer.Deferred[SendResult]:
    """Connect, send ``envelope`` as ``policy`` says, QUIT, and fire with the outcome.

    Runs in the reactor thread. The returned Deferred fires with a
    :class:`SendResult` or fails with an :class:`SMTPError`; cancelling it drops
    the connection. ``timeout`` bounds everything from connect to the final
    reply.
    """
    session: SMTPClientProtocol | None = None
    connection: _Connection | None = None

    def cancel(_: defer.Deferred[SendResult]) -> None:
        if connection is not None:
            connection.cancel()
        if session is not None:
            session.abort()

    done: defer.Deferred[SendResult] = defer.Deferred(cancel)
    try:
        session, connection = open_session(reactor, policy, progress, timeout)
    except SMTPError as error:
        done.errback(Failure(error))
        return done

    def setup_failed(reason: Failure) -> None:
        if not done.called:
            done.errback(reason)

    session.ready.addCallbacks(
        lambda ready: ready.transact(envelope, progress, done, quit_after=True), setup_failed
    )

    def deadline() -> None:
        if done.called:
            return
        if session is not None and session.transport is not None:
            session.abort_for_deadline()
            return
        done.errback(Failure(connect_timeout(policy, timeout)))
        if connection is not None:
            connection.cancel()

    timer = reactor.callLater(timeout, deadline)

    def stop_timer(outcome: Any) -> Any:
        if timer.active():
            timer.cancel()
        return outcome

    done.addBoth(stop_timer)
    return done
