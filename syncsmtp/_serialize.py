"""An email message as the parts of its wire form (no Twisted here).

The parts join to exactly the bytes that :class:`email.generator.BytesGenerator`
writes with ``linesep="\\r\\n"`` (the tests hold this module to that on many
shapes of message), but cost a fraction of the time and memory:

- a header whose value fits on one ASCII line is written straight from its
  parse tree; the email package's folding machinery, most of the cost of a
  small message, runs only for the headers that really need folding;
- an ASCII body stays the ``str`` the email package holds, and is encoded a
  slice at a time as it is sent (see :mod:`syncsmtp._wire`), so a large
  message is never copied whole;
- the caller's message is never modified (``BytesGenerator`` writes a new
  multipart boundary into it) or copied whole.

Whatever this module does not handle itself goes through ``BytesGenerator``:
a policy other than :class:`email.policy.EmailPolicy` (``compat32``),
``message/*`` and ``multipart/signed`` parts, 8-bit text under a 7-bit policy,
a message class that writes its own headers.
"""

from __future__ import annotations

import copy
import email._header_value_parser as parser
import email.generator
import email.headerregistry as registry
import email.message
import email.policy
import io
import random
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["Part", "serialize"]

#: A piece of the message: bytes, or ASCII text to be encoded as it is sent.
#: Line breaks in either may be CR, LF or CRLF: the wire encoding makes each CRLF,
#: as ``BytesGenerator`` does with every body.
Part = bytes | str

_LINESEP = "\r\n"
_ENCODED_LINESEP = b"\r\n"
# Token types whose folding _refold_parse_tree treats specially even when short.
_SPECIAL_TOKENS = frozenset({"ptext", "mime-parameters"})
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))
# Header classes whose value (their str) is by construction the str of their
# parse tree, which spares walking the tree. The registry makes a class per
# header type with the stdlib class first among its bases; a subclass of its
# own is not taken on trust.
_VALUE_IS_TREE_TEXT = frozenset({
    registry.UnstructuredHeader, registry.UniqueUnstructuredHeader,
    registry.DateHeader, registry.UniqueDateHeader, registry.MIMEVersionHeader,
    registry.ContentTypeHeader, registry.ContentDispositionHeader,
    registry.ContentTransferEncodingHeader, registry.MessageIDHeader,
})


def serialize(
    message: email.message.Message, *, utf8: bool = False, skip: frozenset[str] = frozenset()
) -> list[Part]:
    """The wire form of ``message`` without the top-level headers named in
    ``skip`` (lower case), with ``utf8`` as in ``policy.clone(utf8=True)``.

    Raises what ``BytesGenerator`` raises for a message it cannot write
    (``TypeError``, ``ValueError``, ``UnicodeError``)."""
    out: list[Part] = []
    policy = _wire_policy(message.policy, utf8)
    _write(message, policy, out, skip)
    return out


# The last policy made for the wire, by the message's policy and utf8: most
# programs send every message under one policy, and cloning it is a good part
# of the cost of a small message. Kept for the stdlib's own policy classes
# only, whose instances cannot be changed; a subclass is cloned each time.
_last_wire_policy: tuple[Any, bool, Any] = (None, False, None)
_IMMUTABLE_POLICIES = (email.policy.EmailPolicy, email.policy.Compat32)


def _wire_policy(policy: Any, utf8: bool) -> Any:
    global _last_wire_policy
    given, given_utf8, made = _last_wire_policy  # one read: other threads replace it whole
    if given is policy and given_utf8 == utf8:
        return made
    made = policy.clone(linesep=_LINESEP)
    if utf8:
        made = made.clone(utf8=True)
    if type(policy) in _IMMUTABLE_POLICIES:
        _last_wire_policy = (policy, utf8, made)
    return made


def _generate(message: email.message.Message, policy: Any, skip: frozenset[str]) -> bytes:
    message = _unshared(message)
    if skip:
        message = copy.copy(message)  # Message.__delitem__ leaves the caller's headers alone
        for name in skip:
            del message[name]
    buffer = io.BytesIO()
    email.generator.BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(message)
    return buffer.getvalue()


def _unshared(message: email.message.Message) -> email.message.Message:
    """``message``, or a copy of each part BytesGenerator would write a new
    boundary into and of the parts above it (sharing all else)."""
    payload = _payload(message)
    changed = False
    if isinstance(payload, list):
        payload = [_unshared(part) if isinstance(part, email.message.Message) else part for part in payload]
        changed = any(new is not old for new, old in zip(payload, _payload(message), strict=True))
    if changed or (message.get_content_maintype() == "multipart" and not message.get_boundary()):
        message = copy.copy(message)
        message.set_payload(payload)
    return message


def _write(message: email.message.Message, policy: Any, out: list[Part], skip: frozenset[str]) -> None:
    if type(policy) is not email.policy.EmailPolicy or hasattr(message, "_write_headers"):
        out.append(_generate(message, policy, skip))
        return
    main = message.get_content_maintype()
    if main == "multipart":
        if message.get_content_subtype() == "signed" or not _write_multipart(message, policy, out, skip):
            out.append(_generate(message, policy, skip))
        return
    payload = _payload(message)
    if main == "message" or not (payload is None or isinstance(payload, str)):
        out.append(_generate(message, policy, skip))
        return
    if payload and not payload.isascii() and policy.cte_type == "7bit":
        # BytesGenerator re-encodes 8-bit text here, changing the headers.
        out.append(_generate(message, policy, skip))
        return
    _write_headers(message, policy, out, skip)
    if payload:
        out.append(_text(payload))


def _payload(message: email.message.Message) -> Any:
    # The payload as stored, which is what BytesGenerator reads too. Not
    # vars(message): that would give each caller's message a dict of its own
    # (CPython 3.11+ keeps instance attributes without one until asked).
    return getattr(message, "_payload", None)


def _text(text: str) -> Part:
    """ASCII text as it is (encoded later, a slice at a time); other text as
    BytesGenerator encodes it: surrogate escapes stand for raw 8-bit bytes,
    and any other character is a UnicodeEncodeError."""
    return text if text.isascii() else text.encode("ascii", "surrogateescape")


def _write_multipart(
    message: email.message.Message, policy: Any, out: list[Part], skip: frozenset[str]
) -> bool:
    """A multipart message, with a new boundary (in a copy) when it has none;
    False when its payload is not a list of parts."""
    subparts = _payload(message)
    if subparts is None:
        subparts = []
    if not isinstance(subparts, list):
        return False
    bodies: list[list[Part]] = []
    for subpart in subparts:
        body: list[Part] = []
        _write(subpart, policy, body, frozenset())
        bodies.append(body)
    boundary = message.get_boundary()
    if not boundary:
        boundary = _new_boundary(bodies)
        message = copy.copy(message)  # set_boundary replaces the copy's header list only
        message.set_boundary(boundary)
    _write_headers(message, policy, out, skip)
    if message.preamble is not None:
        out.extend((_text(message.preamble), _LINESEP))
    out.append(_text("--" + boundary + _LINESEP))
    for index, body in enumerate(bodies):
        if index:
            out.append(_text(_LINESEP + "--" + boundary + _LINESEP))
        out.extend(body)
    out.append(_text(_LINESEP + "--" + boundary + "--" + _LINESEP))
    if message.epilogue is not None:
        out.append(_text(message.epilogue))
    return True


def _new_boundary(bodies: list[list[Part]]) -> str:
    """A random boundary, as the email package makes them, found in no part."""
    base = "=" * 15 + f"{random.randrange(sys.maxsize):0{_BOUNDARY_DIGITS}d}" + "=="
    boundary, counter = base, 0
    while any(_contains(part, boundary) for body in bodies for part in body):
        boundary = f"{base}.{counter}"
        counter += 1
    return boundary


def _contains(part: Part, text: str) -> bool:
    return (text in part) if isinstance(part, str) else (text.encode("ascii") in part)


def _write_headers(
    message: email.message.Message, policy: Any, out: list[Part], skip: frozenset[str]
) -> None:
    maxlen = policy.max_line_length or sys.maxsize
    fold: Callable[[str, Any], bytes] = policy.fold_binary
    lines: list[bytes] = []
    for name, value in message.raw_items():
        if skip and name.lower() in skip:
            continue
        lines.append(_one_line(value, maxlen) or fold(name, value))
    lines.append(_ENCODED_LINESEP)
    out.append(b"".join(lines))


def _one_line(value: Any, maxlen: int) -> bytes | None:
    """``Name: value`` when the header fits on one ASCII line as is: then the
    email package's folding writes exactly its parse tree after the name."""
    tree = getattr(value, "_parse_tree", None)
    if not tree or tree.token_type in _SPECIAL_TOKENS:
        return None
    text = str.__str__(value) if type(value).__bases__[0] in _VALUE_IS_TREE_TEXT else _tree_text(tree)
    line = f"{value.name}: {text}"
    # Printable ASCII has no CR or LF; a TAB or another control character
    # takes the email package's path, which writes what it writes.
    if len(line) > maxlen or not (line.isascii() and line.isprintable()):
        return None
    return (line + _LINESEP).encode("ascii")


# What str() of a node runs, compared by identity (typed loosely for that).
_LIST_TEXT: object = parser.TokenList.__str__
_TERMINAL_TEXT: object = str.__str__


def _tree_text(tree: Any) -> str:
    """``str(tree)``, walked with a stack instead of one generator per node (an
    address header's tree has a few dozen; this takes about half the time).
    A node whose class writes itself differently (a comment, a quoted
    string) is asked for its ``str``."""
    out: list[str] = []
    stack = [iter(tree)]
    while stack:
        for node in stack[-1]:
            text: object = type(node).__str__
            if text is _LIST_TEXT:
                stack.append(iter(node))
                break
            out.append(node if text is _TERMINAL_TEXT else str(node))
        else:
            stack.pop()
    return "".join(out)
