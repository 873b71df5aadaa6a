"""Flask-Mail's ``Message`` and ``Attachment``, built as an :class:`email.message.EmailMessage`."""

from __future__ import annotations

import codecs
import email.base64mime
import email.charset
import email.errors
import email.message
import email.policy
import email.quoprimime
import email.utils
import functools
import mimetypes
import re
import socket
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from typing import TYPE_CHECKING, Any

from flask import current_app, has_app_context

from ..errors import MessageError

if TYPE_CHECKING:
    from ..result import SendResult
    from ._extension import Connection

    _Parts = list[email.message.Message[str, str] | str]

__all__ = ["AddressInput", "Attachment", "BadHeaderError", "Message"]

#: An address as Flask-Mail takes it: ``"Name <addr@example.com>"``, a bare
#: address, or a ``(name, address)`` tuple.
AddressInput = str | tuple[str, str]

_POLICY = email.policy.SMTP
# RFC 5322 2.1.1: a line of the message may not be longer than this, in octets.
_MAX_LINE = 998
_SPACES = re.compile(r"\s+")
# Characters that make a display name need quotes (those of email.utils.formataddr).
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Options syncsmtp sets by itself from the message (SMTPUTF8, BODY=8BITMIME), or that change nothing.
_MANAGED_MAIL_OPTIONS = frozenset({"SMTPUTF8", "BODY=8BITMIME", "BODY=7BIT"})
_BAD_HEADER = "a header value contains a CR or LF (header injection); remove the line breaks"


class BadHeaderError(MessageError):
    """A header value has a line break in it (header injection).

    Flask-Mail's exception of the same name; here it is also a
    :class:`syncsmtp.MessageError` (so a ``ValueError``), and it is raised
    before anything is sent.
    """

    def __init__(self, message: str = _BAD_HEADER, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class Attachment:
    """A file attached to a :class:`Message`, as in Flask-Mail.

    ``data`` (bytes, or text that is encoded as UTF-8) is required.
    ``content_type`` defaults to a guess from ``filename``, else
    ``text/plain`` for text and ``application/octet-stream`` for bytes;
    ``disposition`` to ``"attachment"``. ``headers`` are added to the part
    (``{"Content-ID": "<logo>"}`` for an inline image). As in Flask-Mail, a
    part without a ``filename`` gets no Content-Disposition header.
    """

    def __init__(
        self,
        filename: str | None = None,
        content_type: str | None = None,
        data: str | bytes | None = None,
        disposition: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if data is None:
            raise ValueError("The 'data' argument is required.")
        if content_type is None and filename is not None:
            content_type = mimetypes.guess_type(filename)[0]
        if content_type is None:
            content_type = "text/plain" if isinstance(data, str) else "application/octet-stream"
        self.data: str | bytes = data
        self.filename: str | None = filename
        self.content_type: str = content_type
        self.disposition: str = disposition or "attachment"
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"Attachment(filename={self.filename!r}, content_type={self.content_type!r})"


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
        subject = str(self.subject)
        if _has_newline(subject) and not _is_folded(subject):
            return True
        return any(_has_newline(value) for value in self._header_values())

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
        recipients = list(dict.fromkeys(_split(address)[1] for address in self.send_recipients))
        if not recipients:
            raise MessageError("the message has no recipients: add recipients, cc or bcc")
        unsupported = [option for option in self.mail_options if option.upper() not in _MANAGED_MAIL_OPTIONS]
        if unsupported or self.rcpt_options:
            raise MessageError(
                f"syncsmtp does not pass ESMTP parameters of the caller's "
                f"({', '.join(unsupported + self.rcpt_options)}); it adds SMTPUTF8 and "
                "BODY=8BITMIME by itself when the message needs them"
            )
        return _split(sender)[1], recipients

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
            return self._build(ascii_attachments)
        except MessageError:
            raise
        except (ValueError, TypeError, LookupError, email.errors.MessageError) as error:
            raise MessageError(f"the message cannot be built: {error}") from error

    def _build(self, ascii_attachments: bool) -> EmailMessage:
        charset = _charset(self.charset or "utf-8")
        message = EmailMessage(policy=_POLICY)
        body = "" if self.body is None else str(self.body)
        if not self.attachments and not self.alts:
            _set_text(message, body, "plain", charset)
        else:
            message["Content-Type"] = "multipart/mixed"
            message["MIME-Version"] = "1.0"
            parts: _Parts = []
            if self.alts:
                alternative = MIMEPart(policy=_POLICY)
                alternative["Content-Type"] = "multipart/alternative"
                alternatives: _Parts = [_text_part(body, "plain", charset)]
                for subtype, content in self.alts.items():
                    if not _TOKEN.match(subtype):
                        raise MessageError(f"alts key {subtype!r} is not a MIME subtype")
                    alternatives.append(_text_part(str(content), subtype, charset))
                alternative.set_payload(alternatives)
                parts.append(alternative)
            else:
                parts.append(_text_part(body, "plain", charset))
            parts.extend(_attachment_part(attachment, ascii_attachments) for attachment in self.attachments)
            message.set_payload(parts)

        if self.subject:
            message["Subject"] = _unfold(str(self.subject))
        message["From"] = _address(self.sender or "")
        to = _addresses(self.recipients)
        if to:
            message["To"] = to
        message["Date"] = _date(self.date)
        message["Message-ID"] = self.msgId
        if self.cc:
            message["Cc"] = _addresses(self.cc)
        if self.reply_to:
            message["Reply-To"] = _address(self.reply_to)
        for name, value in (self.extra_headers or {}).items():
            del message[str(name)]
            message[str(name)] = str(value)
        return message

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


# -- helpers ----------------------------------------------------------------------------------------


def sender_text(sender: AddressInput | None) -> str | None:
    """A sender as Flask-Mail keeps it: a ``(name, address)`` tuple becomes
    ``"name <address>"`` (the name quoted when it needs to be)."""
    if not isinstance(sender, tuple):
        return sender
    name, address = sender
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>" if name else address


def _configured(name: str) -> Any:
    """An attribute of the current app's mail state, or None outside an app context."""
    if not has_app_context():
        return None
    return getattr(current_app.extensions.get("mail"), name, None)


@functools.cache
def _local_domain() -> str:
    """The host name ``make_msgid()`` puts in a Message-ID, looked up once."""
    return socket.getfqdn()


def _has_newline(value: str) -> bool:
    return "\r" in value or "\n" in value


def _is_folded(subject: str) -> bool:
    """Whether every line break is a CRLF that folds the line (Flask-Mail's rule)."""
    for number, line in enumerate(subject.split("\r\n")):
        if not line.strip() or _has_newline(line) or (number > 0 and line[0] not in "\t "):
            return False
    return True


def _unfold(value: str) -> str:
    return value.replace("\r\n", "")


def _split(value: AddressInput) -> tuple[str, str]:
    """The display name and the address, with an international domain IDNA-encoded."""
    name, address = (str(value[0]), str(value[1])) if isinstance(value, tuple) \
        else email.utils.parseaddr(str(value))
    if not address.isascii() and "@" in address:
        local, _, domain = address.partition("@")
        try:
            address = f"{local}@{domain.encode('idna').decode('ascii')}"
        except UnicodeError as error:
            raise MessageError(f"the domain of {address!r} is not a valid host name: {error}") from None
    return name, address


def _address(value: AddressInput) -> Address:
    name, address = _split(value)
    try:
        if not address:
            raise ValueError("no address")
        return Address(display_name=name, addr_spec=address)
    except (ValueError, email.errors.MessageError) as error:
        raise MessageError(f"{address or name!r} is not an email address ({error})") from None


def _addresses(values: Iterable[AddressInput]) -> tuple[Address, ...]:
    unique = dict.fromkeys(_split(value) for value in values)
    return tuple(_address(pair) for pair in unique)


def _date(date: float | datetime | None) -> str:
    if isinstance(date, datetime):
        return email.utils.format_datetime(date if date.tzinfo else date.astimezone())
    return email.utils.formatdate(date, localtime=True)


def _charset(name: str) -> str:
    """The name a text part's charset parameter gives (the email package's),
    once Python knows it as a codec."""
    label = email.charset.Charset(name).get_output_charset() or name
    try:
        codecs.lookup(label)
    except LookupError:
        raise MessageError(f"unknown charset {name!r}") from None
    return label


def _text_part(text: str, subtype: str, charset: str) -> MIMEPart:
    part = MIMEPart(policy=_POLICY)
    _set_text(part, text, subtype, charset)
    return part


def _set_text(part: MIMEPart, text: str, subtype: str, charset: str) -> None:
    """The text exactly as given (no line end added), in the transfer encoding
    Flask-Mail gives it: 7bit or 8bit for UTF-8 (and the charsets the email
    package sends as they are), the email package's choice for the others
    (quoted-printable for ISO-8859-1); quoted-printable when a line would be
    too long for SMTP."""
    data = text.encode(charset)
    part["Content-Type"] = f'text/{subtype}; charset="{charset}"'
    if isinstance(part, EmailMessage):
        part["MIME-Version"] = "1.0"
    encoding = None if charset == "utf-8" else email.charset.Charset(charset).body_encoding
    if encoding is None and all(len(line) <= _MAX_LINE for line in data.splitlines()):
        part["Content-Transfer-Encoding"] = "7bit" if data.isascii() else "8bit"
        part.set_payload(data.decode("ascii", "surrogateescape"))
    elif encoding == email.charset.BASE64:
        part["Content-Transfer-Encoding"] = "base64"
        part.set_payload(email.base64mime.body_encode(data))
    else:
        part["Content-Transfer-Encoding"] = "quoted-printable"
        part.set_payload(email.quoprimime.body_encode(data.decode("latin-1")))


def _attachment_part(attachment: Attachment, ascii_attachments: bool) -> MIMEPart:
    maintype, _, subtype = attachment.content_type.partition("/")
    if not (_TOKEN.match(maintype) and _TOKEN.match(subtype)):
        raise MessageError(f"attachment content type {attachment.content_type!r} is not type/subtype")
    params: dict[str, str] = {}
    data = attachment.data
    if isinstance(data, str):
        if maintype == "text" and not data.isascii():
            params["charset"] = "utf-8"
        data = data.encode("utf-8")
    filename = attachment.filename
    if filename is not None and ascii_attachments:
        filename = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
        filename = _SPACES.sub(" ", filename).strip()
    part = MIMEPart(policy=_POLICY)
    part.set_content(
        data, maintype, subtype, disposition=attachment.disposition if filename is not None else None,
        filename=filename, params=params,
    )
    for name, value in attachment.headers.items():
        part[str(name)] = str(value)
    return part
