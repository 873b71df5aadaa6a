"""syncsmtp: send mail from plain, blocking Python.

``syncsmtp.send(message, policy, timeout)`` blocks until the server has
answered and returns a :class:`SendResult`, or raises one typed
:class:`SMTPError` subclass that says what went wrong and what to do.
:class:`Mailer` does the same over reused connections, from many threads.
``syncsmtp.check(policy, timeout)`` connects as a send would and reports what
the server offers (a :class:`CheckResult`), sending nothing. The work runs on
Twisted's ESMTP client in a background reactor thread (started on the first
send, not on import).
"""

from __future__ import annotations

from ._send_many import Outgoing
from .auth import (
    AuthAttempt,
    Authenticator,
    CramMD5,
    Login,
    OAuth2Token,
    OAuthBearer,
    Plain,
    SASLExchange,
    TokenSource,
    XOAuth2,
)
from .client import DEFAULT_TIMEOUT, check, send
from .dkim import DKIM
from .dsn import DSN
from .errors import (
    AuthDeclinedError,
    AuthError,
    AuthMalformedChallengeError,
    AuthRequiredError,
    AuthServerError,
    CertificateError,
    ConnectError,
    ConnectionLostError,
    EHLORequiredError,
    ExtensionNotOfferedError,
    InsecureTLSWarning,
    MessageError,
    MessageRefused,
    ProtocolError,
    RecipientsRefused,
    RefusedError,
    RequireTLSError,
    SenderRefused,
    SendTimeout,
    SessionRefused,
    SMTPError,
    TLSError,
    TLSFailedError,
    TLSRequiredError,
)
from .mailer import DEFAULT_IDLE_TIMEOUT, Mailer
from .message import MessageInput
from .policy import SUPPORTED_AUTH_MECHANISMS, Policy, TLSMode
from .result import (
    Capabilities,
    CertificateInfo,
    CheckResult,
    Reply,
    SendReport,
    SendResult,
    ThrottleEvent,
    TLSInfo,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "DKIM",
    "DSN",
    "SUPPORTED_AUTH_MECHANISMS",
    "AuthAttempt",
    "AuthDeclinedError",
    "AuthError",
    "AuthMalformedChallengeError",
    "AuthRequiredError",
    "AuthServerError",
    "Authenticator",
    "Capabilities",
    "CertificateError",
    "CertificateInfo",
    "CheckResult",
    "ConnectError",
    "ConnectionLostError",
    "CramMD5",
    "EHLORequiredError",
    "ExtensionNotOfferedError",
    "InsecureTLSWarning",
    "Login",
    "Mailer",
    "MessageError",
    "MessageInput",
    "MessageRefused",
    "OAuth2Token",
    "OAuthBearer",
    "Outgoing",
    "Plain",
    "Policy",
    "ProtocolError",
    "RecipientsRefused",
    "RefusedError",
    "Reply",
    "RequireTLSError",
    "SASLExchange",
    "SMTPError",
    "SendReport",
    "SendResult",
    "SendTimeout",
    "SenderRefused",
    "SessionRefused",
    "TLSError",
    "TLSFailedError",
    "TLSInfo",
    "TLSMode",
    "TLSRequiredError",
    "ThrottleEvent",
    "TokenSource",
    "XOAuth2",
    "check",
    "send",
]
