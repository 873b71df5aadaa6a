"""The typed exceptions a send can raise (plain data: no Twisted here).

Every failure, whatever layer it starts in, reaches the caller as exactly one
:class:`SMTPError` subclass. Each carries the server's :class:`~syncsmtp.Reply`
when there was one, the ``host`` it happened with, the ``stage`` of the
conversation, whether the message ``maybe_delivered`` all the same, and the
redacted ``transcript`` up to the failure.

Each is also, by inheritance, the exception :mod:`smtplib` (or :mod:`ssl`, or
the socket layer) raises in the same situation, with smtplib's attributes
(``smtp_code``, ``smtp_error``, ``sender``, ``recipients``), so that
``except`` clauses written for smtplib and Django catch them. ``args`` is
``(message,)``: ``str(error)`` is syncsmtp's message, not smtplib's tuple.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .result import Reply

__all__ = [
    "AuthDeclinedError",
    "AuthError",
    "AuthMalformedChallengeError",
    "AuthRequiredError",
    "AuthServerError",
    "CertificateError",
    "ConnectError",
    "ConnectionLostError",
    "EHLORequiredError",
    "ExtensionNotOfferedError",
    "InsecureTLSWarning",
    "MessageError",
    "MessageRefused",
    "ProtocolError",
    "RecipientsRefused",
    "RefusedError",
    "RequireTLSError",
    "SMTPError",
    "SendTimeout",
    "SenderRefused",
    "SessionRefused",
    "TLSError",
    "TLSFailedError",
    "TLSRequiredError",
]


# ``smtp_code`` when there was no reply, as in smtplib.
_NO_REPLY_CODE = -1


def _reply_bytes(reply: Reply) -> bytes:
    """The reply's text as smtplib keeps it: bytes, lines joined with a
    newline, each line with the enhanced status code in front."""
    lines = reply.text.split("\n")
    if reply.enhanced:
        lines = [f"{reply.enhanced} {line}" if line else reply.enhanced for line in lines]
    return "\n".join(lines).encode("utf-8")


class SMTPError(smtplib.SMTPException):
    """The base of every error syncsmtp raises; also an
    :exc:`smtplib.SMTPException` (and so an :exc:`OSError`).

    ``transient`` is True when trying again later may succeed: a 4xx reply, or,
    with no reply, a failure of the network rather than of the request
    (:class:`ConnectError`, :class:`SendTimeout`, :class:`ConnectionLostError`).
    Before retrying, check ``maybe_delivered``: when it is True the server may
    already have the message, and a retry may deliver it twice.

    ``smtp_code`` and ``smtp_error`` are smtplib's names for the server's reply:
    its code (``-1`` when there was none) and its text as bytes (this error's
    message, encoded, when there was none). ``args`` is ``(message,)``;
    ``errno`` and ``strerror`` are ``None``.
    """

    #: Whether a failure with no server reply is worth retrying.
    transient_without_reply = False

    def __init__(
        self,
        message: str,
        *,
        reply: Reply | None = None,
        host: str | None = None,
        stage: str | None = None,
        maybe_delivered: bool = False,
        transcript: tuple[str, ...] = (),
    ) -> None:
        # OSError.__init__ itself, not the next class in the MRO: smtplib's
        # classes take (code, msg[, sender]) and would replace ``args``. With
        # one argument OSError sets no errno and leaves the message alone.
        OSError.__init__(self, message)
        self.message = message
        self.reply = reply
        self.host = host
        self.stage = stage
        self.maybe_delivered = maybe_delivered
        self.transcript = transcript
        #: smtplib's name for the reply's code; -1 without a reply.
        self.smtp_code: int = reply.code if reply is not None else _NO_REPLY_CODE
        #: smtplib's name for the reply's text (bytes, enhanced status code
        #: included); without a reply, this error's message. Always bytes
        #: (typed as smtplib's SMTPResponseException types it).
        self.smtp_error: bytes | str = (
            _reply_bytes(reply) if reply is not None else message.encode("utf-8")
        )

    @property
    def transient(self) -> bool:
        """True when the same send may succeed if tried again later."""
        if self.reply is not None:
            return self.reply.transient
        return self.transient_without_reply

    def _state(self) -> dict[str, Any]:
        return {
            "reply": self.reply,
            "host": self.host,
            "stage": self.stage,
            "maybe_delivered": self.maybe_delivered,
            "transcript": self.transcript,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments defeat Exception's default pickling, which
        # multiprocessing needs to hand an error back from a worker.
        return (_rebuild, (type(self), self.message, self._state()))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[SMTPError], message: str, state: dict[str, Any]) -> SMTPError:
    return cls(message, **state)


class ConnectError(SMTPError, ConnectionError):
    """No SMTP session could be opened: the name did not resolve, the
    connection was refused or unreachable, or the server's greeting turned
    the client away (then the subclass :class:`SessionRefused`). Also a
    :exc:`ConnectionError`."""

    transient_without_reply = True


class SessionRefused(ConnectError, smtplib.SMTPConnectError):
    """The server answered the connection with a greeting other than 220
    (``reply`` holds it): a :class:`ConnectError` that is also the
    :exc:`smtplib.SMTPConnectError` smtplib raises then."""


class SendTimeout(SMTPError, smtplib.SMTPServerDisconnected, TimeoutError):
    """The send's deadline passed. ``stage`` says where the conversation
    stood; ``maybe_delivered`` is True only when the whole message had been
    sent and the server's answer was still awaited. Also a
    :exc:`TimeoutError` (``socket.timeout``, what smtplib lets through while
    connecting) and an :exc:`smtplib.SMTPServerDisconnected` (what smtplib
    turns a time-out into once connected)."""

    transient_without_reply = True


class ConnectionLostError(SMTPError, smtplib.SMTPServerDisconnected, ConnectionError):
    """The server hung up in the middle of the conversation. Also an
    :exc:`smtplib.SMTPServerDisconnected` and a :exc:`ConnectionError`."""

    transient_without_reply = True


class ProtocolError(SMTPError):
    """The server's reply was malformed, or not one SMTP allows at that point."""


class EHLORequiredError(SMTPError, smtplib.SMTPHeloError):
    """The server refused EHLO, and the policy needs ESMTP (for TLS or AUTH)
    or does not allow falling back to HELO. Also an
    :exc:`smtplib.SMTPHeloError`."""


class ExtensionNotOfferedError(SMTPError, smtplib.SMTPNotSupportedError):
    """The send asked for an SMTP extension the server does not offer in its
    EHLO reply: ``extension`` names it (``"DSN"`` for ``dsn=``,
    ``"REQUIRETLS"`` for ``require_tls=True``). Raised before MAIL FROM:
    nothing of the message was sent. Also an
    :exc:`smtplib.SMTPNotSupportedError`."""

    def __init__(self, message: str, *, extension: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.extension = extension

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "extension": self.extension}


class TLSError(SMTPError):
    """TLS could not be used as the policy requires."""


class TLSRequiredError(TLSError, smtplib.SMTPNotSupportedError):
    """The policy requires TLS (or will not send credentials in plaintext),
    and the server does not offer STARTTLS. Also an
    :exc:`smtplib.SMTPNotSupportedError`."""


class RequireTLSError(TLSError, smtplib.SMTPNotSupportedError):
    """``require_tls=True`` (REQUIRETLS, RFC 8689), but the session is not
    over TLS whose certificate was verified: plaintext, or a policy with
    ``verify=False``. Raised before MAIL FROM: nothing of the message was
    sent. Also an :exc:`smtplib.SMTPNotSupportedError`."""


class TLSFailedError(TLSError, ssl.SSLError):
    """The TLS handshake, or the STARTTLS exchange before it, failed. Also an
    :exc:`ssl.SSLError`, whose ``library`` and ``reason`` are ``None`` here,
    as :mod:`ssl` leaves them when OpenSSL names neither."""

    # typeshed types them str; CPython's own SSLError holds None when unknown.
    library: str | None = None  # type: ignore[assignment]
    reason: str | None = None  # type: ignore[assignment]


# OpenSSL's X509_V_ERR_UNSPECIFIED: ``verify_code`` when the failed check is not known.
_VERIFY_UNSPECIFIED = 1


class CertificateError(TLSFailedError, ssl.SSLCertVerificationError):
    """The server's certificate chain or host name did not verify. Also an
    :exc:`ssl.SSLCertVerificationError` (``ssl.CertificateError``, a
    :exc:`ValueError`) with ``library`` ``"SSL"`` and ``reason``
    ``"CERTIFICATE_VERIFY_FAILED"``, as :mod:`ssl` reports it;
    ``verify_code`` is OpenSSL's code when known, else 1 (unspecified), and
    ``verify_message`` says what failed (by default, this error's message)."""

    library = "SSL"
    reason = "CERTIFICATE_VERIFY_FAILED"

    def __init__(self, message: str, *, verify_code: int = _VERIFY_UNSPECIFIED,
                 verify_message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.verify_code = verify_code
        self.verify_message = message if verify_message is None else verify_message

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "verify_code": self.verify_code,
                "verify_message": self.verify_message}


class AuthError(SMTPError):
    """Authentication could not be completed."""


class AuthRequiredError(AuthError, smtplib.SMTPNotSupportedError):
    """The policy requires authentication, and the server offers no
    mechanism that both sides support (or none at all). Also an
    :exc:`smtplib.SMTPNotSupportedError`."""


class AuthDeclinedError(AuthError, smtplib.SMTPAuthenticationError):
    """The server rejected the credentials. Also an
    :exc:`smtplib.SMTPAuthenticationError`.

    ``server_error`` is what the server said about the failure during the
    exchange, decoded: with OAuth2, its JSON error status (such as
    ``{"status": "401", "schemes": "bearer"}``); None otherwise."""

    def __init__(self, message: str, *, server_error: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.server_error = server_error

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "server_error": self.server_error}


class AuthMalformedChallengeError(AuthError):
    """The server sent an authentication challenge that is not valid base64."""


class AuthServerError(AuthError, smtplib.SMTPAuthenticationError):
    """The server refused the AUTH command itself, before any credentials.
    Also an :exc:`smtplib.SMTPAuthenticationError`, which smtplib raises for
    any refused AUTH."""


class RefusedError(SMTPError):
    """The server refused the sender, the recipients or the message."""


class SenderRefused(RefusedError, smtplib.SMTPSenderRefused):
    """The server refused the envelope sender (MAIL FROM). Also an
    :exc:`smtplib.SMTPSenderRefused`; ``sender`` is the refused address
    (``""`` when not known)."""

    smtp_error: bytes  # always bytes here; smtplib's SMTPSenderRefused says so too

    def __init__(self, message: str, *, sender: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.sender = sender

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "sender": self.sender}


class RecipientsRefused(RefusedError, smtplib.SMTPRecipientsRefused):
    """The server refused every recipient; ``refused`` maps each address to
    the server's reply. Nothing was sent. Also an
    :exc:`smtplib.SMTPRecipientsRefused`, whose ``recipients`` maps each
    address to ``(code, text as bytes)``."""

    def __init__(
        self, message: str, *, refused: Mapping[str, Reply] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.refused: Mapping[str, Reply] = MappingProxyType(dict(refused or {}))
        #: smtplib's view of ``refused``: each address to ``(code, text as bytes)``.
        self.recipients = {address: (reply.code, _reply_bytes(reply))
                           for address, reply in self.refused.items()}

    @property
    def transient(self) -> bool:
        """True when every refusal was a 4xx reply."""
        if self.refused:
            return all(reply.transient for reply in self.refused.values())
        return super().transient

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "refused": dict(self.refused)}


class MessageRefused(RefusedError, smtplib.SMTPDataError):
    """The server refused the message: the DATA command, the data after it,
    or a limit (size, SMTPUTF8) it announced before the data was sent. Also
    an :exc:`smtplib.SMTPDataError`."""


class MessageError(SMTPError, ValueError):
    """The message or its envelope is unusable; raised before any connection
    is made, so nothing was sent. Also a :exc:`ValueError`."""


class InsecureTLSWarning(UserWarning):
    """A policy encrypts without verifying the server (``verify=False``):
    anyone on the network path could pose as the server."""
