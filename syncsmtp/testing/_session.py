"""One connection to the test server: Twisted's ESMTP session, with the faults scripted for it."""

# Twisted's smtp module is not annotated.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import protocol
from twisted.mail import smtp

from ._chunking import ChunkingStream
from ._core import ServerCore, SessionSettings
from ._delivery import Delivery, MalformedResponse, auth_portal, challengers
from ._params import announced, command_refusal
from ._received import Envelope, ReceivedMessage
from ._script import Fault
from ._tls import client_certificate_name

__all__ = ["Session", "SessionFactory"]

_VERB_STAGES = {
    b"EHLO": "ehlo", b"HELO": "helo", b"STARTTLS": "starttls", b"AUTH": "auth", b"MAIL": "mail",
    b"RCPT": "rcpt", b"DATA": "data", b"QUIT": "quit",
}
_queue_ids = itertools.count(1)


class Session(smtp.ESMTP):
    """One connection to the test server: everything it needs from the server is
    ``core`` (the fault script, the record of what was received) and the settings
    the core gave it when the connection opened."""

    MAX_LENGTH = 1024 * 1024
    transport: Any

    def __init__(self, core: ServerCore) -> None:
        settings = core.settings()
        super().__init__(challengers(settings), settings.tls_creator if settings.tls == "starttls" else None)
        self.core = core
        self.settings: SessionSettings = settings
        self._commands: list[bytes] = []
        self.host = settings.hostname.encode("idna")
        self.timeout = 30
        self._delivery = Delivery(self)
        self.delivery = self._delivery
        if settings.offers_auth:
            self.portal = auth_portal(settings, self._delivery)  # type: ignore[assignment]
        self._stalled = False
        self._data_lines: list[bytes] | None = None
        self._mail_options: tuple[str, ...] = ()
        # id() of an entry of Twisted's _to (alive while it is there) -> its RCPT TO parameters.
        self._rcpt_options: dict[int, tuple[str, ...]] = {}
        self._envelope: Envelope | None = None  # of the DATA in progress
        self._stream = ChunkingStream(self)
        self.auth_user: str | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def secure(self) -> bool:
        return self.settings.tls == "implicit" or self.startedTLS

    def _fault(self, stage: str) -> bool:
        """Apply a scripted fault for ``stage``; True when it replaced the normal handling."""
        fault = self.take_fault(stage)
        if fault is not None:
            self.enact(fault)
        return fault is not None

    # What ChunkingStream asks of the session (see ChunkingSession there).

    def take_fault(self, stage: str) -> Fault | None:
        return self.core.script.take(stage)

    def enact(self, fault: Fault) -> None:
        if fault.kind == "fail":
            self.sendCode(fault.code, fault.text.encode())
        elif fault.kind == "drop":
            self.transport.abortConnection()
        else:
            self._stalled = True

    def listening(self) -> bool:
        return not self._stalled and not self.transport.disconnecting

    def size_limit(self) -> int:
        return self.settings.size_limit()

    def envelope(self) -> Envelope | None:
        if self._from is None or not self._to:
            return None
        recipients = tuple(str(user.dest) for user, _ in self._to)
        return Envelope(str(self._from), recipients, self._mail_options,
                        tuple(self._rcpt_options.get(id(entry), ()) for entry in self._to), key=self._from)

    def end_envelope(self) -> None:
        self._from = None
        self._to = []

    # -- connection --------------------------------------------------------------------------

    def abort(self) -> None:
        """Close the connection at once (the server is stopping)."""
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self) -> None:  # noqa: N802
        self._commands = self.core.opened(self)
        if not self._fault("greeting"):
            super().connectionMade()
        elif not self._stalled:
            self.transport.loseConnection()  # a server that refuses to greet hangs up

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:  # noqa: N802
        self.core.closed(self)
        if self.mode is smtp.DATA:
            self.mode = smtp.COMMAND
        super().connectionLost(reason)

    def greeting(self) -> bytes:
        return bytes(self.host) + b" ESMTP syncsmtp test server"

    # -- commands ---------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        # Split by the stream, not LineOnlyReceiver, which cannot read BDAT chunks raw.
        self._stream.received(data)

    def lineReceived(self, line: bytes) -> Any:  # noqa: N802
        if self._stalled:
            return None
        if self._data_lines is not None:
            return self._data_line(line)
        self.core.record(self._commands, line)
        if self.mode == smtp.COMMAND:
            verb = line.split(b" ", 1)[0].upper()
            stage = _VERB_STAGES.get(verb)
            if stage is not None and self._fault(stage):
                return None
        return super().lineReceived(line)

    def extensions(self) -> dict[bytes, Any]:
        extensions: dict[bytes, Any] = {}
        offered = self.secure or not self.settings.auth_requires_tls
        if self.challengers and offered and not self.authenticated:
            extensions[b"AUTH"] = list(self.challengers)
        if self.canStartTLS and not self.startedTLS:
            extensions[b"STARTTLS"] = None
        extensions[b"ENHANCEDSTATUSCODES"] = None
        for keyword in self.settings.extensions:
            name, _, value = keyword.partition(" ")
            if announced(name.upper(), self.settings, self.secure):
                extensions[name.upper().encode()] = [value.encode()] if value else None
        return extensions

    def do_EHLO(self, rest: bytes) -> None:  # noqa: N802
        if not self.settings.ehlo:
            self.sendCode(502, b"5.5.1 EHLO not implemented")
            return
        super().do_EHLO(rest)

    def do_NOOP(self, rest: bytes) -> None:  # noqa: N802
        self.sendCode(250, b"2.0.0 Ok")

    def do_RSET(self, rest: bytes) -> None:  # noqa: N802
        self._from = None
        self._to = []
        self.sendCode(250, b"2.0.0 Ok")

    def do_QUIT(self, rest: bytes) -> None:  # noqa: N802
        self.sendCode(221, b"2.0.0 Bye")
        self.transport.loseConnection()

    def ext_STARTTLS(self, rest: bytes) -> None:  # noqa: N802
        if self.startedTLS or not self.canStartTLS:
            self.sendCode(454 if not self.startedTLS else 503, b"4.7.0 TLS not available")
            return
        if self.core.script.take("tls-handshake") is not None:
            self.sendCode(220, b"2.0.0 Ready to start TLS")
            self._stalled = True
            return
        injection = self.core.script.injection
        # One write, so the injected bytes arrive with the reply, as in CVE-2011-0411.
        self.transport.write(b"220 2.0.0 Ready to start TLS\r\n" + injection)
        self.transport.startTLS(self.ctx)
        self.startedTLS = True
        self._helo = None
        self._from = None
        self._to = []

    def ext_AUTH(self, rest: bytes) -> None:  # noqa: N802
        if self.settings.auth_requires_tls and not self.secure:
            self.sendCode(538, b"5.7.11 Encryption required for requested authentication mechanism")
            return
        mechanism = rest.split(None, 1)[0].upper() if rest.strip() else b""
        if self.core.script.malformed_challenge and mechanism in (b"LOGIN", b"CRAM-MD5") \
                and mechanism in self.challengers and not self.authenticated:
            self.challenger = self.challengers[mechanism]()
            self.mode = smtp.AUTH
            self.sendCode(334, b"=not*base64=")
            return
        super().ext_AUTH(rest)

    def state_AUTH(self, response: bytes | None) -> None:  # noqa: N802
        try:
            super().state_AUTH(response)
        except MalformedResponse:
            self.challenger = None
            self.mode = smtp.COMMAND
            self.sendCode(501, b"5.5.2 Malformed authentication response")

    def _cbAuthenticated(self, login_info: Any) -> Any:  # noqa: N802
        username = getattr(self.challenger, "username", None)
        if isinstance(username, bytes):
            self.auth_user = username.decode("utf-8", "replace")
        return super()._cbAuthenticated(login_info)

    def _ebAuthenticated(self, reason: Any) -> None:  # noqa: N802
        self.challenge = None
        self.sendCode(535, b"5.7.8 Authentication credentials invalid")

    def do_MAIL(self, rest: bytes) -> None:  # noqa: N802
        options, refusal = command_refusal(self.mail_re.match(rest), self.settings, self.secure,
                                           recipient=False)
        if refusal is not None:
            self.sendCode(*refusal)
            return
        self._mail_options = options
        self._rcpt_options.clear()
        super().do_MAIL(rest)

    def do_RCPT(self, rest: bytes) -> None:  # noqa: N802
        if self._stream.in_transaction():
            self.sendCode(503, b"5.5.1 Bad sequence of commands: RCPT TO after BDAT")
            return
        options, refusal = command_refusal(self.rcpt_re.match(rest), self.settings, self.secure,
                                           recipient=True)
        if refusal is not None:
            self.sendCode(*refusal)
            return
        count = len(self._to)
        super().do_RCPT(rest)  # validateTo answers at once: the entry is there when accepted
        if len(self._to) > count:
            self._rcpt_options[id(self._to[-1])] = options

    def _cbFromValidate(self, from_email: Any, code: int = 250, msg: bytes = b"") -> None:  # noqa: N802
        super()._cbFromValidate(from_email, 250, b"2.1.0 Sender OK")

    def _cbToValidate(self, to: Any, user: Any = None, code: int = 250, msg: bytes = b"") -> None:  # noqa: N802
        super()._cbToValidate(to, user, 250, b"2.1.5 Recipient OK")

    def do_DATA(self, rest: bytes) -> None:  # noqa: N802
        if self._stream.in_transaction():
            # RFC 3030: 503, and the transaction is in no state to go on (RSET first).
            self._stream.abandon()
            self.end_envelope()
            self.sendCode(503, b"5.5.1 Bad sequence of commands: DATA after BDAT")
            return
        envelope = self.envelope()
        super().do_DATA(rest)
        if self.mode is smtp.DATA:
            # This session records the data itself (see _data_line).
            self.__dict__.pop("_SMTP__messages", None)
            self._envelope = envelope
            self._data_lines = []

    def ext_BDAT(self, rest: bytes) -> None:  # noqa: N802
        if not self.settings.announces("CHUNKING"):
            self.do_UNKNOWN(rest)  # as before CHUNKING existed: the chunk is read as commands
            return
        self._stream.command(rest)

    def _data_line(self, line: bytes) -> None:
        assert self._data_lines is not None
        if line != b".":
            self._data_lines.append(line)
            return
        lines, self._data_lines = self._data_lines, None
        envelope, self._envelope = self._envelope, None
        assert envelope is not None
        self.mode = smtp.COMMAND
        self.accept(
            envelope,
            data=b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines),
            raw=b"".join(line + b"\r\n" for line in lines) + b".\r\n",
            chunks=None,
        )

    def accept(self, envelope: Envelope, data: bytes, raw: bytes, chunks: tuple[int, ...] | None) -> None:
        """Record a message received by DATA (``chunks`` None) or BDAT, and answer it:
        the reply after the final dot or to BDAT LAST is the "end-of-data" stage."""
        received = ReceivedMessage(
            sender=envelope.sender,
            recipients=envelope.recipients,
            data=data,
            raw=raw,
            mail_options=envelope.mail_options,
            rcpt_options=envelope.rcpt_options,
            helo=(self._helo[0] or b"").decode("utf-8", "replace") if self._helo else "",
            tls=self.secure,
            auth_user=self.auth_user,
            client_certificate=client_certificate_name(self.transport) if self.secure else None,
            via="DATA" if chunks is None else "BDAT",
            chunks=chunks or (),
        )
        fault = self.take_fault("end-of-data")
        if fault is not None and fault.kind == "fail":
            self.sendCode(fault.code, fault.text.encode())
            return
        self.core.deliver(received)
        if fault is None:
            self.sendCode(250, b"2.0.0 Ok: queued as T%d" % next(_queue_ids))
        elif fault.kind == "drop":
            self.transport.abortConnection()
        else:
            self._stalled = True


class SessionFactory(protocol.ServerFactory):
    """A :class:`Session` for each connection, all sharing one :class:`ServerCore`."""

    noisy = False

    def __init__(self, core: ServerCore) -> None:
        self._core = core

    def buildProtocol(self, addr: Any) -> Session:  # noqa: N802
        session = Session(self._core)
        session.factory = self
        return session
