"""Opening a session's connection, and a one-shot send from connect to QUIT
(reactor side).

``SMTPSenderFactory`` (Twisted's stock client) reconnects after a lost
connection and sends DATA again, which after the final dot is a duplicate
delivery. Here one connection is made; a loss is reported, with
``maybe_delivered``.
"""

from __future__ import annotations

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

__all__ = ["connect_timeout", "deliver", "open_session"]

connect_timeout = failures.connect_timeout


class _OneShotFactory(protocol.ClientFactory):
    """Hands out the one protocol of a session, and never reconnects."""

    noisy = False

    def __init__(self, client: SMTPClientProtocol, failed: Callable[[Failure], None]) -> None:
        self._client = client
        self._failed = failed

    def buildProtocol(self, addr: Any) -> SMTPClientProtocol:  # noqa: N802
        self._client.factory = self
        return self._client

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:  # noqa: N802
        self._failed(reason)


class Connection:
    """Opens the TCP (and, for implicit TLS, TLS) connection of one session."""

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
) -> tuple[SMTPClientProtocol, Connection]:
    """Start connecting a session (reactor thread). Its ``ready`` fires when it
    can take a message, or fails (a connect failure included). Raises an
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
    return session, Connection(reactor, policy, factory, timeout)


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
    connection: Connection | None = None

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
