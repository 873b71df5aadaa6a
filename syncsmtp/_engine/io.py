"""A session's bytes in and out: commands and data written at once to an idle
connection, and what the replies of one read make the session write held
back and written together when they are all handled."""

from __future__ import annotations

from typing import Any

from twisted.mail import smtp

from .. import _twisted
from .idle import IdleWatch
from .transcript import Transcript

__all__ = ["SessionIO"]


class SessionIO(_twisted.ESMTPClient):
    """Reading and writing for :class:`~syncsmtp._engine.base.SessionBase`."""

    transport: Any
    conversation: Transcript
    _reading: bool
    _idle_watch: IdleWatch | None
    #: Bytes written while a read is handled, written together at its end.
    _held: list[bytes] | None = None

    def makeConnection(self, transport: Any) -> None:  # noqa: N802
        if self._idle_watch is not None:
            self._idle_watch.start()
        smtp.ESMTPClient.makeConnection(self, transport)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._idle_watch is not None:
            self._idle_watch.touch()
        # What the replies of one read make the session write leaves in one
        # write when they are all handled: one system call and one segment
        # for, say, one message's data and the next message's commands.
        self._held = []
        try:
            smtp.ESMTPClient.dataReceived(self, data)
        finally:
            self.flush_held()
            self._held = None

    def flush_held(self) -> None:
        """Write what :meth:`write` held back while handling a read, now (before
        anything that writes to the transport itself: TLS, a data producer)."""
        held = self._held
        if held:
            self._held = []
            if self._reading:
                _twisted.write_at_once(self.transport, b"".join(held))

    def sendLine(self, line: bytes) -> None:  # noqa: N802
        # Set-up commands (EHLO, STARTTLS, AUTH steps): what LineReceiver.sendLine
        # writes, through write_at_once like the transactions' commands.
        if self._reading:
            self.conversation.sent(line)
            self.write(line + self.delimiter)

    def write(self, data: bytes) -> None:
        """Write commands or message data (already noted in the transcript)."""
        if self._reading:
            self.data_moved()
            if self._held is not None:
                self._held.append(data)
            else:
                _twisted.write_at_once(self.transport, data)

    def data_moved(self) -> None:
        """Bytes were handed to the connection, or it took some of a large
        message's: the idle limit counts from now."""
        if self._idle_watch is not None:
            self._idle_watch.touch()

    def more_to_read(self) -> bool:
        """Whether bytes came after the reply being handled, in the same read."""
        return bool(_twisted.unread(self))
