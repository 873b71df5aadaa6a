"""XOAUTH2 and OAUTHBEARER (RFC 7628) for the test server: the client's bearer
token checked against the server's current tokens, and the failure challenge
(a ``334`` carrying a JSON error status) for one that is not, or no longer,
valid.

Only Twisted's public API: ``IChallengeResponse`` and ``twisted.cred``.
"""

# Twisted's cred module is not annotated.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from twisted.mail.interfaces import IChallengeResponse
from zope.interface import implementer

__all__ = ["OAUTH2_MECHANISMS", "IOAuth2Bearer", "OAuth2Checker", "OAuth2Credentials", "TokenCheck"]

#: The OAuth2 mechanisms the test server knows.
OAUTH2_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")

#: Whether a user's bearer token is valid now: ``check(user, token)``.
TokenCheck = Callable[[str, str], bool]


class IOAuth2Bearer(credentials.ICredentials):
    """A bearer token read from an OAuth2 SASL exchange (checked as it was read)."""


def _malformed(mechanism: str) -> Exception:
    from ._delivery import MalformedResponse

    return MalformedResponse(f"not an {mechanism} initial response")


def parse_xoauth2(response: bytes) -> tuple[str, str]:
    """``user=U^Aauth=Bearer T^A^A`` -> (U, T)."""
    fields = _fields(response.split(b"\x01"), "XOAUTH2")
    user = fields.get("user", "")
    if not user:
        raise _malformed("XOAUTH2")
    return user, _bearer(fields, "XOAUTH2")


def parse_oauthbearer(response: bytes) -> tuple[str, str]:
    """``n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A`` (RFC 7628 3.1) -> (U, T)."""
    header, _, rest = response.partition(b"\x01")
    parts = header.split(b",")
    if len(parts) != 3 or parts[0] not in (b"n", b"y") or not parts[1].startswith(b"a="):
        raise _malformed("OAUTHBEARER")
    user = parts[1][2:].decode("utf-8", "replace").replace("=2C", ",").replace("=3D", "=")
    fields = _fields(rest.split(b"\x01"), "OAUTHBEARER")
    return user, _bearer(fields, "OAUTHBEARER")


def _fields(items: list[bytes], mechanism: str) -> dict[str, str]:
    # The response ends with two ^A: the last two items are empty.
    if len(items) < 3 or items[-1] or items[-2]:
        raise _malformed(mechanism)
    fields = {}
    for item in items[:-2]:
        key, equals, value = item.decode("utf-8", "replace").partition("=")
        if not equals:
            raise _malformed(mechanism)
        fields[key] = value
    return fields


def _bearer(fields: dict[str, str], mechanism: str) -> str:
    scheme, _, token = fields.get("auth", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _malformed(mechanism)
    return token


@implementer(IChallengeResponse, IOAuth2Bearer)
class OAuth2Credentials:
    """One XOAUTH2 or OAUTHBEARER exchange on the server side."""

    def __init__(self, mechanism: str, check: TokenCheck) -> None:
        self.mechanism = mechanism
        self._check = check
        self.username = b""
        self.valid = False
        self._challenge: bytes | None = None
        #: What the client answered to the failure challenge (``b"\x01"`` for
        #: OAUTHBEARER, ``b""`` for XOAUTH2 when it follows the RFC).
        self.answer: bytes | None = None

    def getChallenge(self) -> bytes:  # noqa: N802
        return self._challenge or b""

    def setResponse(self, response: bytes) -> None:  # noqa: N802
        if self._challenge is not None:
            self.answer = response
            return
        parse = parse_oauthbearer if self.mechanism == "OAUTHBEARER" else parse_xoauth2
        user, token = parse(response)
        self.username = user.encode("utf-8")
        if self._check(user, token):
            self.valid = True
            return
        status: dict[str, Any] = (
            {"status": "invalid_token", "scope": "smtp", "openid-configuration":
             "https://localhost/.well-known/openid-configuration"}
            if self.mechanism == "OAUTHBEARER"
            else {"status": "401", "schemes": "Bearer", "scope": "smtp"}
        )
        self._challenge = json.dumps(status, separators=(",", ":")).encode()

    def moreChallenges(self) -> bool:  # noqa: N802
        return self._challenge is not None and self.answer is None


@implementer(ICredentialsChecker)
class OAuth2Checker:
    """Logs in the user of a token that was valid when the exchange read it."""

    credentialInterfaces = (IOAuth2Bearer,)  # noqa: N815 (Twisted's interface)

    def requestAvatarId(self, offered: Any) -> defer.Deferred[bytes]:  # noqa: N802
        if isinstance(offered, OAuth2Credentials) and offered.valid:
            return defer.succeed(offered.username)
        return defer.fail(error.UnauthorizedLogin("invalid or expired token"))
