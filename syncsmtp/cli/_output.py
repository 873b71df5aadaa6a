"""What the commands print: colour when the terminal takes it, never a secret, and no
terminal control sequence from the other side (see :func:`printable`)."""

from __future__ import annotations

import base64
import os
import re
import sys
import textwrap
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TextIO
from urllib.parse import quote

__all__ = ["COLOR_MODES", "Console", "paragraph", "printable", "use_color"]

COLOR_MODES = ("auto", "always", "never")

_CODES = {
    "bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34",
    "magenta": "35", "cyan": "36",
}
_REPLY = re.compile(r"^S: ([2-5])\d\d")
# Secrets shorter than this are not searched for: they would garble the output.
_MIN_SECRET = 4


def paragraph(text: str) -> str:
    """``text`` wrapped for ``--help`` (whose raw formatter keeps the examples' line breaks)."""
    return textwrap.fill(text, 79)


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal: every character that is not printable (C0 and
    C1 controls such as ESC and CSI, DEL, bidirectional overrides, line separators,
    lone surrogates) written as Python writes it in a string literal (``\\x1b``,
    ``\\u202e``); printable Unicode and spaces as they are. Remote input (envelopes,
    headers, replies) goes through it, so that it cannot clear the screen, retitle
    the window or hide text."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() or unicodedata.category(char) == "Zs" or (keep_newlines and char == "\n")
        else ascii(char)[1:-1]
        for char in text
    )


def use_color(mode: str, stream: TextIO) -> bool:
    """Colour for ``stream``: ``always``, ``never``, or (``auto``) when it is a
    terminal, NO_COLOR is unset or empty (https://no-color.org) and TERM is not dumb."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(
        isatty is not None and isatty()
        and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    )


class Console:
    """stdout and stderr for one command: styled when allowed, and redacted.

    Every line goes through :meth:`redact`, which replaces each registered
    secret (and its base64 and percent-encoded forms) with ``<redacted>``:
    the library redacts its transcripts already; this is a second guard for
    anything else a command prints (an error message that quotes input).
    """

    def __init__(self, color: str = "auto", stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._color_out = use_color(color, self.stdout)
        self._color_err = use_color(color, self.stderr)
        self._secrets: list[str] = []

    def add_secret(self, secret: str | None) -> None:
        """Never print ``secret`` (nor its base64 or URL-encoded forms)."""
        if not secret or len(secret) < _MIN_SECRET:
            return
        forms = {secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()}
        self._secrets.extend(sorted(forms - set(self._secrets), key=len, reverse=True))

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``<redacted>``."""
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def style(self, text: str, *styles: str, stderr: bool = False) -> str:
        """``text`` in the given styles (names of :data:`_CODES`) when colour is on."""
        if not styles or not (self._color_err if stderr else self._color_out):
            return text
        codes = ";".join(_CODES[name] for name in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def out(self, text: str = "") -> None:
        """Print a line (or lines) on stdout."""
        print(self.redact(text), file=self.stdout, flush=True)

    def err(self, text: str) -> None:
        """Print a line (or lines) on stderr."""
        print(self.redact(text), file=self.stderr, flush=True)

    def error(self, message: str, hint: str | None = None) -> None:
        """``error: message`` on stderr, and a hint line when there is one (both may
        quote a server's reply: control characters are escaped)."""
        message = printable(message, keep_newlines=True)
        self.err(f"{self.style('error:', 'red', 'bold', stderr=True)} {message}")
        if hint:
            self.err(f"{self.style('hint:', 'yellow', stderr=True)} {printable(hint, keep_newlines=True)}")

    def transcript(self, lines: Iterable[str], *, stderr: bool = False, indent: str = "") -> None:
        """An SMTP transcript: client lines in cyan, server replies by class
        (2xx/3xx green, 4xx yellow, 5xx red), redactions in magenta; control
        characters escaped (a server's reply is remote input)."""
        write = self.err if stderr else self.out
        for line in lines:
            write(indent + self._transcript_line(printable(self.redact(line)), stderr))

    def _transcript_line(self, line: str, stderr: bool) -> str:
        if line.startswith("C: "):
            if "<redacted>" in line:
                head, _, tail = line.partition("<redacted>")
                return (self.style(head, "cyan", stderr=stderr)
                        + self.style("<redacted>", "magenta", stderr=stderr)
                        + self.style(tail, "cyan", stderr=stderr))
            return self.style(line, "cyan", stderr=stderr)
        match = _REPLY.match(line)
        if match:
            colour = {"2": "green", "3": "green", "4": "yellow", "5": "red"}[match.group(1)]
            return self.style(line, colour, stderr=stderr)
        return self.style(line, "dim", stderr=stderr)

    def table(self, rows: Sequence[tuple[str, str]], *, indent: str = "") -> None:
        """Two columns, the names padded to one width (a value may hold line breaks)."""
        if not rows:
            return
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            lines = value.split("\n") or [""]
            self.out(f"{indent}{self.style(name.ljust(width), 'bold')}  {lines[0]}")
            for more in lines[1:]:
                self.out(f"{indent}{' ' * width}  {more}")
