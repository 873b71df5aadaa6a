"""The test SMTP server: Twisted's ESMTP with scripted faults, in the reactor thread."""

from __future__ import annotations

import email
import email.message
import email.policy
import functools
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from twisted.cred import checkers, credentials, portal
from twisted.cred.credentials import CramMD5Credentials
from twisted.internet import defer, protocol, ssl
from twisted.internet.error import CannotListenError
from twisted.mail import smtp
from twisted.mail._cred import PLAINCredentials
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import log
from zope.interface import implementer

from .. import _reactor
from ..policy import Policy
from ._addresses import check_listen_host, envelope_refusal
from ._certs import certificates

__all__ = ["STAGES", "ReceivedMessage", "SMTPTestServer"]

#: The stages a fault can be scripted at ("tls-handshake" only for stall()).
STAGES = ("greeting", "ehlo", "helo", "starttls", "auth", "mail", "rcpt", "data", "end-of-data", "quit")
_VERB_STAGES = {
    b"EHLO": "ehlo", b"HELO": "helo", b"STARTTLS": "starttls", b"AUTH": "auth", b"MAIL": "mail",
    b"RCPT": "rcpt", b"DATA": "data", b"QUIT": "quit",
}
_CHALLENGERS: dict[str, Any] = {
    "PLAIN": PLAINCredentials,
    "LOGIN": smtp.LOGINCredentials,
    "CRAM-MD5": CramMD5Credentials,
}
_queue_ids = itertools.count(1)


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted.

    ``data`` is the message as delivered: dot-unstuffing undone, each line
    ending in CRLF as it was delimited on the wire (a bare CR or LF inside a
    line stays visible). ``raw`` is the exact data phase on the wire, stuffing
    and the terminating ``.CRLF`` included.
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    raw: bytes
    mail_options: tuple[str, ...]
    helo: str
    tls: bool
    auth_user: str | None
    client_certificate: str | None = None

    @property
    def message(self) -> email.message.EmailMessage:
        """``data`` parsed with the modern email policy."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


@dataclass
class _Fault:
    kind: Literal["fail", "drop", "stall"]
    code: int = 0
    text: str = ""
    remaining: int | None = None


@dataclass
class _Script:
    """The faults in force, shared by the test thread and the reactor thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: dict[str, _Fault] = field(default_factory=dict)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    injection: bytes = b""
    malformed_challenge: bool = False

    def take(self, stage: str) -> _Fault | None:
        with self.lock:
            fault = self.faults.get(stage)
            if fault is None:
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self.faults[stage]
            return fault


class _NullMessage:
    """Twisted's server wants one IMessage per recipient; the session records the data."""

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        return None

    def eomReceived(self) -> defer.Deferred[None]:  # noqa: N802
        return defer.succeed(None)

    def connectionLost(self) -> None:  # noqa: N802
        return None


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, session: _Session) -> None:
        self._session = session

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:  # noqa: N802
        return None

    def validateFrom(self, helo: Any, origin: Any) -> Any:  # noqa: N802
        if self._session.server.require_auth and not self._session.authenticated:
            raise smtp.SMTPServerError(530, "5.7.0 Authentication required")
        return origin

    def validateTo(self, user: Any) -> Any:  # noqa: N802
        address = str(user.dest)
        refusal = self._session.server._script.refused.get(address.lower())
        if refusal is not None:
            raise smtp.SMTPServerError(*refusal)
        return _NullMessage


@implementer(checkers.ICredentialsChecker)
class _AnyCredentials:
    """Takes every user name and password (``accept_any_credentials``), as
    development mail sinks do: the client's AUTH code runs, nothing is checked."""

    credentialInterfaces = (  # noqa: N815 (Twisted's interface)
        credentials.IUsernamePassword, credentials.IUsernameHashedPassword,
    )

    def requestAvatarId(self, offered: Any) -> defer.Deferred[bytes]:  # noqa: N802
        return defer.succeed(offered.username)


@implementer(portal.IRealm)
class _Realm:
    def __init__(self, delivery: _Delivery) -> None:
        self._delivery = delivery

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:  # noqa: N802
        return smtp.IMessageDelivery, self._delivery, lambda: None


class _Session(smtp.ESMTP):
    """One connection to the test server."""

    MAX_LENGTH = 1024 * 1024
    transport: Any

    def __init__(self, server: SMTPTestServer) -> None:
        challengers = {
            name.encode(): functools.partial(CramMD5Credentials, server.hostname.encode("idna"))
            if name == "CRAM-MD5" else _CHALLENGERS[name]
            for name in server.auth_mechanisms
        } if server.users or server.accept_any_credentials else {}
        super().__init__(challengers, server._server_tls_options if server.tls == "starttls" else None)
        self.server = server
        self._commands: list[bytes] = []
        self.host = server.hostname.encode("idna")
        self.timeout = 30
        self._delivery = _Delivery(self)
        self.delivery = self._delivery
        if server.users or server.accept_any_credentials:
            checker: Any = _AnyCredentials() if server.accept_any_credentials else \
                checkers.InMemoryUsernamePasswordDatabaseDontUse(
                    **{user: password.encode() for user, password in server.users.items()}
                )
            realm: Any = _Realm(self._delivery)
            self.portal = portal.Portal(realm, [checker])  # type: ignore[assignment]
        self._stalled = False
        self._data_lines: list[bytes] | None = None
        self._mail_options: tuple[str, ...] = ()
        self._envelope: tuple[str, tuple[str, ...]] = ("", ())
        self.auth_user: str | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def secure(self) -> bool:
        return self.server.tls == "implicit" or self.startedTLS

    def _fault(self, stage: str) -> bool:
        """Apply a scripted fault for ``stage``; True when it replaced the normal handling."""
        fault = self.server._script.take(stage)
        if fault is None:
            return False
        if fault.kind == "fail":
            self.sendCode(fault.code, fault.text.encode())
        elif fault.kind == "drop":
            self.transport.abortConnection()
        else:
            self._stalled = True
        return True

    # -- connection --------------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        self.server._connection_opened(self, self._commands)
        if not self._fault("greeting"):
            super().connectionMade()
        elif not self._stalled:
            self.transport.loseConnection()  # a server that refuses to greet hangs up

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:  # noqa: N802
        self.server._connection_closed(self)
        if self.mode is smtp.DATA:
            self.mode = smtp.COMMAND
        super().connectionLost(reason)

    def greeting(self) -> bytes:
        return bytes(self.host) + b" ESMTP syncsmtp test server"

    # -- commands ---------------------------------------------------------------------------

    def lineReceived(self, line: bytes) -> Any:  # noqa: N802
        if self._stalled:
            return None
        if self._data_lines is not None:
            return self._data_line(line)
        self.server._record_command(self._commands, line)
        if self.mode == smtp.COMMAND:
            verb = line.split(b" ", 1)[0].upper()
            stage = _VERB_STAGES.get(verb)
            if stage is not None and self._fault(stage):
                return None
        return super().lineReceived(line)

    def extensions(self) -> dict[bytes, Any]:
        extensions: dict[bytes, Any] = {}
        if self.challengers and (self.secure or not self.server.auth_requires_tls) and not self.authenticated:
            extensions[b"AUTH"] = list(self.challengers)
        if self.canStartTLS and not self.startedTLS:
            extensions[b"STARTTLS"] = None
        extensions[b"ENHANCEDSTATUSCODES"] = None
        for keyword in self.server.extensions:
            name, _, value = keyword.partition(" ")
            extensions[name.upper().encode()] = [value.encode()] if value else None
        return extensions

    def do_EHLO(self, rest: bytes) -> None:  # noqa: N802
        if not self.server.ehlo:
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
        if self.server._script.take("tls-handshake") is not None:
            self.sendCode(220, b"2.0.0 Ready to start TLS")
            self._stalled = True
            return
        injection = self.server._script.injection
        # One write, so the injected bytes arrive with the reply, as in CVE-2011-0411.
        self.transport.write(b"220 2.0.0 Ready to start TLS\r\n" + injection)
        self.transport.startTLS(self.ctx)
        self.startedTLS = True
        self._helo = None
        self._from = None
        self._to = []

    def ext_AUTH(self, rest: bytes) -> None:  # noqa: N802
        if self.server.auth_requires_tls and not self.secure:
            self.sendCode(538, b"5.7.11 Encryption required for requested authentication mechanism")
            return
        mechanism = rest.split(None, 1)[0].upper() if rest.strip() else b""
        if self.server._script.malformed_challenge and mechanism in (b"LOGIN", b"CRAM-MD5") \
                and mechanism in self.challengers and not self.authenticated:
            self.challenger = self.challengers[mechanism]()
            self.mode = smtp.AUTH
            self.sendCode(334, b"=not*base64=")
            return
        super().ext_AUTH(rest)

    def _cbAuthenticated(self, login_info: Any) -> Any:  # noqa: N802
        username = getattr(self.challenger, "username", None)
        if isinstance(username, bytes):
            self.auth_user = username.decode("utf-8", "replace")
        return super()._cbAuthenticated(login_info)

    def _ebAuthenticated(self, reason: Any) -> None:  # noqa: N802
        self.challenge = None
        self.sendCode(535, b"5.7.8 Authentication credentials invalid")

    def do_MAIL(self, rest: bytes) -> None:  # noqa: N802
        match = self.mail_re.match(rest)
        if match and self._refused_envelope(match, recipient=False):
            return
        options = match.group("opts") if match else None
        self._mail_options = tuple(o.decode("utf-8", "replace") for o in (options or b"").split())
        limit = self.server._size_limit()
        for option in self._mail_options:
            name, _, value = option.partition("=")
            if name.upper() == "SIZE" and limit and value.isdigit() and int(value) > limit:
                self.sendCode(552, b"5.3.4 Message size exceeds fixed limit")
                return
        super().do_MAIL(rest)

    def do_RCPT(self, rest: bytes) -> None:  # noqa: N802
        match = self.rcpt_re.match(rest)
        if match and self._refused_envelope(match, recipient=True):
            return
        super().do_RCPT(rest)

    def _refused_envelope(self, match: re.Match[bytes], *, recipient: bool) -> bool:
        """Refuse a control character in the path or after it (Twisted's parser takes one
        inside quotes, and a lone LF there would become a header line wherever it is saved)."""
        refusal = envelope_refusal(match.group("path"), match.string[match.end("path"):], recipient=recipient)
        if refusal is not None:
            self.sendCode(*refusal)
        return refusal is not None

    def _cbFromValidate(self, from_email: Any, code: int = 250, msg: bytes = b"") -> None:  # noqa: N802
        super()._cbFromValidate(from_email, 250, b"2.1.0 Sender OK")

    def _cbToValidate(self, to: Any, user: Any = None, code: int = 250, msg: bytes = b"") -> None:  # noqa: N802
        super()._cbToValidate(to, user, 250, b"2.1.5 Recipient OK")

    def do_DATA(self, rest: bytes) -> None:  # noqa: N802
        sender = str(self._from) if self._from is not None else ""
        recipients = tuple(str(user.dest) for user, _ in self._to)
        super().do_DATA(rest)
        if self.mode is smtp.DATA:
            # This session records the data itself (see _data_line).
            self.__dict__.pop("_SMTP__messages", None)
            self._envelope = (sender, recipients)
            self._data_lines = []

    def _client_certificate(self) -> str | None:
        """The common name of the certificate the client presented, if any."""
        get_peer_certificate = getattr(self.transport, "getPeerCertificate", None)
        certificate = get_peer_certificate() if self.secure and get_peer_certificate else None
        if certificate is None:
            return None
        from cryptography.x509.oid import NameOID

        names = certificate.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else None

    def _data_line(self, line: bytes) -> None:
        assert self._data_lines is not None
        if line != b".":
            self._data_lines.append(line)
            return
        lines, self._data_lines = self._data_lines, None
        self.mode = smtp.COMMAND
        received = ReceivedMessage(
            sender=self._envelope[0],
            recipients=self._envelope[1],
            data=b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines),
            raw=b"".join(line + b"\r\n" for line in lines) + b".\r\n",
            mail_options=self._mail_options,
            helo=(self._helo[0] or b"").decode("utf-8", "replace") if self._helo else "",
            tls=self.secure,
            auth_user=self.auth_user,
            client_certificate=self._client_certificate(),
        )
        fault = self.server._script.take("end-of-data")
        if fault is not None and fault.kind == "fail":
            self.sendCode(fault.code, fault.text.encode())
            return
        self.server._deliver(received)
        if fault is None:
            self.sendCode(250, b"2.0.0 Ok: queued as T%d" % next(_queue_ids))
        elif fault.kind == "drop":
            self.transport.abortConnection()
        else:
            self._stalled = True


class _SessionFactory(protocol.ServerFactory):
    noisy = False

    def __init__(self, server: SMTPTestServer) -> None:
        self._server = server

    def buildProtocol(self, addr: Any) -> _Session:  # noqa: N802
        session = _Session(self._server)
        session.factory = self
        return session


class SMTPTestServer:
    """A real SMTP server on loopback for tests, with STARTTLS, AUTH and scripted faults.

    Built on Twisted's ``ESMTP`` and run in syncsmtp's reactor thread. ``tls``
    is ``"starttls"`` (STARTTLS offered, with a certificate signed by a CA
    generated for the process: trust it through :attr:`ca_file`),
    ``"implicit"`` (TLS from the first byte) or ``"none"``. ``users`` maps
    user names to passwords; AUTH is offered when it is not empty, by default
    only on an encrypted connection. With ``require_client_certificate``, the
    TLS handshake needs a client certificate from the same CA
    (:attr:`client_cert_file`, :attr:`client_key_file`). Use it as a context
    manager, or call :meth:`start` and :meth:`stop`.

    ``accept_any_credentials`` offers AUTH and takes any user name and password
    (a development sink, as ``syncsmtp serve --auth-any``). ``on_message`` is
    called with each :class:`ReceivedMessage` as it is accepted, in the reactor
    thread: it must return quickly (hand the message to a queue, say).

    ``host`` must be a loopback address (127.0.0.0/8, ``::1`` or
    ``localhost``; :class:`ValueError` otherwise, also from :meth:`start`):
    the server takes any mail, so listening where other hosts reach it
    (``"0.0.0.0"``, ``"::"``, a LAN address) needs ``allow_non_loopback=True``.
    MAIL FROM and RCPT TO with a control character in the address (a CR or
    LF inside a quoted local part, say) are refused with ``501``.
    """

    def __init__(
        self,
        tls: Literal["starttls", "implicit", "none"] = "starttls",
        users: Mapping[str, str] | None = None,
        auth_mechanisms: Sequence[str] = ("PLAIN", "LOGIN", "CRAM-MD5"),
        auth_requires_tls: bool = True,
        require_auth: bool = False,
        extensions: Sequence[str] = ("8BITMIME", "SIZE 52428800"),
        ehlo: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "localhost",
        require_client_certificate: bool = False,
        accept_any_credentials: bool = False,
        on_message: Callable[[ReceivedMessage], object] | None = None,
        allow_non_loopback: bool = False,
    ) -> None:
        check_listen_host(host, allow_non_loopback)
        if tls not in ("starttls", "implicit", "none"):
            raise ValueError(f"tls must be 'starttls', 'implicit' or 'none', not {tls!r}")
        unknown = [m for m in auth_mechanisms if m.upper() not in _CHALLENGERS]
        if unknown:
            raise ValueError(f"unknown AUTH mechanisms {unknown}; known: {', '.join(_CHALLENGERS)}")
        self.tls = tls
        self.users = dict(users or {})
        self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self.auth_requires_tls = auth_requires_tls
        self.require_auth = require_auth
        self.extensions = tuple(extensions)
        self.ehlo = ehlo
        self.host = host
        self.port = port
        self.hostname = hostname
        self.require_client_certificate = require_client_certificate
        self.accept_any_credentials = accept_any_credentials
        self.on_message = on_message
        self.allow_non_loopback = allow_non_loopback
        self._script = _Script()
        self._lock = threading.Condition()
        self._outbox: list[ReceivedMessage] = []
        self._commands: list[list[bytes]] = []
        self._sessions: set[_Session] = set()
        self._listening: Any = None
        # Fired when the last connection closes, while stop() waits for them.
        self._drained: defer.Deferred[None] | None = None
        self._owner = os.getpid()
        self._certificates = certificates(hostname) if tls != "none" else None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SMTPTestServer:
        """Start listening (on a free port when ``port`` is 0); :class:`OSError`
        when the address cannot be taken (in use, not this machine's)."""
        if self._listening is None:
            check_listen_host(self.host, self.allow_non_loopback)  # ``host`` may have been changed
            self._owner = os.getpid()
            self._listening = _reactor.run(self._listen, timeout=30)
            self.port = int(self._listening.getHost().port)
        return self

    def _listen(self, reactor: Any) -> Any:
        factory: Any = _SessionFactory(self)
        if self.tls == "implicit":
            factory = TLSMemoryBIOFactory(self._server_tls_options, False, factory)
        try:
            return reactor.listenTCP(self.port, factory, interface=self.host)
        except CannotListenError as error:  # no Twisted type for the caller
            reason = error.socketError
            raise OSError(getattr(reason, "errno", None),
                          f"cannot listen on {self.host}:{self.port}: {reason}") from None

    def stop(self, grace: float = 0.0) -> None:
        """Stop listening and drop every open connection; safe to call twice.

        With ``grace``, connections still open first get up to that many
        seconds to end by themselves (so that a reply already on its way, such
        as the 250 for a message, reaches the client); the rest are dropped.
        In a forked child it does nothing: the server belongs to the parent.
        """
        if self._listening is None or os.getpid() != self._owner:
            return
        listening, self._listening = self._listening, None
        _reactor.run(self._shutdown, listening, grace, timeout=30 + grace)

    def _shutdown(self, reactor: Any, listening: Any, grace: float = 0.0) -> Any:
        stopped = defer.maybeDeferred(listening.stopListening)
        with self._lock:
            open_sessions = bool(self._sessions)
        if grace <= 0 or not open_sessions:
            self._abort_sessions()
            return stopped
        drained: defer.Deferred[None] = defer.Deferred()
        self._drained = drained

        def give_up() -> None:
            self._abort_sessions()
            if not drained.called:
                drained.callback(None)

        timer = reactor.callLater(grace, give_up)
        drained.addBoth(lambda _: timer.cancel() if timer.active() else None)
        return defer.gatherResults([stopped, drained])

    def _abort_sessions(self) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            if session.transport is not None:
                session.transport.abortConnection()

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what the client uses ------------------------------------------------------------------

    @property
    def ca_file(self) -> str | None:
        """Path of a PEM file with the CA that signed the server certificate."""
        return self._certificates.ca_file if self._certificates else None

    @property
    def client_cert_file(self) -> str | None:
        """A client certificate (PEM) signed by the server's CA, for ``Policy(client_cert=)``."""
        return self._certificates.client_cert_file if self._certificates else None

    @property
    def client_key_file(self) -> str | None:
        """The key of :attr:`client_cert_file` (PEM), for ``Policy(client_key=)``."""
        return self._certificates.client_key_file if self._certificates else None

    @property
    def ca_pem(self) -> bytes | None:
        """The CA certificate as PEM bytes."""
        return self._certificates.ca_pem if self._certificates else None

    def policy(self, **overrides: Any) -> Policy:
        """A :class:`~syncsmtp.Policy` for this server (trusting its CA, with the
        credentials of its only user when it has exactly one), with ``overrides``."""
        options: dict[str, Any] = {"host": self.host, "port": self.port, "tls": self.tls}
        if self.ca_file:
            options["ca_file"] = self.ca_file
        if len(self.users) == 1 and self.tls != "none":
            ((options["username"], options["password"]),) = self.users.items()
        options.update(overrides)
        return Policy(**options)

    @functools.cached_property
    def _server_tls_options(self) -> Any:
        assert self._certificates is not None
        pem = self._certificates.server_cert_pem + self._certificates.server_key_pem
        authorities = [ssl.Certificate.loadPEM(self._certificates.ca_pem)] \
            if self.require_client_certificate else []
        # With authorities, the handshake requires a client certificate they signed.
        return ssl.PrivateCertificate.loadPEM(pem).options(*authorities)

    # -- what the test inspects ------------------------------------------------------------------

    @property
    def outbox(self) -> list[ReceivedMessage]:
        """The messages accepted so far, oldest first (a copy)."""
        with self._lock:
            return list(self._outbox)

    @property
    def commands(self) -> list[list[bytes]]:
        """Per connection, the command lines received (AUTH payloads too)."""
        with self._lock:
            return [list(lines) for lines in self._commands]

    @property
    def connections(self) -> int:
        """How many connections were accepted."""
        with self._lock:
            return len(self._commands)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until the outbox holds ``count`` messages; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._outbox) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"the test server received {len(self._outbox)} messages, not {count}, "
                        f"within {timeout} s"
                    )
                self._lock.wait(remaining)
            return list(self._outbox)

    def clear(self) -> None:
        """Forget received messages, recorded commands and faults."""
        with self._lock:
            self._outbox.clear()
            self._commands.clear()
        self.clear_faults()

    # -- scripting faults ----------------------------------------------------------------------------

    def _set(self, stage: str, fault: _Fault) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        with self._script.lock:
            self._script.faults[stage] = fault

    def fail(self, stage: str, code: int, text: str, *, times: int | None = None) -> None:
        """Answer ``stage`` with this reply (``times``: only the next N times)."""
        self._set(stage, _Fault("fail", code, text, times))

    def drop(self, stage: str, *, times: int | None = None) -> None:
        """Close the connection abruptly at ``stage`` (after recording the message,
        for ``"end-of-data"``); ``times``: only the next N times."""
        self._set(stage, _Fault("drop", remaining=times))

    def stall(self, stage: str) -> None:
        """Never answer ``stage`` (``"tls-handshake"``: answer STARTTLS, then never start TLS)."""
        if stage == "tls-handshake":
            with self._script.lock:
                self._script.faults[stage] = _Fault("stall")
            return
        self._set(stage, _Fault("stall"))

    def refuse_recipient(self, address: str, code: int = 550, text: str = "5.1.1 No such user") -> None:
        """Answer RCPT TO for ``address`` with this reply."""
        with self._script.lock:
            self._script.refused[address.lower()] = (code, text)

    def inject_after_starttls(self, data: bytes) -> None:
        """Send ``data`` in the same write as the 220 reply to STARTTLS, before TLS."""
        with self._script.lock:
            self._script.injection = data

    def malformed_auth_challenge(self) -> None:
        """Answer AUTH LOGIN / CRAM-MD5 with a challenge that is not base64."""
        with self._script.lock:
            self._script.malformed_challenge = True

    def clear_faults(self) -> None:
        """Remove every scripted fault and refusal."""
        with self._script.lock:
            self._script.faults.clear()
            self._script.refused.clear()
            self._script.injection = b""
            self._script.malformed_challenge = False

    # -- called in the reactor thread --------------------------------------------------------------

    def _size_limit(self) -> int:
        for keyword in self.extensions:
            name, _, value = keyword.partition(" ")
            if name.upper() == "SIZE" and value.isdigit():
                return int(value)
        return 0

    def _connection_opened(self, session: _Session, commands: list[bytes]) -> None:
        with self._lock:
            self._sessions.add(session)
            self._commands.append(commands)

    def _connection_closed(self, session: _Session) -> None:
        with self._lock:
            self._sessions.discard(session)
            drained = self._drained if not self._sessions else None
        if drained is not None and not drained.called:
            drained.callback(None)

    def _record_command(self, commands: list[bytes], line: bytes) -> None:
        with self._lock:
            commands.append(line)

    def _deliver(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._outbox.append(message)
            self._lock.notify_all()
        if self.on_message is not None:
            try:
                self.on_message(message)
            except Exception:
                # The message was accepted all the same; the callback's bug goes to Twisted's log.
                log.err(None, "SMTPTestServer on_message callback failed")
