"""A session that is over, and its connection, are freed by reference counting
as soon as nobody holds them: nothing is left for the cycle collector, whose
full passes cost a send's CPU in a process with Twisted loaded."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import syncsmtp
from syncsmtp._engine import SMTPClientProtocol
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"
SENDS = 5


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[weakref.ref[Any]]:
    """Weak references to every client session made, and to its transport."""
    made: list[weakref.ref[Any]] = []
    original = SMTPClientProtocol.connectionMade

    def recording(self: SMTPClientProtocol) -> None:
        made.extend((weakref.ref(self), weakref.ref(self.transport)))
        original(self)

    monkeypatch.setattr(SMTPClientProtocol, "connectionMade", recording)
    return made


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _all_freed(references: list[weakref.ref[Any]], seconds: float = 5.0) -> bool:
    # Sessions close after send() returns (the QUIT's reply comes later).
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(reference() is None for reference in references):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_one_shot_sessions_are_freed_without_the_cycle_collector(
    smtp_server_factory: ServerFactory, sessions: list[weakref.ref[Any]], no_cycle_collector: None,
    tls: str,
) -> None:
    server = smtp_server_factory(tls=tls)
    for _ in range(SENDS):
        syncsmtp.send(MESSAGE, server.policy(), timeout=10, sender="a@example.com",
                      recipients=["b@example.com"])
    assert len(sessions) == 2 * SENDS
    assert _all_freed(sessions), [type(reference()).__name__ for reference in sessions if reference()]


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_a_mailer_s_sessions_are_freed_once_closed(
    smtp_server_factory: ServerFactory, sessions: list[weakref.ref[Any]], no_cycle_collector: None,
    tls: str,
) -> None:
    server = smtp_server_factory(tls=tls)
    with syncsmtp.Mailer(server.policy(), connections=2) as mailer:
        report = mailer.send_many([(MESSAGE, "a@example.com", ["b@example.com"])] * 10, timeout=10)
        assert report.sent == 10
    assert sessions
    assert _all_freed(sessions), [type(reference()).__name__ for reference in sessions if reference()]
