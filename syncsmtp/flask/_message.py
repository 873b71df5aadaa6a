"""Flask-Mail's ``Message``: its constructor, attributes and checks, and the envelope.

The MIME message is built in :mod:`._mime`; addresses are read in
:mod:`._addresses`, header values checked in :mod:`._headers`.
"""

from __future__ import annotations

import email.errors
import email.utils
import functools
import socket
import warnings
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from flask import current_app, has_app_context

from ..errors import MessageError
from ._addresses import AddressInput, sender_text, split_address
from ._attachment import Attachment
from ._headers import BadHeaderError, bad_subject, has_newline
from ._mime import build_email

if TYPE_CHECKING:
    from ..result import SendResult
    from ._extension import Connection

__all__ = ["Message"]

# Options syncsmtp sets by itself from the message (SMTPUTF8, BODY=8BITMIME), or that change nothing.
_MANAGED_MAIL_OPTIONS = frozenset({"SMTPUTF8", "BODY=8BITMIME", "BODY=7BIT"})


class Message:
    """An email message, with the constructor and attributes of Flask-Mail's ``Message``.

    ``sender`` defaults to ``MAIL_DEFAULT_SENDER``; a ``(name, address)``
    tuple becomes ``"name <address>"``. ``recipients``, ``cc`` and ``bcc``
    are lists of addresses (strings or tuples); ``alts`` maps a text subtype
    to an alternative body, and ``html`` is ``alts["html"]``. ``date`` is a
    timestamp (or a ``datetime``); when it is None, sending sets it to the
    current time. ``charset`` (default UTF-8) encodes the text parts.
    ``extra_headers`` are added after the others, and replace a header of
    the same name.

    The MIME structure is Flask-Mail's: one ``text/plain`` part alone;
    ``multipart/mixed`` with the text first when there are attachments; and
    ``multipart/mixed`` around a ``multipart/alternative`` (the text, then
    each of ``alts``) when there are alternatives.

    ``mail_options`` and ``rcpt_options`` are ESMTP parameters for MAIL FROM
    and RCPT TO. syncsmtp adds ``SMTPUTF8`` and ``BODY=8BITMIME`` by itself
    when the message needs them; any other parameter is refused with a
    :class:`~syncsmtp.MessageError`, since it cannot be passed on.
    """

    def __init__(
        self,
        subject: str = "",
        recipients: Iterable[AddressInput] | None = None,
        body: str | None = None,
        html: str | None = None,
        alts: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        sender: AddressInput | None = None,
        cc: Iterable[AddressInput] | None = None,
        bcc: Iterable[AddressInput] | None = None,
        attachments: Iterable[Attachment] | None = None,
        reply_to: AddressInput | None = None,
        date: float | datetime | None = None,
        charset: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
    ) -> None:
        self.recipients: list[AddressInput] = list(recipients or [])
        self.subject: str = subject
        self.sender: AddressInput | None = sender_text(sender or _configured("default_sender"))
        self.reply_to: AddressInput | None = reply_to
        self.cc: list[AddressInput] = list(cc or [])
        self.bcc: list[AddressInput] = list(bcc or [])
        self.body: str | None = body
        self.alts: dict[str, str] = dict(alts or {})
        self.html = html
        self.date: float | datetime | None = date
        self.msgId: str = email.utils.make_msgid(domain=_local_domain())
        self.charset: str | None = charset
        self.extra_headers: dict[str, str] | None = dict(extra_headers) if extra_headers else None
        self.mail_options: list[str] = list(mail_options or [])
        self.rcpt_options: list[str] = list(rcpt_options or [])
        self.attachments: list[Attachment] = list(attachments or [])

    @property
    def html(self) -> str | None:
        """The HTML alternative (``alts["html"]``), or None."""
        return self.alts.get("html")

    @html.setter
    def html(self, value: str | None) -> None:
        if value is None:
            self.alts.pop("html", None)
        else:
            self.alts["html"] = value

    @property
    def send_to(self) -> set[AddressInput]:
        """Every recipient, To, Cc and Bcc, as a set (as in Flask-Mail)."""
        return {*self.recipients, *self.cc, *self.bcc}

    @property
    def send_recipients(self) -> list[AddressInput]:
        """Every recipient, To then Cc then Bcc, in the order given, without
        repeats (the envelope also leaves out an address given again under
        another display name)."""
        return list(dict.fromkeys([*self.recipients, *self.cc, *self.bcc]))

    def add_recipient(self, recipient: AddressInput) -> None:
        """Add an address to ``recipients`` (the To header)."""
        self.recipients.append(recipient)

    def attach(
        self,
        filename: str | None = None,
        content_type: str | None = None,
        data: str | bytes | None = None,
        disposition: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Add an :class:`Attachment` made of these arguments."""
        self.attachments.append(Attachment(filename, content_type, data, disposition, headers))

    def send(self, connection: Connection) -> SendResult | None:
        """Send this message over ``connection`` (from ``mail.connect()``)."""
        return connection.send(self)

    # -- checks -------------------------------------------------------------------------------------

    def has_bad_headers(self) -> bool:
        """True when a header value would carry a line break: the subject (a
        CRLF followed by a space or tab, a folded line, is allowed there, as in
        Flask-Mail), an address, an extra header's name or value, or an
        attachment's file name, type or headers."""
        if bad_subject(str(self.subject)):
            return True
        return any(has_newline(value) for value in self._header_values())

    def is_bad_headers(self) -> bool:
        """Deprecated name of :meth:`has_bad_headers` (as in Flask-Mail)."""
        warnings.warn("'is_bad_headers' is renamed to 'has_bad_headers'", DeprecationWarning, stacklevel=2)
        return self.has_bad_headers()

    def _header_values(self) -> Iterator[str]:
        for address in (self.sender, self.reply_to, *self.recipients, *self.cc, *self.bcc):
            if isinstance(address, tuple):
                yield from (str(item) for item in address)
            elif address is not None:
                yield str(address)
        yield from self.alts
        yield from (self.charset or "", self.msgId)
        for name, value in (self.extra_headers or {}).items():
            yield from (str(name), str(value))
        for attachment in self.attachments:
            yield from (attachment.filename or "", attachment.content_type, attachment.disposition)
            for name, value in attachment.headers.items():
                yield from (str(name), str(value))

    def envelope(self, envelope_from: AddressInput | None = None) -> tuple[str, list[str]]:
        """The envelope sender and recipients, as Flask-Mail passes them to
        smtplib: the address of ``envelope_from`` or ``sender``, and of every
        recipient (each once), with international domains IDNA-encoded.

        Raises :class:`BadHeaderError` or :class:`~syncsmtp.MessageError`
        when the message cannot be sent as it is."""
        if self.has_bad_headers():
            raise BadHeaderError()
        sender = envelope_from or self.sender
        if not sender:
            raise MessageError(
                "the message has no sender and MAIL_DEFAULT_SENDER is not set; "
                "pass sender= to Message or set MAIL_DEFAULT_SENDER"
            )
        recipients = list(dict.fromkeys(split_address(address)[1] for address in self.send_recipients))
        if not recipients:
            raise MessageError("the message has no recipients: add recipients, cc or bcc")
        unsupported = [option for option in self.mail_options if option.upper() not in _MANAGED_MAIL_OPTIONS]
        if unsupported or self.rcpt_options:
            raise MessageError(
                f"syncsmtp does not pass ESMTP parameters of the caller's "
                f"({', '.join(unsupported + self.rcpt_options)}); it adds SMTPUTF8 and "
                "BODY=8BITMIME by itself when the message needs them"
            )
        return split_address(sender)[1], recipients

    # -- the MIME message ---------------------------------------------------------------------------

    def email_message(self, *, ascii_attachments: bool | None = None) -> EmailMessage:
        """This message as an :class:`email.message.EmailMessage`, with the
        headers and MIME structure Flask-Mail gives it. ``ascii_attachments``
        defaults to the app's ``MAIL_ASCII_ATTACHMENTS``.

        Raises :class:`BadHeaderError` for a line break in a header, and
        :class:`~syncsmtp.MessageError` for a value the email package cannot
        write (an unknown charset, a malformed address)."""
        if self.has_bad_headers():
            raise BadHeaderError()
        if ascii_attachments is None:
            ascii_attachments = bool(_configured("ascii_attachments"))
        try:
            return build_email(self, ascii_attachments)
        except MessageError:
            raise
        except (ValueError, TypeError, LookupError, email.errors.MessageError) as error:
            raise MessageError(f"the message cannot be built: {error}") from error

    def as_bytes(self) -> bytes:
        """The message as Flask-Mail's ``as_bytes()`` gives it (CRLF line ends)."""
        return self.email_message().as_bytes()

    def as_string(self) -> str:
        """The message as text (CRLF line ends)."""
        return self.email_message().as_string()

    def __bytes__(self) -> bytes:
        return self.as_bytes()

    def __str__(self) -> str:
        return self.as_string()

    def __repr__(self) -> str:
        return f"Message(subject={self.subject!r}, sender={self.sender!r}, recipients={self.recipients!r})"


def _configured(name: str) -> Any:
    """An attribute of the current app's mail state, or None outside an app context."""
    if not has_app_context():
        return None
    return getattr(current_app.extensions.get("mail"), name, None)


@functools.cache
def _local_domain() -> str:
    """The host name ``make_msgid()`` puts in a Message-ID, looked up once."""
    return socket.getfqdn()
