"""Checks on addresses for the test server: where it may listen, and what an envelope may hold.

Plain functions without Twisted, so that ``syncsmtp serve`` checks its
``--listen`` with the same rule before it loads anything.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["LOOPBACK_HINT", "check_listen_host", "envelope_refusal", "is_loopback_host"]

#: The addresses :func:`is_loopback_host` takes, in words (for error messages).
LOOPBACK_HINT = "127.0.0.0/8, ::1 or 'localhost'"

# C0 controls and DEL: never valid in an RFC 5321 path or ESMTP parameter, and a
# CR or LF there (a lone one stays inside a line split on CRLF) would end a header
# line wherever the address is written out.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def is_loopback_host(host: str) -> bool:
    """True for an IPv4 address in 127.0.0.0/8, the IPv6 address ::1, or ``localhost``.

    Anything else (``0.0.0.0``, ``::``, ``""``, other names, IPv4-mapped
    IPv6) is not: each may listen on an interface other hosts reach.
    """
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address in ipaddress.IPv4Network("127.0.0.0/8")
    return address == ipaddress.IPv6Address("::1")


def envelope_refusal(path: bytes, parameters: bytes | None, *, recipient: bool) -> tuple[int, bytes] | None:
    """The reply refusing a MAIL FROM or RCPT TO whose path or parameters hold a
    control character, or None when they hold none."""
    if _CONTROL.search(path):
        if recipient:
            return 501, b"5.1.3 Bad recipient address syntax: control character in the address"
        return 501, b"5.1.7 Bad sender address syntax: control character in the address"
    if parameters and _CONTROL.search(parameters):
        return 501, b"5.5.4 Invalid parameters: control character"
    return None


def check_listen_host(host: str, allow_non_loopback: bool) -> None:
    """ValueError when ``host`` is not loopback and that was not allowed explicitly."""
    if not allow_non_loopback and not is_loopback_host(host):
        raise ValueError(
            f"host {host!r} is not a loopback address ({LOOPBACK_HINT}); the test server "
            "accepts any mail, so it listens elsewhere only with allow_non_loopback=True"
        )
