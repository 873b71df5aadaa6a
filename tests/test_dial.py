"""A one-shot send connects in the caller's thread when it knows the server's
address, and the reactor adopts the socket; whatever cannot be connected
there is tried by the reactor, with the errors it has always given."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import syncsmtp
from syncsmtp import _dial
from syncsmtp._engine import connect
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"


def _send(policy: syncsmtp.Policy, timeout: float = 10) -> syncsmtp.SendResult:
    return syncsmtp.send(MESSAGE, policy, timeout=timeout, sender="a@example.com",
                         recipients=["b@example.com"])


Dials = list[tuple[str, int, str]]


@pytest.fixture
def dials(monkeypatch: pytest.MonkeyPatch) -> Dials:
    """Each dial from the caller's thread: the address, the thread, and what
    came of it ("connected", "failed" or "timed out")."""
    made: Dials = []
    dial = _dial.dial

    def recording(address: str, port: int, timeout: float) -> socket.socket | None:
        try:
            sock = dial(address, port, timeout)
        except TimeoutError:
            made.append((address, threading.get_ident(), "timed out"))
            raise
        made.append((address, threading.get_ident(), "connected" if sock is not None else "failed"))
        return sock

    monkeypatch.setattr(_dial, "dial", recording)
    return made


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_a_send_to_an_address_connects_in_the_caller_s_thread(
    smtp_server_factory: ServerFactory, dials: Dials, tls: str
) -> None:
    server = smtp_server_factory(tls=tls)
    result = _send(server.policy())
    assert dials == [("127.0.0.1", threading.get_ident(), "connected")]
    assert server.connections == 1 and len(server.outbox) == 1
    # STARTTLS on the adopted connection takes the client's side of the handshake.
    assert (result.tls is not None) is (tls != "none")


def test_an_ipv6_address_is_dialled_from_the_caller_too(dials: Dials) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with SMTPTestServer(tls="starttls", host="::1") as server:
        policy = server.policy()
        assert policy.host == "::1"
        result = _send(policy)
        assert result.tls is not None and len(server.outbox) == 1
    assert dials == [("::1", threading.get_ident(), "connected")]


def test_a_name_is_dialled_from_the_caller_once_the_reactor_has_reached_it(
    smtp_server_factory: ServerFactory, dials: Dials
) -> None:
    server = smtp_server_factory(tls="none")
    connect.known_addresses.forget("localhost", server.port)
    policy = syncsmtp.Policy(host="localhost", port=server.port, tls="none")
    _send(policy)
    assert dials == []  # resolved and connected by the reactor
    _send(policy)
    assert dials == [("127.0.0.1", threading.get_ident(), "connected")]
    assert len(server.outbox) == 2 and server.connections == 2


def test_a_refused_connection_is_tried_by_the_reactor_and_refused_as_before(
    dials: Dials
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = syncsmtp.Policy(host="127.0.0.1", port=port, tls="none")
    with pytest.raises(syncsmtp.ConnectError) as by_send:
        _send(policy)
    assert dials == [("127.0.0.1", threading.get_ident(), "failed")]
    with syncsmtp.Mailer(policy) as mailer, pytest.raises(syncsmtp.ConnectError) as by_mailer:
        mailer.send(MESSAGE, timeout=10, sender="a@example.com", recipients=["b@example.com"])
    assert len(dials) == 1  # a Mailer's connections are the reactor's
    assert by_send.value.message == by_mailer.value.message
    assert by_send.value.stage == by_mailer.value.stage == "connect"


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A port whose accept queue is full: a connection to it is never made."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=5)
    try:
        yield int(listener.getsockname()[1])
    finally:
        filler.close()
        listener.close()


def test_a_connection_that_is_never_made_times_out_at_the_deadline(
    full_listener: int, dials: Dials
) -> None:
    policy = syncsmtp.Policy(host="127.0.0.1", port=full_listener, tls="none")
    started = time.monotonic()
    with pytest.raises(syncsmtp.SendTimeout) as caught:
        _send(policy, timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 3.0
    assert caught.value.stage == "connect" and not caught.value.maybe_delivered
    assert "could not connect" in caught.value.message
    assert dials == [("127.0.0.1", threading.get_ident(), "timed out")]  # and not tried again


def test_ctrl_c_while_the_caller_connects_closes_the_socket_and_stops_the_send(
    full_listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    opened: list[socket.socket] = []
    real_socket = socket.socket

    def recording(*args: Any, **kwargs: Any) -> socket.socket:
        sock = real_socket(*args, **kwargs)
        opened.append(sock)
        return sock

    monkeypatch.setattr(_dial.socket, "socket", recording)
    main = threading.get_ident()
    timer = threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            _send(syncsmtp.Policy(host="127.0.0.1", port=full_listener, tls="none"), timeout=20)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    assert len(opened) == 1 and opened[0].fileno() == -1  # closed


def test_a_socket_the_reactor_cannot_adopt_is_closed_and_connected_afresh(
    smtp_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server_factory(tls="none")
    given: list[socket.socket] = []
    dial = _dial.dial

    def keeping(address: str, port: int, timeout: float) -> socket.socket | None:
        sock = dial(address, port, timeout)
        assert sock is not None
        given.append(sock)
        return sock

    def refusing(*args: Any) -> None:
        raise OSError("gone")

    from twisted.internet import reactor

    monkeypatch.setattr(_dial, "dial", keeping)
    monkeypatch.setattr(reactor, "adoptStreamConnection", refusing, raising=False)
    _send(server.policy())
    assert len(given) == 1 and given[0].fileno() == -1  # closed
    assert len(server.outbox) == 1
