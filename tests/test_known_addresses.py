"""A host name sent to again soon connects to the address it led to last
time, without resolving the name in Twisted's thread pool; a stale address
falls back to resolving, and every address is resolved again after a while."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import syncsmtp
from syncsmtp._engine import connect
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]


def _message() -> bytes:
    return b"From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The host names Twisted's HostnameEndpoint was asked to resolve."""
    names: list[str] = []
    endpoint = connect.HostnameEndpoint

    class Counting(endpoint):  # type: ignore[misc,valid-type]
        def __init__(self, reactor: Any, host: str, *args: Any, **kwargs: Any) -> None:
            names.append(host)
            super().__init__(reactor, host, *args, **kwargs)

    monkeypatch.setattr(connect, "HostnameEndpoint", Counting)
    return names


def _send(server: SMTPTestServer) -> syncsmtp.SendResult:
    policy = syncsmtp.Policy(host="localhost", port=server.port, tls="none")
    return syncsmtp.send(_message(), policy, timeout=10, sender="a@example.com", recipients=["b@example.com"])


def test_a_name_sent_to_again_is_not_resolved_again(smtp_server_factory: ServerFactory,
                                                    resolutions: list[str]) -> None:
    server = smtp_server_factory(tls="none")
    for _ in range(3):
        _send(server)
    assert resolutions == ["localhost"]
    assert len(server.outbox) == 3 and server.connections == 3


def test_an_address_that_no_longer_answers_is_resolved_again(smtp_server_factory: ServerFactory,
                                                             resolutions: list[str]) -> None:
    server = smtp_server_factory(tls="none")  # on 127.0.0.1 only
    connect.known_addresses.remember("localhost", server.port, "::1", 1e12)  # far from expiring
    _send(server)
    assert resolutions == ["localhost"]
    assert connect.known_addresses.get("localhost", server.port, 0.0) == "127.0.0.1"
    _send(server)
    assert resolutions == ["localhost"] and len(server.outbox) == 2


def test_names_are_resolved_again_after_a_while(smtp_server_factory: ServerFactory,
                                                resolutions: list[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connect, "KNOWN_ADDRESS_SECONDS", 0.0)
    server = smtp_server_factory(tls="none")
    _send(server)
    _send(server)
    assert resolutions == ["localhost", "localhost"]


def test_the_memory_is_bounded() -> None:
    known = connect.KnownAddresses()
    for port in range(connect.KNOWN_ADDRESS_LIMIT + 10):
        known.remember("mail.example.com", port, "127.0.0.1", 0.0)
    assert len(known._known) <= connect.KNOWN_ADDRESS_LIMIT
    assert known.get("mail.example.com", connect.KNOWN_ADDRESS_LIMIT + 9, 1.0) == "127.0.0.1"
    assert known.get("mail.example.com", connect.KNOWN_ADDRESS_LIMIT + 9,
                     connect.KNOWN_ADDRESS_SECONDS + 1.0) is None
