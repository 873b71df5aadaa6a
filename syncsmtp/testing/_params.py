"""The test server's judgement of MAIL FROM and RCPT TO parameters (plain functions:
no Twisted here).

Most parameters are taken as they come and recorded. These are checked, as a
server that implements them would: SIZE against the announced limit; the DSN
parameters (RFC 3461: RET and ENVID on MAIL FROM, NOTIFY and ORCPT on RCPT TO)
and REQUIRETLS (RFC 8689) are refused with 555 when the server does not
announce the extension on this connection, and with 501 when malformed.
"""

from __future__ import annotations

import re

from ._addresses import envelope_refusal
from ._core import SessionSettings

__all__ = ["announced", "command_refusal", "mail_refusal", "rcpt_refusal"]

Refusal = tuple[int, bytes]

_TOO_BIG = (552, b"5.3.4 Message size exceeds fixed limit")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+")
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})
# addr-type ";" xtext, the type an atom (rfc822, utf-8, x400, ...).
_ORCPT = re.compile(r"([A-Za-z0-9-]+);(.+)")


def command_refusal(match: re.Match[bytes] | None, settings: SessionSettings, secure: bool, *,
                    recipient: bool) -> tuple[tuple[str, ...], Refusal | None]:
    """The parameters of a MAIL FROM (or, with ``recipient``, RCPT TO) matched by
    Twisted's pattern, and the reply refusing the command, or None.

    Refused: a control character in the path or after it (Twisted's parser takes
    one inside quotes, and a lone LF there would become a header line wherever it
    is saved), and parameters as :func:`mail_refusal` and :func:`rcpt_refusal`
    judge them. Without a match, Twisted answers the syntax error itself."""
    if match is None:
        return (), None
    refusal = envelope_refusal(match.group("path"), match.string[match.end("path"):], recipient=recipient)
    options = tuple(option.decode("utf-8", "replace") for option in (match.group("opts") or b"").split())
    if refusal is None:
        refusal = (rcpt_refusal if recipient else mail_refusal)(options, settings, secure)
    return options, refusal


def announced(keyword: str, settings: SessionSettings, secure: bool) -> bool:
    """Whether the EHLO reply announces ``keyword`` on this connection: as listed in
    the server's extensions, except REQUIRETLS, announced only once TLS is in use
    (RFC 8689 section 3)."""
    return settings.announces(keyword) and (secure or keyword != "REQUIRETLS")


def _unsupported(name: str) -> Refusal:
    return 555, f"5.5.4 {name} parameter not supported".encode()


def _syntax(name: str) -> Refusal:
    return 501, f"5.5.4 Bad {name} parameter syntax".encode()


def mail_refusal(options: tuple[str, ...], settings: SessionSettings, secure: bool) -> Refusal | None:
    """The reply refusing MAIL FROM for its parameters, or None when they are acceptable."""
    seen: set[str] = set()
    limit = settings.size_limit()
    for option in options:
        name, _, value = option.partition("=")
        name = name.upper()
        if name == "SIZE" and limit and value.isdigit() and int(value) > limit:
            return _TOO_BIG
        if name in ("RET", "ENVID"):
            if not announced("DSN", settings, secure):
                return _unsupported(name)
            valid = value.upper() in ("FULL", "HDRS") if name == "RET" else _XTEXT.fullmatch(value)
            if not valid or name in seen:
                return _syntax(name)
        elif name == "REQUIRETLS":
            if not announced("REQUIRETLS", settings, secure):
                return _unsupported(name)
            if value or name in seen:
                return _syntax(name)
        seen.add(name)
    return None


def rcpt_refusal(options: tuple[str, ...], settings: SessionSettings, secure: bool) -> Refusal | None:
    """The reply refusing RCPT TO for its parameters, or None when they are acceptable."""
    seen: set[str] = set()
    for option in options:
        name, _, value = option.partition("=")
        name = name.upper()
        if name not in ("NOTIFY", "ORCPT"):
            continue
        if not announced("DSN", settings, secure):
            return _unsupported(name)
        if name == "NOTIFY":
            words = value.upper().split(",")
            valid = words == ["NEVER"] or (set(words) <= _NOTIFY and len(set(words)) == len(words))
        else:
            match = _ORCPT.fullmatch(value)
            valid = match is not None and _XTEXT.fullmatch(match.group(2)) is not None
        if not valid or name in seen:
            return _syntax(name)
        seen.add(name)
    return None
