"""pytest fixtures for syncsmtp's test server (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import SMTPTestServer

__all__ = ["smtp_server", "smtp_server_factory"]


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPTestServer]]:
    """A callable that starts an :class:`SMTPTestServer` with the given options;
    every server it started is stopped after the test."""
    started: list[SMTPTestServer] = []

    def start(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(**options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    """A started server with STARTTLS and one user, ``user`` / ``password``;
    ``smtp_server.policy()`` trusts its certificate and logs in as that user."""
    return smtp_server_factory(tls="starttls", users={"user": "password"})
