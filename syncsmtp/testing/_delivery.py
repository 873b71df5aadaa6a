"""What Twisted's ESMTP server asks of the application behind it: who may log in, who may
send, whom mail may go to. The test server's sessions record the data themselves.

Only Twisted's public API: credentials from ``twisted.cred`` and
``twisted.mail.smtp``, and this module's own for AUTH PLAIN.
"""

# Twisted's smtp and cred modules are not annotated.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from twisted.cred import checkers, credentials, portal
from twisted.internet import defer
from twisted.mail import smtp
from twisted.mail.interfaces import IChallengeResponse
from zope.interface import implementer

from ._core import SessionSettings
from ._oauth2 import OAUTH2_MECHANISMS, OAuth2Checker, OAuth2Credentials

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["CHALLENGERS", "AnyCredentials", "Delivery", "MalformedResponse", "PlainCredentials", "Realm",
           "auth_portal", "challengers"]


class MalformedResponse(ValueError):
    """A SASL response that cannot be read (answered ``501``)."""


@implementer(IChallengeResponse)
class PlainCredentials(credentials.UsernamePassword):
    """AUTH PLAIN (RFC 4616): one response, ``[authzid] NUL authcid NUL passwd``, no challenge.

    The authorization identity is not used: the user is the one who authenticates.
    """

    def __init__(self) -> None:
        super().__init__(b"", b"")

    def getChallenge(self) -> bytes:  # noqa: N802
        return b""

    def setResponse(self, response: bytes) -> None:  # noqa: N802
        parts = response.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            raise MalformedResponse("an AUTH PLAIN response is [authzid] NUL authcid NUL passwd")
        _authzid, self.username, self.password = parts

    def moreChallenges(self) -> bool:  # noqa: N802
        return False


CHALLENGERS: dict[str, Any] = {
    "PLAIN": PlainCredentials,
    "LOGIN": smtp.LOGINCredentials,
    "CRAM-MD5": credentials.CramMD5Credentials,
    "XOAUTH2": OAuth2Credentials,
    "OAUTHBEARER": OAuth2Credentials,
}


class _NullMessage:
    """Twisted's server wants one IMessage per recipient; the session records the data."""

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        return None

    def eomReceived(self) -> defer.Deferred[None]:  # noqa: N802
        return defer.succeed(None)

    def connectionLost(self) -> None:  # noqa: N802
        return None


@implementer(smtp.IMessageDelivery)
class Delivery:
    def __init__(self, session: Session) -> None:
        self._session = session

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:  # noqa: N802
        return None

    def validateFrom(self, helo: Any, origin: Any) -> Any:  # noqa: N802
        if self._session.settings.require_auth and not self._session.authenticated:
            raise smtp.SMTPServerError(530, "5.7.0 Authentication required")
        return origin

    def validateTo(self, user: Any) -> Any:  # noqa: N802
        refusal = self._session.core.script.refusal(str(user.dest))
        if refusal is not None:
            raise smtp.SMTPServerError(*refusal)
        return _NullMessage


@implementer(checkers.ICredentialsChecker)
class AnyCredentials:
    """Takes every user name and password (``syncsmtp serve --auth-any``), as
    development mail sinks do: the client's AUTH code runs, nothing is checked."""

    credentialInterfaces = (  # noqa: N815 (Twisted's interface)
        credentials.IUsernamePassword, credentials.IUsernameHashedPassword,
    )

    def requestAvatarId(self, offered: Any) -> defer.Deferred[bytes]:  # noqa: N802
        return defer.succeed(offered.username)


@implementer(portal.IRealm)
class Realm:
    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:  # noqa: N802
        return smtp.IMessageDelivery, self._delivery, lambda: None


def challengers(settings: SessionSettings) -> dict[bytes, Any]:
    """The AUTH mechanisms a session offers, each with the credentials class that reads it
    (none when the server has no users and takes no credentials at all)."""
    if not settings.offers_auth:
        return {}
    cram_md5 = functools.partial(credentials.CramMD5Credentials, settings.hostname.encode("idna"))
    offered: dict[bytes, Any] = {}
    passwords = bool(settings.users) or settings.accept_any_credentials
    for name in settings.auth_mechanisms:
        if name in OAUTH2_MECHANISMS:
            if settings.oauth2_check is not None:
                offered[name.encode()] = functools.partial(OAuth2Credentials, name, settings.oauth2_check)
        elif passwords:
            offered[name.encode()] = cram_md5 if name == "CRAM-MD5" else CHALLENGERS[name]
    return offered


def auth_portal(settings: SessionSettings, delivery: Delivery) -> portal.Portal:
    """Where a session's AUTH is checked: the server's users, or anyone with
    ``accept_any_credentials``; a success logs in to ``delivery``."""
    checker: Any = AnyCredentials() if settings.accept_any_credentials else \
        checkers.InMemoryUsernamePasswordDatabaseDontUse(
            **{user: password.encode() for user, password in settings.users.items()}
        )
    realm: Any = Realm(delivery)  # (mypy does not see zope's @implementer)
    checkers_: list[Any] = [checker]
    if settings.oauth2_check is not None:
        checkers_.append(OAuth2Checker())
    return portal.Portal(realm, checkers_)
