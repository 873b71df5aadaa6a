"""The test server as ``syncsmtp serve`` runs it: a development mail sink.

Two knobs that tests have no use for, kept out of
:class:`~syncsmtp.testing.SMTPTestServer`'s constructor: AUTH that takes any
user name and password (``--auth-any``), and a callback that is handed each
message as it is accepted (the command's queue to its main thread).
"""

# Twisted's log module is not annotated.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python import log

from ._received import ReceivedMessage
from ._server import SMTPTestServer

__all__ = ["SinkServer"]


class SinkServer(SMTPTestServer):
    """An :class:`SMTPTestServer` for ``syncsmtp serve``.

    ``accept_any_credentials`` offers AUTH and takes any user name and
    password, as development mail sinks do. ``on_message`` is called with each
    :class:`ReceivedMessage` as it is accepted, in the reactor thread, after it
    is in the outbox: it must return quickly (hand the message to a queue, say);
    an exception from it goes to Twisted's log, and the message stays accepted.
    The other options are :class:`SMTPTestServer`'s.
    """

    def __init__(
        self,
        *,
        accept_any_credentials: bool = False,
        on_message: Callable[[ReceivedMessage], object] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._accept_any_credentials = accept_any_credentials
        self._on_message = on_message
        if on_message is not None:
            self._core.on_message = self._hand_on

    @property
    def accept_any_credentials(self) -> bool:
        """True when AUTH takes any user name and password."""
        return self._accept_any_credentials

    def _hand_on(self, message: ReceivedMessage) -> None:
        assert self._on_message is not None
        try:
            self._on_message(message)
        except Exception:
            log.err(None, "syncsmtp serve: on_message callback failed")
