"""What a server's reply line may look like, and how much of a reply the client
will hold (plain functions: no Twisted here).

RFC 5321 section 4.2: a reply line is a three-digit code, then a space (the
last line) or a hyphen (a continuation line), then text. The first digit is
2 to 5 (1yz is never used in SMTP), the second 0 to 5. Anything else is not a
reply; after the final dot it must not be read as a refusal, because the
server may have accepted the message all the same.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "is_refusal",
    "reply_line",
]

#: The longest reply line read (RFC 5321 allows 512 octets; servers exceed
#: it in EHLO keywords and long refusals, so the client is lenient).
MAX_LINE_BYTES = 8192
#: The most lines one reply may have (an EHLO reply has a few dozen).
MAX_REPLY_LINES = 512
#: The most bytes of text one reply may hold, all its lines together.
MAX_REPLY_BYTES = 65536

#: Matches a well-formed reply line (without its CRLF), else None: a pattern's
#: match rather than a Python function, as every line read goes through it.
reply_line = re.compile(rb"[2-5][0-5][0-9](?:[ -]|\Z)").match


def is_refusal(code: int) -> bool:
    """True for a 4xx or 5xx code: the request was not carried out."""
    return 400 <= code < 600
