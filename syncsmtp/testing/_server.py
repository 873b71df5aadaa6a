"""The test SMTP server: Twisted's ESMTP with scripted faults, in the reactor thread."""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, cast

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOFactory

from .. import _reactor
from ..policy import Policy
from ._addresses import check_listen_host
from ._certs import certificates
from ._core import ServerCore, SessionSettings
from ._delivery import CHALLENGERS
from ._oauth2 import OAUTH2_MECHANISMS
from ._received import ReceivedMessage
from ._script import STAGES, FaultScripting
from ._session import SessionFactory
from ._tls import ServerTLS

__all__ = ["STAGES", "ReceivedMessage", "SMTPTestServer"]

_Server = TypeVar("_Server", bound="SMTPTestServer")


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

    The options are keyword arguments only, and stay attributes of the same
    names: each connection works with the values they have when it opens.

    ``host`` must be a loopback address (127.0.0.0/8, ``::1`` or
    ``localhost``; :class:`ValueError` otherwise, also from :meth:`start`):
    the server takes any mail, so listening where other hosts reach it
    (``"0.0.0.0"``, ``"::"``, a LAN address) needs ``allow_non_loopback=True``.
    MAIL FROM and RCPT TO with a control character in the address (a CR or
    LF inside a quoted local part, say) are refused with ``501``.

    With ``"CHUNKING"`` among ``extensions`` it also takes messages by BDAT
    (RFC 3030), chunk octets read raw; not by default, so that clients keep
    using DATA with it unless a test asks. With ``"DSN"`` it takes RET and
    ENVID on MAIL FROM and NOTIFY and ORCPT on RCPT TO (RFC 3461); with
    ``"REQUIRETLS"`` (announced once the connection is encrypted, RFC 8689)
    the REQUIRETLS parameter. Without them, those parameters are refused with
    ``555``; malformed, with ``501``. :class:`ReceivedMessage` records every
    parameter as it came (``mail_options``, ``rcpt_options``).

    ``oauth2_tokens`` maps user names to the OAuth2 bearer token valid for
    each now; with it, OAUTHBEARER and XOAUTH2 are offered too (unless
    ``auth_mechanisms`` names one of them: then exactly those listed). A token
    that is not the user's current one is refused the way RFC 7628 says: a
    ``334`` failure challenge with a JSON status, then ``535`` after the
    client's answer. Change ``server.oauth2_tokens[user]`` to expire a token:
    the change applies at once, also on connections already open.
    """

    def __init__(
        self,
        *,
        tls: Literal["starttls", "implicit", "none"] = "starttls",
        users: Mapping[str, str] | None = None,
        oauth2_tokens: Mapping[str, str] | None = None,
        auth_mechanisms: Sequence[str] = ("PLAIN", "LOGIN", "CRAM-MD5"),
        auth_requires_tls: bool = True,
        require_auth: bool = False,
        extensions: Sequence[str] = ("8BITMIME", "SIZE 52428800"),
        ehlo: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "localhost",
        require_client_certificate: bool = False,
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
        self.oauth2_tokens = dict(oauth2_tokens or {})
        self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self.auth_requires_tls = auth_requires_tls
        self.require_auth = require_auth
        self.extensions = tuple(extensions)
        self.ehlo = ehlo
        self.host = host
        self.port = port
        self.hostname = hostname
        self.require_client_certificate = require_client_certificate
        self.allow_non_loopback = allow_non_loopback
        # AUTH for any user name and password: only syncsmtp serve's sink turns it on.
        self._accept_any_credentials = False
        # All that the sessions share with the server (FaultScripting writes the script).
        self._core = ServerCore(self._session_settings)
        self._script = self._core.script
        self._listening: Any = None
        self._owner = os.getpid()
        self._certificates = certificates(hostname) if tls != "none" else None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self: _Server) -> _Server:
        """Start listening (on a free port when ``port`` is 0); :class:`OSError`
        when the address cannot be taken (in use, not this machine's)."""
        if self._listening is None:
            check_listen_host(self.host, self.allow_non_loopback)  # ``host`` may have been changed
            self._owner = os.getpid()
            self._listening = _reactor.run(self._listen, timeout=30)
            self.port = int(self._listening.getHost().port)
        return self

    def _listen(self, reactor: Any) -> Any:
        factory: Any = SessionFactory(self._core)
        if self.tls == "implicit":
            # (mypy does not see zope's @implementer)
            creator = cast(IOpenSSLServerConnectionCreator, self._server_tls)
            factory = TLSMemoryBIOFactory(creator, False, factory)
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
        drained: defer.Deferred[None] = defer.Deferred()

        def done() -> None:
            if not drained.called:
                drained.callback(None)

        if grace <= 0 or not self._core.when_drained(done):
            self._core.abort_all()
            return stopped

        def give_up() -> None:
            self._core.when_drained(None)
            self._core.abort_all()
            done()

        timer = reactor.callLater(grace, give_up)
        drained.addBoth(lambda _: timer.cancel() if timer.active() else None)
        return defer.gatherResults([stopped, drained])

    def __enter__(self: _Server) -> _Server:
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
        elif len(self.oauth2_tokens) == 1 and self.tls != "none":
            ((options["username"], options["oauth2_token"]),) = self.oauth2_tokens.items()
        options.update(overrides)
        return Policy(**options)

    @functools.cached_property
    def _server_tls(self) -> ServerTLS:
        assert self._certificates is not None
        return ServerTLS(self._certificates, require_client_certificate=self.require_client_certificate)

    def _session_settings(self) -> SessionSettings:
        """What a connection opening now works with (the core asks, in the reactor thread)."""
        return SessionSettings(
            tls=self.tls,
            hostname=self.hostname,
            users=dict(self.users),
            auth_mechanisms=self.auth_mechanisms if not self.oauth2_tokens
            or set(self.auth_mechanisms) & set(OAUTH2_MECHANISMS)
            else self.auth_mechanisms + OAUTH2_MECHANISMS,
            auth_requires_tls=self.auth_requires_tls,
            require_auth=self.require_auth,
            extensions=self.extensions,
            ehlo=self.ehlo,
            accept_any_credentials=self._accept_any_credentials,
            tls_creator=self._server_tls if self.tls != "none" else None,
            oauth2_check=self._oauth2_token_valid if self.oauth2_tokens else None,
        )

    def _oauth2_token_valid(self, user: str, token: str) -> bool:
        # Read when the exchange reads the token: a change by the test applies at once.
        current = self.oauth2_tokens.get(user)
        return current is not None and hmac.compare_digest(current.encode(), token.encode())

    # -- what the test inspects ------------------------------------------------------------------

    @property
    def outbox(self) -> list[ReceivedMessage]:
        """The messages accepted so far, oldest first (a copy)."""
        return self._core.outbox()

    @property
    def commands(self) -> list[list[bytes]]:
        """Per connection, the command lines received (AUTH payloads too)."""
        return self._core.commands()

    @property
    def connections(self) -> int:
        """How many connections were accepted."""
        return self._core.connections()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until the outbox holds ``count`` messages; AssertionError after ``timeout``."""
        return self._core.wait_for(count, timeout)

    def clear(self) -> None:
        """Forget received messages, recorded commands and faults."""
        self._core.forget()
        self.clear_faults()
