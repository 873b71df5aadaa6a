"""The test SMTP server: Twisted's ESMTP with scripted faults, in the reactor thread."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from twisted.internet import defer, ssl
from twisted.internet.error import CannotListenError
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import log

from .. import _reactor
from ..policy import Policy
from ._addresses import check_listen_host
from ._certs import certificates
from ._delivery import CHALLENGERS
from ._received import ReceivedMessage
from ._script import STAGES, FaultScripting, Script
from ._session import Session, SessionFactory

__all__ = ["STAGES", "ReceivedMessage", "SMTPTestServer"]


class SMTPTestServer(FaultScripting):
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

    With ``"CHUNKING"`` among ``extensions`` it also takes messages by BDAT
    (RFC 3030), chunk octets read raw; not by default, so that clients keep
    using DATA with it unless a test asks.
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
        unknown = [m for m in auth_mechanisms if m.upper() not in CHALLENGERS]
        if unknown:
            raise ValueError(f"unknown AUTH mechanisms {unknown}; known: {', '.join(CHALLENGERS)}")
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
        self._script = Script()
        self._lock = threading.Condition()
        self._outbox: list[ReceivedMessage] = []
        self._commands: list[list[bytes]] = []
        self._sessions: set[Session] = set()
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
        factory: Any = SessionFactory(self)
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

    # -- called in the reactor thread --------------------------------------------------------------

    def _size_limit(self) -> int:
        for keyword in self.extensions:
            name, _, value = keyword.partition(" ")
            if name.upper() == "SIZE" and value.isdigit():
                return int(value)
        return 0

    def _announces(self, keyword: str) -> bool:
        return any(k.partition(" ")[0].upper() == keyword for k in self.extensions)

    def _connection_opened(self, session: Session, commands: list[bytes]) -> None:
        with self._lock:
            self._sessions.add(session)
            self._commands.append(commands)

    def _connection_closed(self, session: Session) -> None:
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
