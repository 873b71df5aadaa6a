"""Turning what the caller passes into an envelope and bytes (no Twisted here).

Checks happen here, before any connection: an address or header value with a
CR or LF in it (header injection), a header with NUL or another control
character, a message with no recipients, a type that is not a message, all
raise :class:`~syncsmtp.MessageError`.
"""

from __future__ import annotations

import email.errors
import email.message
import email.utils
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._serialize import Part, serialize
from ._wire import encoded_size, iter_encoded, joined_parts
from .errors import MessageError

if TYPE_CHECKING:
    from .dkim import DKIM
    from .dsn import DSN

__all__ = ["MessageInput"]

MessageInput = email.message.Message | bytes | str

# A CR or LF that does not start a folded continuation line.
_BAD_LINE_BREAK = re.compile(r"\r\n(?![ \t])|\r(?!\n)|\n(?![ \t])")
# C0 controls but TAB, CR and LF (line breaks are judged by _BAD_LINE_BREAK):
# NUL ends a string in many receivers, ESC drives terminals.
_HEADER_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_RAW_HEADER_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_ADDRESS_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>]")
# Envelope addresses, as smtplib sends them and the server judges them; only
# what would change how the command line reads is refused. Never in one:
# a control character (C0, DEL, C1: CR or LF would start a command of their own,
# NUL ends a string in many servers) or a Unicode line or paragraph separator.
_ADDRESS_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A character outside quotes: no white space (it ends the path), no angle bracket
# (it would close the path early), none of the specials a server parses.
_UNQUOTED = r"[^\s\x00-\x1f\x7f<>()\"',;:\\\[\]]"
# RFC 5321 Quoted-string: printable ASCII and spaces, \ escapes.
_QUOTED_STRING = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
# A domain (no @: the last @ splits the address, and the match stays linear in
# time), or an address literal such as [192.0.2.1] or [IPv6:2001:db8::1].
_DOMAIN = rf"(?:(?:(?!@){_UNQUOTED})+|\[[\x21-\x5a\x5e-\x7e]+\])"
# local@domain or "quoted local"@domain; or a local part alone (no @ at all),
# to which the server (a local relay) adds its own domain, as with smtplib.
_ENVELOPE_ADDRESS = re.compile(rf"(?:{_UNQUOTED}+|{_QUOTED_STRING})@{_DOMAIN}|(?:(?!@){_UNQUOTED})+")
# Most addresses: a subset of the above with no white space to strip, judged
# in a quarter of its time (it backtracks to the last @).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+")


@dataclass(frozen=True, slots=True)
class Envelope:
    """What goes on the wire: envelope sender, recipients and the message bytes.

    The message is kept as ``parts`` (as given or as serialised, never joined
    into one more copy): bytes, or ASCII text (a body as the email package
    holds it) that is encoded only as it is sent. ``size`` is their total
    length with every line break a CRLF, as SIZE counts it.
    ``international`` is True when an address is not ASCII, so the server must
    offer SMTPUTF8; ``eight_bit`` is True when the data has bytes above 127.
    ``dsn`` and ``require_tls`` are the delivery options the send asked for
    (see :mod:`syncsmtp.dsn`), which become parameters of MAIL FROM and RCPT TO.
    """

    sender: str
    recipients: tuple[str, ...]
    parts: tuple[Part, ...]
    size: int
    message_id: str | None
    international: bool
    eight_bit: bool
    dsn: DSN | None = None
    require_tls: bool = False

    @property
    def data(self) -> bytes:
        """The whole message in one piece (a copy: for small messages and tests)."""
        return joined_parts(self.parts)


def prepare_message(
    message: MessageInput,
    *,
    sender: str | None = None,
    recipients: Iterable[str] | str | None = None,
    dkim: DKIM | None = None,
) -> Envelope:
    """Validate ``message`` and work out its envelope.

    For an :class:`email.message.Message`, the envelope defaults come from its
    headers as :meth:`smtplib.SMTP.send_message` takes them (Sender or From;
    To, Cc and Bcc, or the Resent-* set when present); Bcc and Resent-Bcc are
    left out of the data; a missing Date or Message-ID header is added. For
    ``bytes`` or ``str``, ``sender`` and ``recipients`` are required and the
    data is sent as given (``str`` is encoded as UTF-8).

    With ``dkim``, the message is signed (see :func:`dkim_signed`).
    """
    envelope = _prepare(message, sender, recipients)
    return envelope if dkim is None else dkim_signed(envelope, dkim)


def dkim_signed(envelope: Envelope, dkim: DKIM) -> Envelope:
    """``envelope`` with a DKIM-Signature header first in its data.

    The signature covers the data exactly as the server receives it: every
    line break a CRLF, as BDAT sends it and as the server has it after undoing
    DATA's dot-stuffing (:func:`~syncsmtp._wire.iter_encoded` without
    stuffing). That needs the whole message in one piece, so a signed
    envelope holds it as one ``bytes`` (the body is not sent from the
    caller's message a slice at a time, as unsigned ones are).
    """
    data = b"".join(iter_encoded(envelope.parts, dot_stuffing=False))
    header = dkim.sign(data)
    return replace(envelope, parts=(header, data), size=len(header) + len(data))


def _prepare(
    message: MessageInput, sender: str | None, recipients: Iterable[str] | str | None
) -> Envelope:
    explicit_recipients = _recipient_list(recipients)
    if isinstance(message, email.message.Message):
        return _prepare_email(message, sender, explicit_recipients)
    if isinstance(message, str):
        message = message.encode("utf-8")
    if isinstance(message, bytes | bytearray | memoryview):
        if sender is None or explicit_recipients is None:
            raise MessageError(
                "a message given as bytes or str needs sender= and recipients=; "
                "or pass an email.message.EmailMessage, whose headers give the envelope"
            )
        data = bytes(message)
        _check_raw_headers(data)
        return _envelope(sender, explicit_recipients, [data], message_id=None)
    raise MessageError(
        f"message must be an email.message.EmailMessage, bytes or str, not {type(message).__name__}"
    )


def _recipient_list(recipients: Iterable[str] | str | None) -> list[str] | None:
    if recipients is None:
        return None
    if isinstance(recipients, str):
        return [recipients]
    return list(recipients)


def _prepare_email(
    message: email.message.Message, sender: str | None, recipients: list[str] | None
) -> Envelope:
    _check_headers(message)
    headers = _envelope_headers(message)
    resent = headers.get("resent-date")
    if resent is not None and len(resent) > 1:
        raise MessageError("message has more than one Resent- header block; pass sender= and recipients=")
    prefix = "resent-" if resent else ""
    if sender is None:
        sender_header = _first(headers, prefix + "sender") or _first(headers, prefix + "from")
        if sender_header is None:
            raise MessageError("message has no From header; set one or pass sender=")
        addresses = _header_addresses([sender_header])
        if len(addresses) != 1 or not addresses[0]:
            raise MessageError(
                f"cannot take one sender address from {prefix.title()}From {str(sender_header)!r}; "
                "add a Sender header or pass sender="
            )
        sender = addresses[0]
    if recipients is None:
        recipients = [
            address
            for address in _header_addresses(
                [value for name in ("to", "cc", "bcc") for value in headers.get(prefix + name, ())]
            )
            if address
        ]

    international = not (sender.isascii() and all(r.isascii() for r in recipients))
    added = b""
    if "date" not in headers:
        added += b"Date: " + _current_date() + b"\r\n"
    message_id = _first(headers, "message-id")
    if message_id is None:
        message_id = email.utils.make_msgid(domain=_message_id_domain(sender))
        added += b"Message-ID: " + message_id.encode("ascii") + b"\r\n"
    try:
        parts = serialize(message, utf8=international, skip=_NOT_SENT)
    # What the email package raises for a message whose structure it cannot
    # write (a list payload under text/*, a str among a multipart's parts).
    except (ValueError, TypeError, UnicodeError, AttributeError, email.errors.MessageError) as exc:
        raise MessageError(f"message cannot be serialised: {exc}") from exc
    if added:
        parts.insert(0, added)
    return _envelope(sender, recipients, parts, message_id=str(message_id).strip())


# Headers the envelope is taken from, and the ones checked for being present.
_ENVELOPE_HEADERS = frozenset(
    {"sender", "from", "to", "cc", "bcc", "date", "message-id"}
    | {"resent-" + name for name in ("date", "sender", "from", "to", "cc", "bcc")}
)
# Kept out of the data: the envelope carries them.
_NOT_SENT = frozenset({"bcc", "resent-bcc"})


def _envelope_headers(message: email.message.Message) -> dict[str, list[Any]]:
    """The top-level headers the envelope needs, by lower-case name, as
    ``message.get_all`` gives them (in one pass over the headers)."""
    found: dict[str, list[Any]] = {}
    fetch = message.policy.header_fetch_parse
    for name, value in message.raw_items():
        key = name.lower()
        if key in _ENVELOPE_HEADERS:
            found.setdefault(key, []).append(fetch(name, value))
    return found


def _first(headers: dict[str, list[Any]], name: str) -> Any:
    values = headers.get(name)
    return values[0] if values else None


_date_cache: tuple[int, bytes] = (0, b"")


def _current_date() -> bytes:
    """``formatdate(localtime=True)``, made once a second (it has no finer resolution)."""
    global _date_cache
    now = int(time.time())
    second, text = _date_cache
    if second != now:
        text = email.utils.formatdate(now, localtime=True).encode("ascii")
        _date_cache = (now, text)
    return text


def _message_id_domain(sender: str) -> str:
    domain = sender.rpartition("@")[2].strip("<> ")
    try:
        return domain.encode("idna").decode("ascii") if domain else "localhost"
    except UnicodeError:  # not a name IDNA can spell; the id only needs to be unique
        return "localhost"


def _header_addresses(values: list[Any]) -> list[str]:
    """The addr-specs in address headers; the modern email policy has parsed them already."""
    found: list[str] = []
    unparsed: list[str] = []
    for value in values:
        parsed = getattr(value, "addresses", None)
        if parsed is None:
            unparsed.append(str(value))
        else:
            found.extend(address.addr_spec for address in parsed if address.username or address.domain)
    if unparsed:
        found.extend(address for _, address in email.utils.getaddresses(unparsed))
    return found


def _check_headers(message: email.message.Message) -> None:
    for part in _parts(message):
        for name, value in part.raw_items():
            if not isinstance(name, str) or not name or _ADDRESS_FORBIDDEN.search(name) or ":" in name:
                raise MessageError(f"header name {name!r} is not valid")
            # A header object is a str already; a compat32 Header is not.
            text = value if isinstance(value, str) else str(value)
            if text.isprintable():  # the common case: no line break, no control character
                continue
            if _BAD_LINE_BREAK.search(text):
                raise MessageError(
                    f"header {name} contains a CR or LF that does not start a folded line "
                    "(header injection); remove line breaks from header values"
                )
            if _HEADER_CONTROL.search(text):
                raise MessageError(_control_error(name))


def _check_raw_headers(data: bytes) -> None:
    """Control characters in the header section of data given as bytes."""
    found = _RAW_HEADER_CONTROL.search(data, 0, _header_section_end(data))
    if found is not None:
        line_start = data.rfind(b"\n", 0, found.start()) + 1
        name = data[line_start:found.start()].partition(b":")[0].decode("ascii", "replace")
        raise MessageError(_control_error(name))


def _header_section_end(data: bytes) -> int:
    """Where the first empty line of ``data`` starts (LF or CRLF line ends), or
    its length; found with ``bytes.find`` rather than a pattern tried at
    every position of the message."""
    crlf = data.find(b"\n\r\n")
    lf = data.find(b"\n\n", 0, len(data) if crlf < 0 else crlf + 1)
    ends = [end for end in (crlf, lf) if end >= 0]
    return min(ends) if ends else len(data)


def _control_error(name: str) -> str:
    return (
        f"header {name!r} contains NUL or another control character; only TAB may stand "
        "in a header value (remove or encode the character)"
    )


def _parts(message: email.message.Message) -> Iterator[email.message.Message]:
    """Every part, like ``Message.walk()``, but passing over a payload item that
    is not a message (serialising it then fails with a MessageError)."""
    yield message
    payload = message.get_payload() if message.is_multipart() else None
    for part in payload or ():
        if isinstance(part, email.message.Message):
            yield from _parts(part)


def _address(address: str, role: str, *, allow_empty: bool = False) -> str:
    """The address to put between ``<`` and ``>`` for ``address``: an
    addr-spec, a local part alone, or either as ``Name <...>``."""
    if type(address) is str and _PLAIN_ADDRESS.fullmatch(address):
        return address  # a str subclass (a header object) goes on to come back a plain str
    if not isinstance(address, str):
        raise MessageError(f"{role} address must be a string, not {type(address).__name__}")
    if _ADDRESS_CONTROL.search(address):
        raise MessageError(
            f"{role} address {address!r} contains a control character (CR, LF, NUL or another): "
            "an envelope address is one line of printable characters (a line break would "
            "start an SMTP command of its own)"
        )
    bare = address.strip()
    if bare and not _ENVELOPE_ADDRESS.fullmatch(bare):
        # "Name <addr>" is fine; anything else that needs parsing is ambiguous.
        _, parsed = email.utils.parseaddr(bare)
        if not parsed or f"<{parsed}>".replace(" ", "") not in bare.replace(" ", "") \
                or not _ENVELOPE_ADDRESS.fullmatch(parsed):
            raise MessageError(
                f"{role} address {address!r} is not a valid address: give local@domain, "
                'a local part alone (the server adds its domain), or "Name <local@domain>"; '
                "white space and <> belong only inside a quoted local part"
            )
        bare = parsed
    if not bare:
        if allow_empty:
            return ""
        raise MessageError(f"{role} address is empty")
    return bare


def _envelope(
    sender: str, recipients: list[str], parts: list[Part], message_id: str | None
) -> Envelope:
    envelope_sender = _address(sender, "sender", allow_empty=True)
    envelope_recipients = tuple(_address(r, "recipient") for r in recipients)
    if not envelope_recipients:
        raise MessageError("message has no recipients: set To, Cc or Bcc, or pass recipients=")
    international = not (
        envelope_sender.isascii() and all(r.isascii() for r in envelope_recipients)
    )
    return Envelope(
        sender=envelope_sender,
        recipients=envelope_recipients,
        parts=tuple(parts),
        size=sum(encoded_size(part) for part in parts),
        message_id=message_id,
        international=international,
        eight_bit=not all(part.isascii() for part in parts),
    )
