"""The Twisted internals that syncsmtp._twisted relies on, checked against the
installed Twisted over real connections: an upgrade that moves them fails here."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from loopback import serving
from twisted.protocols.tls import TLSMemoryBIOProtocol

import syncsmtp
from syncsmtp import _reactor, _twisted
from syncsmtp._engine import SMTPClientProtocol
from syncsmtp._twisted import acknowledge_reads_at_once, tcp_socket, tls_reader, write_at_once
from syncsmtp.testing import SMTPTestServer


def _message() -> bytes:
    return b"From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_the_tls_reader_and_socket_are_found_and_the_hook_comes_off(
    smtp_server_factory: Any, monkeypatch: pytest.MonkeyPatch, tls: str
) -> None:
    server: SMTPTestServer = smtp_server_factory(tls=tls)
    seen: list[tuple[Any, Any, bool]] = []
    original = SMTPClientProtocol.esmtpState_serverConfig

    def spy(self: SMTPClientProtocol, code: int, resp: bytes) -> None:
        if self._tlsMode or tls == "implicit":
            reader = tls_reader(self.transport)
            hooked = "dataReceived" in reader.__dict__
            seen.append((reader, tcp_socket(self.transport), hooked))
        original(self, code, resp)
        if seen:
            assert "dataReceived" not in seen[-1][0].__dict__  # taken off after the first reply

    monkeypatch.setattr(SMTPClientProtocol, "esmtpState_serverConfig", spy)
    syncsmtp.send(_message(), server.policy(), timeout=10, sender="a@example.com",
                  recipients=["b@example.com"])
    assert seen, "no EHLO reply after TLS"
    reader, handle, hooked = seen[-1]
    assert isinstance(reader, TLSMemoryBIOProtocol)
    assert isinstance(handle, socket.socket)
    assert hooked == hasattr(socket, "TCP_QUICKACK")


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_the_tls_layer_s_records_go_straight_to_the_socket(
    smtp_server_factory: Any, monkeypatch: pytest.MonkeyPatch, tls: str
) -> None:
    from twisted.internet import tcp

    server: SMTPTestServer = smtp_server_factory(tls=tls)
    sends: list[tuple[Any, int]] = []
    original = _twisted._send_when_idle

    def spy(connection: Any, data: bytes, queue: Any) -> None:
        # The hook is module-wide: a connection an earlier test left closing in
        # this process may write through it too, so only this server's count.
        if connection.getPeer().port == server.port:
            sends.append((connection, len(data)))
        original(connection, data, queue)

    monkeypatch.setattr(_twisted, "_send_when_idle", spy)
    result = syncsmtp.send(_message(), server.policy(), timeout=10, sender="a@example.com",
                           recipients=["b@example.com"])
    assert result.tls is not None
    # The layer's records (the handshake's, EHLO, MAIL, the data, QUIT) came
    # through the hook, on the TCP connection itself.
    assert len(sends) >= 4, sends
    assert all(isinstance(connection, tcp.Connection) for connection, _ in sends)
    assert len({id(connection) for connection, _ in sends}) == 1


def test_a_tls_hook_is_not_put_on_twice_nor_on_anything_else() -> None:
    class Layer:
        def write(self, data: bytes) -> None:
            pass

    class Reader:
        transport = Layer()

    _twisted.tls_writes_at_once(Reader())  # not over TCP: left alone
    assert "write" not in vars(Reader.transport)


def test_without_a_socket_nothing_is_hooked() -> None:
    class Bare:
        pass

    stop = acknowledge_reads_at_once(Bare())
    stop()
    assert tcp_socket(Bare()) is None



def _received_over_tcp(steps: Any) -> tuple[list[Any], bytes]:
    """Connect a bare Twisted TCP client to a loopback peer, run
    ``steps(transport)`` in the reactor thread, and return what ``steps``
    noted and every byte the peer received before the client closed."""
    from twisted.internet import defer, protocol

    received: list[bytes] = []

    def peer(connection: socket.socket) -> None:
        connection.settimeout(5)
        while chunk := connection.recv(65536):
            received.append(chunk)

    def connect_and_run(reactor: Any, port: int) -> defer.Deferred[list[Any]]:
        connected = protocol.ClientCreator(reactor, protocol.Protocol).connectTCP("127.0.0.1", port)

        def run_steps(client: protocol.Protocol) -> list[Any]:
            noted = steps(client.transport)
            client.transport.loseConnection()
            return noted

        return connected.addCallback(run_steps)

    with serving(peer, connections=1) as port:
        noted = _reactor.run(connect_and_run, port, timeout=10)
    return noted, b"".join(received)


def test_a_write_to_an_idle_tcp_connection_goes_to_the_socket_at_once() -> None:
    def steps(transport: Any) -> list[Any]:
        assert transport.TLS is False and not transport._tempDataBuffer
        assert len(transport.dataBuffer) == transport.offset
        write_at_once(transport, b"MAIL FROM:<a@example.com>\r\n")
        # Written, not queued: nothing waits for the next loop iteration.
        return [list(transport._tempDataBuffer), transport.dataBuffer[transport.offset:]]

    noted, received = _received_over_tcp(steps)
    assert noted == [[], b""]
    assert received == b"MAIL FROM:<a@example.com>\r\n"


def test_a_write_behind_queued_bytes_is_queued_after_them() -> None:
    def steps(transport: Any) -> list[Any]:
        transport.write(b"first ")  # queued by Twisted, not yet written
        write_at_once(transport, b"second")
        return [list(transport._tempDataBuffer)]

    noted, received = _received_over_tcp(steps)
    assert noted == [[b"first ", b"second"]]
    assert received == b"first second"


def test_a_write_to_anything_but_plain_tcp_takes_twisted_s_path() -> None:
    class Recording:
        TLS = True
        written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

    transport = Recording()
    write_at_once(transport, b"EHLO x\r\n")
    assert transport.written == [b"EHLO x\r\n"]


def test_an_adopted_connection_is_a_server_transport_whose_tls_can_take_the_client_s_side() -> None:
    """``start_client_tls`` relies on ``adoptStreamConnection`` giving a
    ``tcp.Server`` and on its ``startTLS`` taking ``normal`` (False: the TLS
    client on a server transport). The handshake itself is tested through
    real STARTTLS sends in ``test_dial.py``."""
    import inspect

    from twisted.internet import tcp

    assert "normal" in inspect.signature(tcp.Server.startTLS).parameters
    assert tcp.Server._tlsClientDefault is False  # what "normal=False" reverses

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        dialled = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        dialled.setblocking(False)

        def adopt(reactor: Any) -> str:
            from twisted.internet.protocol import Factory, Protocol

            transport = reactor.adoptStreamConnection(dialled.fileno(), dialled.family,
                                                      Factory.forProtocol(Protocol))
            kind = type(transport).__name__
            transport.abortConnection()
            return kind

        try:
            assert _reactor.run(adopt, timeout=10) == "Server"
        finally:
            dialled.close()
            accepted.close()


def test_the_session_s_esmtp_client_is_twisted_s_without_its_attribute_hooks() -> None:
    """``_twisted.ESMTPClient`` holds ESMTPClient's namespace but the two hooks,
    which only warn about the deprecated ``tlsMode``; its methods must not
    reach their class through ``super()``, which would fail on a copy."""
    import inspect

    from twisted.mail import smtp

    original = vars(smtp.ESMTPClient)
    kept = {name: value for name, value in original.items() if name not in _twisted.DROPPED_FROM_ESMTP_CLIENT}
    copy = vars(_twisted.ESMTPClient)
    assert {name: copy.get(name) for name in kept} == kept
    assert _twisted.ESMTPClient.__bases__ == smtp.ESMTPClient.__bases__
    for name in ("__getattr__", "__setattr__"):
        if name in original:
            assert "tlsMode" in inspect.getsource(original[name]), name
    for name, value in original.items():
        code = getattr(value, "__code__", None)
        assert code is None or "__class__" not in code.co_freevars, f"{name} uses super()"
    hooks = [(cls.__name__, name) for cls in SMTPClientProtocol.__mro__ if cls is not object
             for name in ("__getattr__", "__getattribute__", "__setattr__") if name in vars(cls)]
    assert hooks == []
    session = SMTPClientProtocol.__new__(SMTPClientProtocol)
    with pytest.raises(AttributeError):
        session.no_such_attribute  # noqa: B018


def test_the_cycles_release_transport_breaks_are_where_it_looks(
    smtp_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection a Mailer made (through a connector) and then secured
    with STARTTLS carries both cycles ``release_transport`` breaks; once it
    is closed and released, neither is left (``test_sessions_freed.py``
    checks that whole sessions are then freed)."""
    server: SMTPTestServer = smtp_server_factory(tls="starttls")
    seen: list[dict[str, bool]] = []
    release = _twisted.release_transport

    def spy(transport: Any) -> None:
        if transport.getPeer().port != server.port:  # one an earlier test left closing
            release(transport)
            return
        before = {
            "connector": transport.connector.transport is transport,
            "tls methods": all(getattr(vars(transport).get(name), "__self__", None) is not None
                               for name in ("getHandle", "getPeerCertificate")),
        }
        release(transport)
        seen.append(before | {
            "connector released": transport.connector.transport is None,
            "tls methods released": not {"getHandle", "getPeerCertificate"} & set(vars(transport)),
        })

    monkeypatch.setattr(_twisted, "release_transport", spy)
    with syncsmtp.Mailer(server.policy(), connections=1) as mailer:
        mailer.send(_message(), timeout=10, sender="a@example.com", recipients=["b@example.com"])
    assert seen == [{"connector": True, "tls methods": True, "connector released": True,
                     "tls methods released": True}]
