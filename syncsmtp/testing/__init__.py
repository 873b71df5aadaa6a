"""A real SMTP server for tests: syncsmtp's own, and its users'.

``SMTPTestServer`` is Twisted's ESMTP server on loopback, with STARTTLS (a
certificate from a CA generated for the process), AUTH PLAIN, LOGIN and
CRAM-MD5, scripted refusals and faults at every stage, and an outbox of
exactly what it received. The pytest plugin (installed with syncsmtp) gives
the fixtures ``smtp_server`` and ``smtp_server_factory``.

Importing this package loads no Twisted; starting a server does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._server import STAGES, ReceivedMessage, SMTPTestServer

__all__ = ["STAGES", "ReceivedMessage", "SMTPTestServer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _server

        return getattr(_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
