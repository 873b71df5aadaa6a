"""A Flask-Mail message as an :class:`email.message.EmailMessage`: the MIME structure,
transfer encodings and headers Flask-Mail gives it."""

from __future__ import annotations

import codecs
import email.base64mime
import email.charset
import email.message
import email.policy
import email.quoprimime
import email.utils
import re
import unicodedata
from datetime import datetime
from email.message import EmailMessage, MIMEPart
from typing import TYPE_CHECKING

from ..errors import MessageError
from ._addresses import address_header, address_headers
from ._attachment import Attachment
from ._headers import unfold

if TYPE_CHECKING:
    from ._message import Message

    _Parts = list[email.message.Message[str, str] | str]

__all__ = ["build_email"]

_POLICY = email.policy.SMTP
# RFC 5322 2.1.1: a line of the message may not be longer than this, in octets.
_MAX_LINE = 998
_SPACES = re.compile(r"\s+")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def build_email(message: Message, ascii_attachments: bool) -> EmailMessage:
    """``message`` as an EmailMessage: one ``text/plain`` part alone;
    ``multipart/mixed`` with the text first when there are attachments; and
    ``multipart/mixed`` around a ``multipart/alternative`` (the text, then
    each of ``alts``) when there are alternatives. Raises
    :class:`~syncsmtp.MessageError` (and what the email package raises) for
    what cannot be written."""
    charset = _charset(message.charset or "utf-8")
    built = EmailMessage(policy=_POLICY)
    body = "" if message.body is None else str(message.body)
    if not message.attachments and not message.alts:
        _set_text(built, body, "plain", charset)
    else:
        built["Content-Type"] = "multipart/mixed"
        built["MIME-Version"] = "1.0"
        parts: _Parts = []
        if message.alts:
            alternative = MIMEPart(policy=_POLICY)
            alternative["Content-Type"] = "multipart/alternative"
            alternatives: _Parts = [_text_part(body, "plain", charset)]
            for subtype, content in message.alts.items():
                if not _TOKEN.match(subtype):
                    raise MessageError(f"alts key {subtype!r} is not a MIME subtype")
                alternatives.append(_text_part(str(content), subtype, charset))
            alternative.set_payload(alternatives)
            parts.append(alternative)
        else:
            parts.append(_text_part(body, "plain", charset))
        parts.extend(_attachment_part(attachment, ascii_attachments) for attachment in message.attachments)
        built.set_payload(parts)

    if message.subject:
        built["Subject"] = unfold(str(message.subject))
    built["From"] = address_header(message.sender or "")
    to = address_headers(message.recipients)
    if to:
        built["To"] = to
    built["Date"] = _date(message.date)
    built["Message-ID"] = message.msgId
    if message.cc:
        built["Cc"] = address_headers(message.cc)
    if message.reply_to:
        built["Reply-To"] = address_header(message.reply_to)
    for name, value in (message.extra_headers or {}).items():
        del built[str(name)]
        built[str(name)] = str(value)
    return built


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
