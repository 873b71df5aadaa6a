"""What a send or a check returns: the server's replies and what it offers,
as plain data (no Twisted here)."""

from __future__ import annotations

import datetime
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import SMTPError
    from .policy import TLSMode

__all__ = ["Capabilities", "CertificateInfo", "CheckResult", "Reply", "SendReport", "SendResult", "TLSInfo",
           "ThrottleEvent"]

_ENHANCED_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: the three-digit ``code``, the RFC 3463 ``enhanced``
    status code when the server sent one (``"5.7.8"``), and the ``text``.

    A multi-line reply keeps its lines joined with ``"\\n"``; the enhanced
    code is taken off the front of each line of ``text``.
    """

    code: int
    enhanced: str | None
    text: str

    @classmethod
    def parse(cls, code: int, text: str | bytes) -> Reply:
        """Build a reply from a code and the text after it, splitting off an
        enhanced status code that agrees with the reply's class."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        match = _ENHANCED_STATUS.match(text)
        if not match or match.group(1) != str(code)[:1]:
            return cls(code, None, text)
        enhanced = ".".join(match.groups())
        if "\n" not in text:  # one line, as most replies are
            return cls(code, enhanced, text[match.end():])
        lines = [_ENHANCED_STATUS.sub("", line, count=1) for line in text.split("\n")]
        return cls(code, enhanced, "\n".join(lines))

    @property
    def transient(self) -> bool:
        """True for a 4xx reply: the same request may succeed later."""
        return 400 <= self.code < 500

    @property
    def ok(self) -> bool:
        """True for a 2xx or 3xx reply."""
        return 200 <= self.code < 400

    def __str__(self) -> str:
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        if self.text:
            parts.append(self.text.replace("\n", " / "))
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """The protocol version and cipher suite a connection negotiated."""

    version: str
    cipher: str

    def __str__(self) -> str:
        return f"{self.version} {self.cipher}"


#: Shared by every result that refused nobody (most): read-only, so one will do.
_NO_REFUSALS: Mapping[str, Reply] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one message handed to a server.

    ``accepted`` lists the recipients the server took, ``refused`` maps each
    refused recipient to the server's :class:`Reply` (empty when all were
    taken), and ``reply`` is the server's answer to the message data, which
    often carries its queue id. ``transcript`` is the SMTP conversation with
    credentials redacted and message data summarised.
    """

    accepted: tuple[str, ...]
    refused: Mapping[str, Reply]
    reply: Reply
    message_id: str | None
    elapsed: float
    tls: TLSInfo | None
    auth_mechanism: str | None
    host: str = ""
    port: int = 0
    transcript: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        # Read-only, so a result shared between threads cannot be altered.
        refused = MappingProxyType(dict(self.refused)) if self.refused else _NO_REFUSALS
        object.__setattr__(self, "refused", refused)

    def __reduce__(self) -> tuple[Any, ...]:
        # A read-only mapping does not pickle; multiprocessing needs results to.
        return (
            SendResult,
            (self.accepted, dict(self.refused), self.reply, self.message_id, self.elapsed,
             self.tls, self.auth_mechanism, self.host, self.port, self.transcript),
        )

    def _rows(self) -> list[tuple[str, str]]:
        rows = [
            ("server", f"{self.host}:{self.port}"),
            ("accepted", ", ".join(self.accepted) or "none"),
        ]
        for address, reply in self.refused.items():
            rows.append(("refused", f"{address}: {reply}"))
        rows += [
            ("reply", str(self.reply)),
            ("message id", self.message_id or "none"),
            ("TLS", str(self.tls) if self.tls else "none (plaintext)"),
            ("auth", self.auth_mechanism or "none"),
            ("elapsed", f"{self.elapsed * 1000:.1f} ms"),
        ]
        return rows

    def __str__(self) -> str:
        return _text_table(self._rows())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython and Jupyter show the same table as :func:`str` as plain text."""
        printer.text(str(self))

    def _repr_html_(self) -> str:
        """A compact table for Jupyter."""
        return _html_table(self._rows(), "syncsmtp-result")


@dataclass(frozen=True, slots=True)
class SendReport:
    """The outcome of :meth:`~syncsmtp.Mailer.send_many`.

    ``results`` has one entry per input message, in input order: its
    :class:`SendResult`, or the :class:`~syncsmtp.SMTPError` it failed with
    (a :class:`~syncsmtp.MessageError` for input that was never sent).
    ``retries`` counts the extra attempts made for transient failures.

    ``throttled`` holds the server's throttling replies during the batch
    (:class:`ThrottleEvent`, oldest first), and ``waited`` the seconds during
    which messages were ready but held back by the Mailer, for its ``rate``
    or for a pause after a throttling reply. Both cover every message the
    Mailer sent meanwhile, from this batch or from other threads.
    """

    results: tuple[SendResult | Exception, ...]
    retries: int
    elapsed: float
    throttled: tuple[ThrottleEvent, ...] = ()
    waited: float = 0.0

    @property
    def sent(self) -> int:
        """How many messages the server accepted (for at least one recipient)."""
        return sum(isinstance(result, SendResult) for result in self.results)

    @property
    def failed(self) -> tuple[tuple[int, Exception], ...]:
        """``(index, error)`` for every message that was not sent."""
        return tuple(
            (index, result) for index, result in enumerate(self.results) if not isinstance(result, SendResult)
        )

    @property
    def refused_recipients(self) -> int:
        """Recipients refused within messages that were sent to others."""
        return sum(len(result.refused) for result in self.results if isinstance(result, SendResult))

    def _failure_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, error in self.failed:
            counts[type(error).__name__] = counts.get(type(error).__name__, 0) + 1
        return counts

    def __str__(self) -> str:
        failures = ", ".join(f"{name}: {count}" for name, count in sorted(self._failure_counts().items()))
        return (
            f"{len(self.results)} messages: {self.sent} sent, {len(self.failed)} failed"
            + (f" ({failures})" if failures else "")
            + f", {self.refused_recipients} recipients refused, {self.retries} retries, "
            f"{self.elapsed:.2f} s"
            + (f", {len(self.throttled)} throttling replies" if self.throttled else "")
            + (f", {self.waited:.2f} s held back" if self.waited else "")
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython and Jupyter show the counts, then each failure, as plain text."""
        printer.text(str(self))
        for index, error in self.failed[:50]:
            printer.text(f"\n  #{index} {type(error).__name__}: {error}")
        for event in self.throttled[:20]:
            printer.text(f"\n  throttled {event}")

    def _repr_html_(self) -> str:
        """A compact table for Jupyter: the counts, then each failure."""
        rows = [
            ("messages", str(len(self.results))),
            ("sent", str(self.sent)),
            ("failed", str(len(self.failed))),
            ("recipients refused", str(self.refused_recipients)),
            ("retries", str(self.retries)),
            ("elapsed", f"{self.elapsed:.2f} s"),
            ("throttling replies", str(len(self.throttled))),
            ("held back", f"{self.waited:.2f} s"),
        ]
        rows += [(f"#{index}", f"{type(error).__name__}: {error}") for index, error in self.failed[:50]]
        return _html_table(rows, "syncsmtp-report")


@dataclass(frozen=True, slots=True)
class ThrottleEvent:
    """A reply by which the server asked the Mailer to slow down (such as
    ``421 4.7.0 Try again later`` or ``454 Throttling failure``): ``at``, in
    seconds from the start of the batch, the ``reply``, and the ``pause``
    it started, in seconds (0 when a pause was already in force)."""

    at: float
    reply: Reply
    pause: float

    def __str__(self) -> str:
        return f"+{self.at:.2f} s: {self.reply} (paused {self.pause:g} s)"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one EHLO reply announced: each ``keyword`` (upper-cased, such as
    ``"PIPELINING"`` or ``"AUTH"``) and its parameters (``"PLAIN LOGIN"``,
    or None when it has none), in the server's order. Read-only."""

    keywords: Mapping[str, str | None]

    def __post_init__(self) -> None:
        object.__setattr__(self, "keywords", MappingProxyType(dict(self.keywords)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Capabilities, (dict(self.keywords),))

    @property
    def size_limit(self) -> int | None:
        """The SIZE limit in bytes; None when SIZE is not announced, 0 when it has no limit."""
        if "SIZE" not in self.keywords:
            return None
        value = (self.keywords["SIZE"] or "0").strip()
        return int(value) if value.isdigit() else 0

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        """The AUTH mechanisms offered (``AUTH=`` of old servers included), in the server's order."""
        names: list[str] = []
        for key, value in self.keywords.items():
            words: list[str] = []
            if key == "AUTH":
                words = (value or "").upper().split()
            elif key.startswith("AUTH="):
                words = [key[5:], *(value or "").upper().split()]
            names += [word for word in words if word not in names]
        return tuple(names)

    def offers(self, keyword: str) -> bool:
        """Whether ``keyword`` (such as ``"STARTTLS"``, any case) was announced."""
        return keyword.upper() in self.keywords


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """The certificate the server presented in the TLS handshake: ``subject``
    and ``issuer`` (RFC 4514 strings), validity (``not_before``,
    ``not_after``, aware datetimes in UTC), ``alt_names`` (``"DNS:name"``,
    ``"IP:address"``), ``serial`` (hexadecimal) and its ``sha256``
    fingerprint (colon-separated hexadecimal pairs)."""

    subject: str
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    alt_names: tuple[str, ...]
    serial: str
    sha256: str

    def days_left(self, now: datetime.datetime | None = None) -> float:
        """Days until it expires (negative once it has), from ``now`` (default: the present)."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return (self.not_after - now).total_seconds() / 86400


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What :func:`syncsmtp.check` learnt about a server, as far as it got.

    ``greeting`` is the server's first reply. ``capabilities_before_tls`` is
    the EHLO reply before STARTTLS (None with implicit TLS, or when the check
    did not get that far), ``capabilities_after_tls`` the one after (None
    without TLS); :attr:`capabilities` is the one a send would go by.
    ``tls`` is the negotiated version and cipher, ``certificate`` what the
    server presented; ``certificate_verified`` is True when its chain and
    host name verified, False when they did not (``certificate`` then comes
    from a second session without verification and without AUTH), None when
    not checked (no TLS, or ``verify=False``). ``auth_attempted`` says
    whether the policy's credentials were tried, ``auth_mechanism`` is the
    mechanism that logged in (None: not tried, or refused). ``error`` is the
    first failure, the :class:`~syncsmtp.SMTPError` a send would have raised;
    None when everything the policy asks for worked. ``transcript`` is the
    conversation, credentials redacted; it is not part of ``repr()``.

    No password or credential is part of it.
    """

    host: str
    port: int
    tls_mode: TLSMode
    greeting: Reply | None
    capabilities_before_tls: Capabilities | None
    capabilities_after_tls: Capabilities | None
    tls: TLSInfo | None
    certificate: CertificateInfo | None
    certificate_verified: bool | None
    auth_attempted: bool
    auth_mechanism: str | None
    error: SMTPError | None
    elapsed: float
    transcript: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the check found nothing wrong (``error`` is None)."""
        return self.error is None

    @property
    def capabilities(self) -> Capabilities | None:
        """The capabilities that apply to a send: after TLS when there was TLS."""
        return self.capabilities_after_tls or self.capabilities_before_tls


def _text_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _html_table(rows: list[tuple[str, str]], css_class: str) -> str:
    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
        f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return f"<table class='{css_class}'>{cells}</table>"
