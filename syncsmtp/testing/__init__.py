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
    from ._received import ReceivedMessage
    from ._script import STAGES
    from ._server import SMTPTestServer

__all__ = ["STAGES", "ReceivedMessage", "SMTPTestServer"]

# Where each public name lives: only SMTPTestServer's module loads Twisted.
_MODULES = {"STAGES": "_script", "ReceivedMessage": "_received", "SMTPTestServer": "_server"}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
