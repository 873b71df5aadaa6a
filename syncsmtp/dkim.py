"""DKIM signing (RFC 6376, RFC 8463) of outgoing messages (no Twisted here).

:class:`DKIM` holds a signing domain, a selector and a private key, checked
when it is made; a :class:`~syncsmtp.Policy` with ``dkim=`` set signs every
message it sends, in the caller's thread, over the bytes exactly as the server
receives them. The signing itself is dkimpy's (extra ``dkim``); the key is
read with ``cryptography``, which syncsmtp depends on anyway.
"""

from __future__ import annotations

import base64
import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import _messages
from .errors import MessageError

__all__ = ["DKIM"]

_ALGORITHMS: tuple[str, ...] = ("rsa-sha256", "ed25519-sha256")
_DEFAULT_HEADERS: tuple[str, ...] = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id",
    "content-description", "in-reply-to", "references",
    "list-id", "list-help", "list-unsubscribe", "list-unsubscribe-post", "list-subscribe",
    "list-post", "list-owner", "list-archive",
    "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-message-id",
)
_DEFAULT_SET = frozenset(name.encode("ascii") for name in _DEFAULT_HEADERS)
# Changed or added on the way (RFC 6376 section 5.4.1), or not sent at all: never signed.
_NEVER_SIGNED = frozenset({"return-path", "received", "comments", "keywords", "bcc", "resent-bcc",
                           "dkim-signature"})
# A DNS label of letters, digits and inner hyphens; names of such labels joined by dots.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# An RFC 5322 field name: printable ASCII but the colon.
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# RFC 8301: RSA keys shorter than 1024 bits are not to be used (2048 recommended).
_MIN_RSA_BITS = 1024
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE_BREAK = re.compile(rb"\r?\n")
_INSTALL = "pip install -e '.[dkim]' from a checkout, or the wheel with [dkim]"


class _Secret:
    """Key material that no repr shows."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "'<redacted>'"


@dataclass(frozen=True, slots=True)
class DKIM:
    """How to DKIM-sign every message a policy sends: give it as
    ``policy.with_options(dkim=syncsmtp.DKIM(domain, selector, private_key))``.

    ``domain`` is the signing domain (``d=``) and ``selector`` the selector
    (``s=``): the public key is published as a TXT record at
    ``<selector>._domainkey.<domain>`` (:attr:`dns_name`; its text is
    :attr:`dns_record`). ``private_key`` is a PEM private key (bytes or str,
    not encrypted): RSA (at least 1024 bits; 2048 is the usual size) signs
    with ``rsa-sha256``, Ed25519 with ``ed25519-sha256``. ``algorithm`` may
    name the one the key implies; by default it is taken from the key.

    Canonicalisation is relaxed/relaxed. ``headers`` lists the header fields
    to sign, in place of the default: those of :attr:`DEFAULT_HEADERS` that
    the message has, each occurrence, and From once more, so that no second
    From can be added. It must name From; Received, Return-Path, Bcc and
    DKIM-Signature are never signed.

    A message is signed in the thread that sends it, over its bytes exactly as
    the server receives them (CRLF line ends, DATA's dot-stuffing undone), so
    it is held in memory whole while it is signed and sent (see :doc:`dkim`).

    Everything is checked here, before any connection: a bad name, key or
    header list, or dkimpy not installed, is a :class:`~syncsmtp.MessageError`
    (a :class:`ValueError`). Signing needs dkimpy, and PyNaCl for Ed25519
    keys: the extra ``dkim`` installs both.

    The private key never appears in ``repr()``, ``str()`` or an error.
    """

    #: The header fields signed by default, those of them that the message has.
    DEFAULT_HEADERS: ClassVar[tuple[str, ...]] = _DEFAULT_HEADERS

    domain: str
    selector: str
    private_key: bytes | str = field(repr=False)
    headers: tuple[str, ...] | None = None
    algorithm: str | None = None
    # The key as dkimpy takes it, and the public key for the TXT record.
    _signing_key: _Secret = field(init=False, repr=False, compare=False)
    _public_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("domain", "selector"):
            object.__setattr__(self, name, _checked_name(name, getattr(self, name)))
        object.__setattr__(self, "headers", _checked_headers(self.headers))
        if self.algorithm is not None and self.algorithm not in _ALGORITHMS:
            raise MessageError(_messages.one_of("DKIM", "algorithm", _ALGORITHMS, self.algorithm))
        pem = self.private_key
        if isinstance(pem, str):
            pem = pem.encode("utf-8", "replace")
        if not isinstance(pem, bytes):
            raise MessageError(_messages.must_be("DKIM", "private_key", "a PEM private key (bytes or str)",
                                                 pem, secret=True))
        object.__setattr__(self, "private_key", pem)
        algorithm, signing_key, public_key = _load_key(pem, self.algorithm)
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "_signing_key", _Secret(signing_key))
        object.__setattr__(self, "_public_key", public_key)
        _require_dkimpy(algorithm)

    @property
    def dns_name(self) -> str:
        """Where the public key is published: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_record(self) -> str:
        """The TXT record to publish at :attr:`dns_name`:
        ``v=DKIM1; k=rsa; p=...`` (or ``k=ed25519``)."""
        kind = "rsa" if self.algorithm == "rsa-sha256" else "ed25519"
        return f"v=DKIM1; k={kind}; p={self._public_key}"

    def sign(self, message: bytes) -> bytes:
        """The ``DKIM-Signature`` header field (name, folded value, CRLF) for
        ``message``, the whole message as it goes on the wire (CRLF line
        ends, no dot-stuffing: what is signed must reach the receiver as it
        is). A send puts it first in the message; this is for signing
        outside a send. :class:`~syncsmtp.MessageError` when the
        message has no From header."""
        dkim = importlib.import_module("dkim")  # dkimpy, untyped; checked for when made
        include = _header_list(message, self.headers)
        assert self.algorithm is not None  # set from the key in __post_init__
        try:
            header = dkim.sign(
                message, self.selector.encode("ascii"), self.domain.encode("ascii"),
                self._signing_key.value, canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=self.algorithm.encode("ascii"), include_headers=include,
            )
        except dkim.KeyFormatError:
            raise MessageError(f"the DKIM key for {self.domain} cannot sign") from None
        except dkim.DKIMException as error:
            raise MessageError(f"the message cannot be DKIM-signed: {error}") from None
        assert isinstance(header, bytes)
        return header

    def __repr__(self) -> str:
        shown = f"DKIM(domain={self.domain!r}, selector={self.selector!r}, private_key='<redacted>'"
        if self.headers is not None:
            shown += f", headers={self.headers!r}"
        return shown + f", algorithm={self.algorithm!r})"

    __str__ = __repr__


def _checked_name(name: str, value: object) -> str:
    """A domain or selector as it goes in the signature: LDH labels, a
    non-ASCII domain in its IDNA (A-label) form."""
    text = value
    if isinstance(text, str) and not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            text = value
    if not isinstance(text, str) or len(text) > 253 or not _NAME.fullmatch(text):
        raise MessageError(_messages.must_be(
            "DKIM", name, "a DNS name of letters, digits, hyphens and dots (such as 'example.com')",
            value,
        ))
    return text


def _checked_headers(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    expected = "a list of header field names with From among them"
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise MessageError(_messages.must_be("DKIM", "headers", expected, value))
    names = tuple(value)
    if not all(isinstance(name, str) and _FIELD_NAME.fullmatch(name) for name in names):
        raise MessageError(_messages.must_be("DKIM", "headers", expected, value))
    lowered = tuple(name.lower() for name in names)
    if "from" not in lowered:
        raise MessageError(_messages.must_be("DKIM", "headers", expected, value))
    never = sorted(set(lowered) & _NEVER_SIGNED)
    if never:
        raise MessageError(
            f"DKIM headers must not name {', '.join(never)}: "
            f"{', '.join(sorted(_NEVER_SIGNED))} are changed or added on the way, or not sent"
        )
    return lowered


def _load_key(pem: bytes, algorithm: str | None) -> tuple[str, bytes, str]:
    """The algorithm, the key as dkimpy takes it (PKCS#1 PEM for RSA, the
    base64 seed for Ed25519) and the public key as the TXT record's ``p=``."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key: Any = None
    problem = ""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        problem = "a PEM private key that is not encrypted (decrypt it first: openssl pkey -in key.pem)"
    except (ValueError, UnsupportedAlgorithm):
        problem = "a PEM private key (RSA or Ed25519)"
    if problem:  # raised here, outside the except block: no chained traceback near the key
        raise MessageError(_messages.must_be("DKIM", "private_key", problem, pem, secret=True))
    plain = serialization.NoEncryption()
    if isinstance(key, rsa.RSAPrivateKey):
        found = "rsa-sha256"
        if key.key_size < _MIN_RSA_BITS:
            raise MessageError(
                f"DKIM private_key is an RSA key of {key.key_size} bits; DKIM needs at least "
                f"{_MIN_RSA_BITS} (RFC 8301), and 2048 is the usual size"
            )
        signing = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL, plain)
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        found = "ed25519-sha256"
        signing = base64.b64encode(key.private_bytes(serialization.Encoding.Raw,
                                                     serialization.PrivateFormat.Raw, plain))
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raise MessageError(
            f"DKIM private_key is not an RSA or Ed25519 key (it is {_kind(key)}); DKIM signs with "
            "an RSA key (rsa-sha256) or an Ed25519 key (ed25519-sha256)"
        )
    if algorithm is not None and algorithm != found:
        raise MessageError(
            f"DKIM algorithm {algorithm!r} does not match the key, which signs with {found!r}; "
            "leave algorithm=None to take it from the key"
        )
    return found, signing, base64.b64encode(public).decode("ascii")


def _kind(key: object) -> str:
    """What kind of key ``key`` is, in words (``"an EC key"``)."""
    name = type(key).__name__.lstrip("_").removesuffix("PrivateKey") or "other"
    return f"an {name} key" if name[:1] in "AEIOU" else f"a {name} key"


def _require_dkimpy(algorithm: str) -> None:
    needed = [("dkim", "dkimpy")]
    if algorithm == "ed25519-sha256":
        needed.append(("nacl.signing", "PyNaCl"))
    missing = []
    for module, package in needed:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise MessageError(
            f"DKIM signing needs {' and '.join(missing)}, which is not installed: install "
            f"syncsmtp with the dkim extra ({_INSTALL})"
        )


def _header_list(message: bytes, headers: tuple[str, ...] | None) -> list[bytes]:
    """The ``h=`` list for ``message``: ``headers``, or the default ones the
    message has, each occurrence, and From once more."""
    end = _HEADER_END.search(message)
    head = message[: end.start()] if end else message
    present = [
        line.partition(b":")[0].strip().lower()
        for line in _LINE_BREAK.split(head)
        if line and line[:1] not in (b" ", b"\t")
    ]
    if b"from" not in present:
        raise MessageError(
            "the message has no From header, and DKIM signs From (RFC 6376): set one to sign it"
        )
    if headers is not None:
        return [name.encode("ascii") for name in headers]
    return [name for name in present if name in _DEFAULT_SET] + [b"from"]
