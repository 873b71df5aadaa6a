"""Delivery options of one message: delivery status notifications (DSN,
RFC 3461) and REQUIRETLS (RFC 8689). Plain data: no Twisted here.

:class:`DSN` holds what the caller asks for and checks it when it is made;
the functions below turn it into the parameters of MAIL FROM and RCPT TO, and
attach the options to an :class:`~syncsmtp.message.Envelope` once the
message itself has been checked. Whether the server offers the extensions is
judged by the engine, once it has read the server's EHLO.
"""

from __future__ import annotations

import email.message
import re
from dataclasses import dataclass, replace

from . import _messages
from .errors import MessageError
from .message import Envelope, MessageInput

__all__ = ["DSN"]

#: The NOTIFY values that may be combined; NEVER stands alone.
NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")
#: The RET values.
RET_VALUES = ("FULL", "HDRS")
#: The longest ENVID, in characters as sent (xtext-encoded), RFC 3461 section 4.4.
ENVID_MAX = 100

# xtext (RFC 3461 section 4): printable ASCII but "+" and "=" as itself, the rest as +XX.
_XTEXT_SAFE = frozenset(range(0x21, 0x7F)) - {ord("+"), ord("=")}
# utf-8-addr-xtext (RFC 6533 section 3): the same, with \x{HEX} instead of +XX.
_UNITEXT_SAFE = _XTEXT_SAFE - {ord("\\")}
_PRINTABLE = re.compile(r"[\x20-\x7e]+")
# A "TLS-Required: No" header field (RFC 8689 section 5) in a header section as bytes;
# folded continuation lines are white space.
_TLS_REQUIRED_NO = re.compile(rb"(?:^|\n)tls-required[ \t]*:(?:[ \t]|\r?\n[ \t])*no[ \t]*\r?(?:\n|$)",
                              re.IGNORECASE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True, slots=True)
class DSN:
    """Delivery status notifications (RFC 3461) asked for one message.

    ``notify`` says when each recipient's final server is to report back:
    any of ``"SUCCESS"``, ``"FAILURE"`` and ``"DELAY"``, or ``"NEVER"``
    alone; a tuple (or list, or set) of them, or one string (``"NEVER"``,
    or several joined with commas), always kept as a tuple in a fixed order.
    Empty (the default): no NOTIFY parameter, so the server's default
    applies (failures, and perhaps delays). ``ret`` asks for the
    ``"FULL"`` message or only its headers (``"HDRS"``) in a failure report;
    None leaves it to the server. ``envid`` is an identifier of your own
    (printable ASCII, at most 100 characters once xtext-encoded) that the
    reports quote, to match them with what you sent. With ``orcpt`` (the
    default), each RCPT TO carries the recipient as the original recipient
    (``ORCPT=rfc822;...``), which reports quote too.

    ``required`` (the default True): when the server does not offer DSN,
    the send fails with :class:`~syncsmtp.ExtensionNotOfferedError` before
    MAIL FROM, and nothing is sent. With ``required=False``, the message is
    sent without the DSN parameters instead.

    Values are checked when a DSN is made: a bad one is a :class:`ValueError`
    or :class:`TypeError` that names its parameter. Words are taken in any
    case and kept in upper case.
    """

    notify: tuple[str, ...] | str = ()
    ret: str | None = None
    envid: str | None = None
    orcpt: bool = True
    required: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "notify", _notify(self.notify))
        if self.ret is not None:
            if not isinstance(self.ret, str) or self.ret.upper() not in RET_VALUES:
                raise ValueError(_messages.dsn_ret(RET_VALUES, self.ret))
            object.__setattr__(self, "ret", self.ret.upper())
        if self.envid is not None:
            if not isinstance(self.envid, str):
                raise TypeError(_messages.dsn_envid(ENVID_MAX, self.envid))
            if not _PRINTABLE.fullmatch(self.envid) or len(xtext(self.envid)) > ENVID_MAX:
                raise ValueError(_messages.dsn_envid(ENVID_MAX, self.envid))
        for name in ("orcpt", "required"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(_messages.flag("DSN", name, getattr(self, name)))

    def mail_parameters(self) -> bytes:
        """What goes after ``MAIL FROM:<...>``: `` RET=... ENVID=...`` (either may be absent)."""
        params = b""
        if self.ret is not None:
            params += b" RET=" + self.ret.encode("ascii")
        if self.envid is not None:
            params += b" ENVID=" + xtext(self.envid).encode("ascii")
        return params

    def rcpt_parameters(self, recipient: str) -> bytes:
        """What goes after ``RCPT TO:<recipient>``: `` NOTIFY=... ORCPT=...``.

        An address that is not ASCII (sent with SMTPUTF8) is given as
        ``ORCPT=utf-8;...`` (RFC 6533), the others as ``ORCPT=rfc822;...``.
        """
        params = b""
        if self.notify:
            params += b" NOTIFY=" + ",".join(self.notify).encode("ascii")
        if self.orcpt:
            if recipient.isascii():
                params += b" ORCPT=rfc822;" + xtext(recipient).encode("ascii")
            else:
                params += b" ORCPT=utf-8;" + utf8_addr_xtext(recipient).encode("ascii")
        return params


def _notify(value: object) -> tuple[str, ...]:
    words: list[object]
    if isinstance(value, str):
        words = [word.strip() for word in value.split(",")] if value.strip() else []
    elif isinstance(value, tuple | list | frozenset | set):
        words = list(value)
    else:
        raise TypeError(_messages.dsn_notify(value))
    if not all(isinstance(word, str) for word in words):
        raise TypeError(_messages.dsn_notify(value))
    upper = tuple(str(word).upper() for word in words)
    if upper == ("NEVER",):
        return upper
    if any(word not in NOTIFY_VALUES for word in upper) or len(set(upper)) != len(upper):
        raise ValueError(_messages.dsn_notify(value))
    # In a fixed order, so that a set gives the same line every time.
    return tuple(word for word in NOTIFY_VALUES if word in upper)


def xtext(text: str) -> str:
    """``text`` (ASCII) as xtext (RFC 3461 section 4): ``+`` ``=``, space and
    controls as ``+XX`` (upper-case hexadecimal), the rest as itself."""
    return "".join(char if ord(char) in _XTEXT_SAFE else f"+{ord(char):02X}" for char in text)


def utf8_addr_xtext(address: str) -> str:
    """``address`` as RFC 6533's utf-8-addr-xtext: what xtext would encode, and
    every character above ASCII, as ``\\x{HEX}``."""
    return "".join(char if ord(char) in _UNITEXT_SAFE else f"\\x{{{ord(char):X}}}" for char in address)


def check_options(where: str, dsn: object, require_tls: object) -> None:
    """TypeError naming the parameter when ``dsn`` is no :class:`DSN` (nor None)
    or ``require_tls`` is no bool."""
    if dsn is not None and not isinstance(dsn, DSN):
        raise TypeError(_messages.must_be(where, "dsn", "a syncsmtp.DSN or None", dsn))
    if not isinstance(require_tls, bool):
        raise TypeError(_messages.flag(where, "require_tls", require_tls))


def with_options(envelope: Envelope, message: MessageInput, dsn: DSN | None,
                 require_tls: bool) -> Envelope:
    """``envelope`` carrying ``dsn`` and ``require_tls`` to the engine.

    A message with REQUIRETLS must not also say ``TLS-Required: No`` (RFC
    8689 section 5: the two ask for opposite things): that is a
    :class:`~syncsmtp.MessageError`, before any connection.
    """
    if require_tls and _says_tls_not_required(message):
        raise MessageError(_messages.require_tls_with_header())
    if dsn is None and not require_tls:
        return envelope
    return replace(envelope, dsn=dsn, require_tls=require_tls)


def _says_tls_not_required(message: MessageInput) -> bool:
    if isinstance(message, email.message.Message):
        return any(str(value).strip().lower() == "no" for value in message.get_all("TLS-Required") or ())
    data = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    end = _HEADER_END.search(data)
    return _TLS_REQUIRED_NO.search(data[:end.start() if end else len(data)]) is not None
