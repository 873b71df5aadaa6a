"""The typed exceptions a send can raise (plain data: no Twisted here).

Every failure, whatever layer it starts in, reaches the caller as exactly one
:class:`SMTPError` subclass. Each carries the server's :class:`~syncsmtp.Reply`
when there was one, the ``host`` it happened with, the ``stage`` of the
conversation, whether the message ``maybe_delivered`` all the same, and the
redacted ``transcript`` up to the failure.
"""

from __future__ import annotations

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
    "InsecureTLSWarning",
    "MessageError",
    "MessageRefused",
    "ProtocolError",
    "RecipientsRefused",
    "RefusedError",
    "SMTPError",
    "SendTimeout",
    "SenderRefused",
    "TLSError",
    "TLSFailedError",
    "TLSRequiredError",
]


class SMTPError(Exception):
    """The base of every error syncsmtp raises.

    ``transient`` is True when trying again later may succeed: a 4xx reply, or,
    with no reply, a failure of the network rather than of the request
    (:class:`ConnectError`, :class:`SendTimeout`, :class:`ConnectionLostError`).
    Before retrying, check ``maybe_delivered``: when it is True the server may
    already have the message, and a retry may deliver it twice.
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
        super().__init__(message)
        self.message = message
        self.reply = reply
        self.host = host
        self.stage = stage
        self.maybe_delivered = maybe_delivered
        self.transcript = transcript

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
    the client away."""

    transient_without_reply = True


class SendTimeout(SMTPError, TimeoutError):
    """The send's deadline passed. ``stage`` says where the conversation
    stood; ``maybe_delivered`` is True only when the whole message had been
    sent and the server's answer was still awaited."""

    transient_without_reply = True


class ConnectionLostError(SMTPError):
    """The server hung up in the middle of the conversation."""

    transient_without_reply = True


class ProtocolError(SMTPError):
    """The server's reply was malformed, or not one SMTP allows at that point."""


class EHLORequiredError(SMTPError):
    """The server refused EHLO, and the policy needs ESMTP (for TLS or AUTH)
    or does not allow falling back to HELO."""


class TLSError(SMTPError):
    """TLS could not be used as the policy requires."""


class TLSRequiredError(TLSError):
    """The policy requires TLS (or will not send credentials in plaintext),
    and the server does not offer STARTTLS."""


class TLSFailedError(TLSError):
    """The TLS handshake, or the STARTTLS exchange before it, failed."""


class CertificateError(TLSFailedError):
    """The server's certificate chain or host name did not verify."""


class AuthError(SMTPError):
    """Authentication could not be completed."""


class AuthRequiredError(AuthError):
    """The policy requires authentication, and the server offers no
    mechanism that both sides support (or none at all)."""


class AuthDeclinedError(AuthError):
    """The server rejected the credentials."""


class AuthMalformedChallengeError(AuthError):
    """The server sent an authentication challenge that is not valid base64."""


class AuthServerError(AuthError):
    """The server refused the AUTH command itself, before any credentials."""


class RefusedError(SMTPError):
    """The server refused the sender, the recipients or the message."""


class SenderRefused(RefusedError):
    """The server refused the envelope sender (MAIL FROM)."""


class RecipientsRefused(RefusedError):
    """The server refused every recipient; ``refused`` maps each address to
    the server's reply. Nothing was sent."""

    def __init__(
        self, message: str, *, refused: Mapping[str, Reply] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.refused: Mapping[str, Reply] = MappingProxyType(dict(refused or {}))

    @property
    def transient(self) -> bool:
        """True when every refusal was a 4xx reply."""
        if self.refused:
            return all(reply.transient for reply in self.refused.values())
        return super().transient

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "refused": dict(self.refused)}


class MessageRefused(RefusedError):
    """The server refused the message: the DATA command, the data after it,
    or a limit (size, SMTPUTF8) it announced before the data was sent."""


class MessageError(SMTPError, ValueError):
    """The message or its envelope is unusable; raised before any connection
    is made, so nothing was sent."""


class InsecureTLSWarning(UserWarning):
    """A policy encrypts without verifying the server (``verify=False``):
    anyone on the network path could pose as the server."""
