"""What an EHLO reply announces (pure functions: no Twisted here)."""

from __future__ import annotations

__all__ = ["Capabilities", "offered_mechanisms", "parse_ehlo", "size_limit"]

#: Keyword (upper-cased) -> its parameters, or None.
Capabilities = dict[bytes, "bytes | None"]


def parse_ehlo(text: bytes) -> Capabilities:
    """The keywords of an EHLO reply's text (its lines joined with LF, the
    first line being the server's name)."""
    items: Capabilities = {}
    for line in text.splitlines()[1:]:
        words = line.split(None, 1)
        if words:
            items[words[0].upper()] = words[1] if len(words) > 1 else None
    return items


def offered_mechanisms(items: Capabilities) -> set[bytes]:
    """The AUTH mechanisms announced, as ``AUTH X Y`` or (old servers) ``AUTH=X Y``."""
    offered: set[bytes] = set()
    for key, value in items.items():
        if key == b"AUTH" and value:
            offered.update(value.upper().split())
        elif key.startswith(b"AUTH="):
            offered.update(key[5:].split())
            if value:
                offered.update(value.upper().split())
    return offered


def size_limit(items: Capabilities) -> int | None:
    """The SIZE limit in bytes; None when none is announced (or it is 0: no fixed limit)."""
    value = items.get(b"SIZE")
    if value and value.isdigit() and int(value) > 0:
        return int(value)
    return None
