"""What the test server hands to tests: the messages it accepted, and the envelope they came with.

Plain data without Twisted, so that code that only reads messages (``syncsmtp
serve``'s mail stores, type hints in tests) loads nothing else.
"""

from __future__ import annotations

import email
import email.message
import email.policy
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Envelope", "ReceivedMessage"]


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted.

    ``data`` is the message as delivered. After DATA: dot-unstuffing undone,
    each line ending in CRLF as it was delimited on the wire (a bare CR or LF
    inside a line stays visible); ``raw`` is the exact data phase on the wire,
    stuffing and the terminating ``.CRLF`` included. After BDAT (CHUNKING):
    ``raw`` is the chunks' octets as they came, one after the other, and
    ``data`` the same bytes, since BDAT has neither stuffing nor terminator;
    ``via`` is ``"BDAT"`` and ``chunks`` the size of each chunk, in order.

    ``mail_options`` are the parameters of MAIL FROM (``"SIZE=1234"``,
    ``"RET=HDRS"``, ``"ENVID=order+2B42"``, ``"REQUIRETLS"``...), as they came;
    ``rcpt_options`` those of each RCPT TO, in the order of ``recipients``
    (``("NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;bob@example.com")``).
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
    via: Literal["DATA", "BDAT"] = "DATA"
    chunks: tuple[int, ...] = ()
    rcpt_options: tuple[tuple[str, ...], ...] = ()

    @property
    def message(self) -> email.message.EmailMessage:
        """``data`` parsed with the modern email policy."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


@dataclass(frozen=True)
class Envelope:
    """A transaction's sender, recipients and MAIL FROM parameters (and each RCPT TO's),
    as they stood when its content began (later commands cannot change what the message
    is recorded with)."""

    sender: str
    recipients: tuple[str, ...]
    mail_options: tuple[str, ...]
    rcpt_options: tuple[tuple[str, ...], ...] = ()
    # Twisted's sender object, new for each accepted MAIL FROM: BDAT chunks belong to
    # the transaction they began in, and whatever ends it (RSET, EHLO, STARTTLS, ...)
    # replaces or clears that object, without a hook in each command.
    key: object = field(default=None, compare=False, repr=False)
