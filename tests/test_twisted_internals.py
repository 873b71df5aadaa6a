"""The Twisted internals that syncsmtp._twisted relies on, checked against the
installed Twisted over real connections: an upgrade that moves them fails here."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.protocols.tls import TLSMemoryBIOProtocol

import syncsmtp
from syncsmtp._engine import SMTPClientProtocol
from syncsmtp._twisted import acknowledge_reads_at_once, tcp_socket, tls_reader
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


def test_without_a_socket_nothing_is_hooked() -> None:
    class Bare:
        pass

    stop = acknowledge_reads_at_once(Bare())
    stop()
    assert tcp_socket(Bare()) is None

