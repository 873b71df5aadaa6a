"""What the test server hands to tests: the messages it accepted.

Plain data without Twisted, so that code that only reads messages (``syncsmtp
serve``'s mail stores, type hints in tests) loads nothing else.
"""

from __future__ import annotations

import email
import email.message
import email.policy
from dataclasses import dataclass

__all__ = ["ReceivedMessage"]


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted.

    ``data`` is the message as delivered: dot-unstuffing undone, each line
    ending in CRLF as it was delimited on the wire (a bare CR or LF inside a
    line stays visible). ``raw`` is the exact data phase on the wire, stuffing
    and the terminating ``.CRLF`` included.
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    raw: bytes
    mail_options: tuple[str, ...]
    helo: str
    tls: bool
    auth_user: str | None
    client_certificate: str | None = None

    @property
    def message(self) -> email.message.EmailMessage:
        """``data`` parsed with the modern email policy."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed
