"""Opening a session's connection, and a one-shot send from connect to QUIT
(reactor side).

``SMTPSenderFactory`` (Twisted's stock client) reconnects after a lost
connection and sends DATA again, which after the final dot is a duplicate
delivery. Here one connection is made; a loss is reported, with
``maybe_delivered``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from .._tls import client_tls_options
from ..errors import SMTPError
from ..message import Envelope
from ..policy import Policy
from ..result import SendResult
from . import failures
from .progress import Progress
from .session import SMTPClientProtocol

__all__ = ["connect_timeout", "deliver", "dial_address", "open_session"]

connect_timeout = failures.connect_timeout


class _OneShotFactory(protocol.ClientFactory):
    """Hands out the one protocol of a session, and never reconnects."""

    noisy = False

    def __init__(self, client: SMTPClientProtocol, failed: Callable[[Failure], None]) -> None:
        self._client: SMTPClientProtocol | None = client
        self._failed: Callable[[Failure], None] | None = failed

    def buildProtocol(self, addr: Any) -> SMTPClientProtocol:  # noqa: N802
        client = self._client
        assert client is not None  # one connection, one protocol
        client.factory = self
        # The session points here (and a TLS layer's factory wraps this one):
        # nothing here may point back at it, and a connection made cannot fail.
        self._client = self._failed = None
        return client

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:  # noqa: N802
        if self._failed is not None:
            self._failed(reason)


#: How long the address a host name led to is used again without resolving
#: the name (libcurl keeps the addresses it resolved for 60 s too).
KNOWN_ADDRESS_SECONDS = 60.0
#: At most this many names are remembered (all are forgotten beyond it).
KNOWN_ADDRESS_LIMIT = 256


class KnownAddresses:
    """The address each (host name, port) connected to, for a while (reactor
    thread only).

    Twisted resolves a name in its thread pool, a thread hop each way, and
    then races the addresses it found (RFC 8305): a fresh send to
    ``localhost`` took about 0.7 ms more than one to ``127.0.0.1``. A name
    sent to again soon connects straight to the address that answered last
    time; if that fails, the name is resolved again at once. The address is
    not kept longer for being used: a name is resolved again at least every
    :data:`KNOWN_ADDRESS_SECONDS`, so a change in DNS is seen within that."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int], tuple[str, float]] = {}

    def peek(self, host: str, port: int, now: float) -> str | None:
        """Like :meth:`get`, but changes nothing (safe from another thread)."""
        found = self._known.get((host, port))
        return found[0] if found is not None and found[1] > now else None

    def get(self, host: str, port: int, now: float) -> str | None:
        """The address ``host`` reached lately, forgetting one kept too long."""
        address = self.peek(host, port, now)
        if address is None:
            self._known.pop((host, port), None)
        return address

    def remember(self, host: str, port: int, address: str, now: float) -> None:
        if len(self._known) >= KNOWN_ADDRESS_LIMIT:
            self._known.clear()
        self._known[(host, port)] = (address, now + KNOWN_ADDRESS_SECONDS)

    def forget(self, host: str, port: int) -> None:
        self._known.pop((host, port), None)


known_addresses = KnownAddresses()


class _Passing(protocol.ClientFactory):
    """Hands the connection to ``factory``; says when it was made (with the
    address reached) or could not be."""

    noisy = False

    def __init__(self, factory: Any, made: Callable[[Any], None], failed: Callable[[Failure], None]) -> None:
        self._factory = factory
        self._made = made
        self._failed = failed

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802
        self._made(addr)
        return self._factory.buildProtocol(addr)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:  # noqa: N802
        self._failed(reason)


def dial_address(policy: Policy, now: float) -> str | None:
    """The address a connection for ``policy`` may be made to straight away,
    outside the reactor (:mod:`syncsmtp._dial`): the host itself when it is
    an IP address, else the one its name reached lately; None when the name
    must be resolved first. Read-only, so any thread may ask."""
    host = policy.host
    if isIPAddress(host) or isIPv6Address(host):
        return host
    return known_addresses.peek(host, policy.effective_port, now)


class Connection:
    """Opens the TCP (and, for implicit TLS, TLS) connection of one session,
    or adopts one made already (``dialled``, see :mod:`syncsmtp._dial`)."""

    def __init__(self, reactor: Any, policy: Policy, factory: Any, timeout: float,
                 dialled: socket.socket | None = None) -> None:
        self._connector: Any = None
        self._resolving: defer.Deferred[Any] | None = None
        self._cancelled = False
        self._reactor, self._factory, self._timeout = reactor, factory, timeout
        host, port = policy.host, policy.effective_port
        if dialled is not None:
            with dialled:  # the reactor works on its own copy of the socket
                adopt = getattr(reactor, "adoptStreamConnection", None)
                if adopt is not None:
                    try:
                        adopt(dialled.fileno(), dialled.family, factory)
                        return
                    except OSError:  # the peer hung up meanwhile: connect afresh
                        pass
        if isIPAddress(host) or isIPv6Address(host):
            # No resolver for an IP literal: HostnameEndpoint would still hand it to
            # getaddrinfo in the thread pool, a thread hop and several loop turns.
            self._connector = reactor.connectTCP(host, port, factory, timeout=timeout)
            return
        address = known_addresses.get(host, port, reactor.seconds())
        if address is None:
            self._resolve(host, port)
            return

        def stale(reason: Failure) -> None:
            known_addresses.forget(host, port)
            if not self._cancelled:
                self._resolve(host, port)

        self._connector = reactor.connectTCP(
            address, port, _Passing(factory, lambda addr: None, stale), timeout=timeout)

    def _resolve(self, host: str, port: int) -> None:
        reactor, factory = self._reactor, self._factory

        def reached(addr: Any) -> None:
            known_addresses.remember(host, port, addr.host, reactor.seconds())

        endpoint = HostnameEndpoint(reactor, host, port, timeout=self._timeout)
        passing: Any = _Passing(factory, reached, factory.clientConnectionFailed)
        self._resolving = endpoint.connect(passing)
        self._resolving.addErrback(lambda reason: factory.clientConnectionFailed(None, reason))

    def cancel(self) -> None:
        """Stop connecting, if it still is (an open connection is the protocol's to drop)."""
        self._cancelled = True
        if self._resolving is not None and not self._resolving.called:
            self._resolving.cancel()
        if self._connector is not None and self._connector.state == "connecting":
            self._connector.stopConnecting()


def open_session(
    reactor: Any, policy: Policy, progress: Progress, timeout: float,
    dialled: socket.socket | None = None,
) -> tuple[SMTPClientProtocol, Connection]:
    """Start connecting a session (reactor thread), or start it on the
    connected socket ``dialled``. Its ``ready`` fires when it can take a
    message, or fails (a connect failure included). Raises an
    :class:`SMTPError` when the policy's TLS files cannot be used."""
    tls_options = client_tls_options(policy) if policy.tls != "none" else None
    session = SMTPClientProtocol(reactor, policy, tls_options, progress)

    def connect_failed(reason: Failure) -> None:
        if not session.ready.called:
            session.ready.errback(Failure(failures.cannot_connect(policy, reason.getErrorMessage())))

    factory: Any = _OneShotFactory(session, connect_failed)
    if policy.tls == "implicit":
        assert tls_options is not None
        factory = TLSMemoryBIOFactory(tls_options, True, factory)
    return session, Connection(reactor, policy, factory, timeout, dialled)


def deliver(
    reactor: Any, policy: Policy, envelope: Envelope, timeout: float, progress: Progress,
    dialled: socket.socket | None = None,
) -> defer.Deferred[SendResult]:
    """Connect (or take the connected socket ``dialled``), send ``envelope``
    as ``policy`` says, QUIT, and fire with the outcome.

    Runs in the reactor thread. The returned Deferred fires with a
    :class:`SendResult` or fails with an :class:`SMTPError`; cancelling it drops
    the connection. ``timeout`` bounds everything from connect to the final
    reply.
    """
    session: SMTPClientProtocol | None = None
    connection: Connection | None = None

    def cancel(_: defer.Deferred[SendResult]) -> None:
        if connection is not None:
            connection.cancel()
        if session is not None:
            session.abort()

    done: defer.Deferred[SendResult] = defer.Deferred(cancel)
    try:
        session, connection = open_session(reactor, policy, progress, timeout, dialled)
    except SMTPError as error:
        if dialled is not None:
            dialled.close()
        done.errback(Failure(error))
        return done

    def setup_failed(reason: Failure) -> None:
        if not done.called:
            done.errback(reason)

    # The session sends it as soon as set-up allows (with AUTH, when it can).
    session.first = (envelope, progress, done, True)
    session.ready.addErrback(setup_failed)

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
