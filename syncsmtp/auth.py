"""Pluggable SASL authentication: the protocol an AUTH mechanism's client side
follows, and the built-in mechanisms (plain data, no Twisted here).

A :class:`~syncsmtp.Policy` authenticates with the mechanisms it can make
from its fields (``password``: CRAM-MD5, PLAIN, LOGIN, with PLAIN first
under verified TLS; ``oauth2_token``: OAUTHBEARER, XOAUTH2) and with any
:class:`Authenticator` given as ``authenticators=``. The built-in ones
follow the same protocol.

An :class:`Authenticator` is shared by every connection and thread that uses
the policy; :meth:`Authenticator.begin` makes a :class:`SASLExchange` for one
AUTH command on one connection, which holds what that exchange needs to
remember. No secret appears in the repr of any object here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import _messages

if TYPE_CHECKING:
    from .result import Reply

__all__ = [
    "AuthAttempt",
    "Authenticator",
    "CramMD5",
    "Login",
    "OAuth2Token",
    "OAuthBearer",
    "Plain",
    "SASLExchange",
    "TokenSource",
    "XOAuth2",
]

#: ``oauth2_token``: a token, or ``get_token(refresh: bool) -> str``.
TokenSource = str | Callable[[bool], str]


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """What one AUTH command is for: the policy's ``username``, the server's
    ``host`` and ``port``, and ``refresh``: True when the server refused the
    previous attempt on this connection and :meth:`SASLExchange.refused` asked
    for another (a token should then be fetched anew, not taken from a cache)."""

    username: str
    host: str
    port: int
    refresh: bool = False


class SASLExchange(Protocol):
    """One SASL exchange (one AUTH command) on one connection, client side.

    Every method runs in the reactor thread and must not block.
    """

    def initial_response(self) -> bytes | None:
        """The response sent with the AUTH command itself (RFC 4954), or None
        to wait for the server's first challenge. ``b""`` is an empty initial
        response (sent as ``=``)."""
        ...

    def respond(self, challenge: bytes) -> bytes:
        """The response to a ``334`` challenge (``challenge`` is base64-decoded;
        the response is base64-encoded by the caller)."""
        ...

    def refused(self, reply: Reply) -> bool:
        """The server refused this exchange with ``reply``: True to authenticate
        again on the same connection (``begin`` is then called with
        ``refresh=True``; at most once per connection), False to give up."""
        ...

    @property
    def server_error(self) -> Mapping[str, Any] | None:
        """What the server said about a failure during the exchange, decoded
        (OAuth2's JSON error status), or None. It is shown in the error raised."""
        ...


@runtime_checkable
class Authenticator(Protocol):
    """The client side of one SASL mechanism, shared by every connection of a policy.

    ``mechanism`` is its name as EHLO lists it (upper case). ``blocking`` says
    whether :meth:`begin` may block (to fetch a token over the network): it is
    then called in a worker thread of the reactor's thread pool, never in the
    reactor thread; otherwise in the reactor thread, and it must return at once.
    """

    @property
    def mechanism(self) -> str: ...

    @property
    def blocking(self) -> bool: ...

    def begin(self, attempt: AuthAttempt) -> SASLExchange:
        """A new exchange for one AUTH command (after EHLO showed the mechanism)."""
        ...


class _Exchange:
    """What the built-in exchanges share: no initial response, no second try."""

    server_error: Mapping[str, Any] | None = None

    def initial_response(self) -> bytes | None:
        return None

    def refused(self, reply: Reply) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} exchange>"


class _PasswordMechanism:
    """A mechanism that logs in with the policy's user name and password."""

    mechanism = ""
    blocking = False

    def __init__(self, password: str) -> None:
        self._password = password.encode("utf-8")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(password='<redacted>')"


class _PlainExchange(_Exchange):
    def __init__(self, username: bytes, password: bytes) -> None:
        self._response = b"\0" + username + b"\0" + password

    def initial_response(self) -> bytes:
        return self._response

    def respond(self, challenge: bytes) -> bytes:
        # A server that sends "334" to AUTH PLAIN with a response wants it again.
        return self._response


class Plain(_PasswordMechanism):
    """PLAIN (RFC 4616): ``\\0user\\0password`` with an empty authorisation
    identity, sent with the AUTH command."""

    mechanism = "PLAIN"

    def begin(self, attempt: AuthAttempt) -> SASLExchange:
        return _PlainExchange(attempt.username.encode("utf-8"), self._password)


class _LoginExchange(_Exchange):
    def __init__(self, username: bytes, password: bytes) -> None:
        self._answers = [username, password]

    def respond(self, challenge: bytes) -> bytes:
        # By step, whatever the prompts say (servers word them differently).
        return self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]


class Login(_PasswordMechanism):
    """LOGIN: the user name, then the password, each after a ``334`` prompt."""

    mechanism = "LOGIN"

    def begin(self, attempt: AuthAttempt) -> SASLExchange:
        return _LoginExchange(attempt.username.encode("utf-8"), self._password)


class _CramMD5Exchange(_Exchange):
    def __init__(self, username: bytes, password: bytes) -> None:
        self._username, self._password = username, password

    def respond(self, challenge: bytes) -> bytes:
        digest = hmac.new(self._password, challenge, hashlib.md5).hexdigest()
        return self._username + b" " + digest.encode("ascii")


class CramMD5(_PasswordMechanism):
    """CRAM-MD5 (RFC 2195): the user name and an HMAC-MD5 of the server's challenge."""

    mechanism = "CRAM-MD5"

    def begin(self, attempt: AuthAttempt) -> SASLExchange:
        return _CramMD5Exchange(attempt.username.encode("utf-8"), self._password)


# -- OAuth2 -----------------------------------------------------------------------------------------


class OAuth2Token:
    """Where an OAuth2 access token comes from: a fixed string, or a callable
    ``get_token(refresh: bool) -> str`` (called with ``refresh=True`` after
    the server refused the token it returned before). Its repr never shows
    the token."""

    __slots__ = ("_source",)

    def __init__(self, source: TokenSource) -> None:
        if not (isinstance(source, str) or callable(source)):
            raise TypeError(
                f"oauth2_token must be a str or a callable get_token(refresh) -> str, not "
                f"{type(source).__name__}"
            )
        if isinstance(source, str):
            _check_token(source)
        self._source = source

    @property
    def refreshable(self) -> bool:
        """Whether a new token can be asked for (a callable, not a fixed string)."""
        return not isinstance(self._source, str)

    def get(self, refresh: bool) -> str:
        """The token (may block: the callable may go to the network)."""
        if isinstance(self._source, str):
            return self._source
        token = self._source(refresh)
        _check_token(token)
        return token

    def __repr__(self) -> str:
        return "OAuth2Token('<redacted>')" if isinstance(self._source, str) else \
            f"OAuth2Token({getattr(self._source, '__qualname__', type(self._source).__name__)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OAuth2Token) and other._source == self._source

    def __hash__(self) -> int:
        return hash(self._source)


def _check_token(token: object) -> None:
    # A token goes into one SASL line: a control character would end or split it.
    if not isinstance(token, str) or not token or any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        raise ValueError(
            f"an OAuth2 access token must be a non-empty str with no control characters; got "
            f"the {type(token).__name__} given (not shown)"
        )


class _OAuth2Exchange(_Exchange):
    """Bearer token with an initial response; the failure challenge answered as
    the mechanism's RFC says, then one more try with a refreshed token."""

    def __init__(self, initial: bytes, answer: bytes, may_retry: bool) -> None:
        self._initial = initial
        self._answer = answer
        self._may_retry = may_retry
        self._challenged = False
        self.server_error: Mapping[str, Any] | None = None

    def initial_response(self) -> bytes:
        return self._initial

    def respond(self, challenge: bytes) -> bytes:
        # RFC 7628 3.2.2 (and Google's XOAUTH2): a 334 after the token carries
        # a JSON error status; the client answers with a dummy response, and
        # the server then fails the exchange.
        self._challenged = True
        try:
            status = json.loads(challenge.decode("utf-8"))
        except ValueError:
            status = None
        self.server_error = status if isinstance(status, dict) else {"challenge": challenge.decode(
            "utf-8", "replace")[:200]}
        return self._answer

    def refused(self, reply: Reply) -> bool:
        return self._may_retry and (self._challenged or reply.code == 535)


class _OAuth2Mechanism:
    mechanism = ""

    def __init__(self, token: TokenSource | OAuth2Token) -> None:
        self._token = token if isinstance(token, OAuth2Token) else OAuth2Token(token)

    @property
    def blocking(self) -> bool:
        return self._token.refreshable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._token!r})"


class XOAuth2(_OAuth2Mechanism):
    """XOAUTH2 (Google's and Microsoft's): ``user=U^Aauth=Bearer T^A^A``; the
    failure challenge is answered with an empty response."""

    mechanism = "XOAUTH2"

    def begin(self, attempt: AuthAttempt) -> SASLExchange:
        token = self._token.get(attempt.refresh)
        initial = f"user={attempt.username}\x01auth=Bearer {token}\x01\x01".encode()
        return _OAuth2Exchange(initial, b"", self._token.refreshable and not attempt.refresh)


class OAuthBearer(_OAuth2Mechanism):
    """OAUTHBEARER (RFC 7628): a GS2 header with the user name, then host,
    port and ``auth=Bearer T``; the failure challenge is answered with ``^A``."""

    mechanism = "OAUTHBEARER"

    def begin(self, attempt: AuthAttempt) -> SASLExchange:
        token = self._token.get(attempt.refresh)
        # RFC 5801 saslname: "=" and "," escaped.
        user = attempt.username.replace("=", "=3D").replace(",", "=2C")
        initial = (f"n,a={user},\x01host={attempt.host}\x01port={attempt.port}\x01"
                   f"auth=Bearer {token}\x01\x01").encode()
        return _OAuth2Exchange(initial, b"\x01", self._token.refreshable and not attempt.refresh)


# -- what a policy authenticates with ---------------------------------------------------------------

# The built-in mechanisms, in their default order where the server is not
# authenticated (plaintext allowed, or TLS with verify=False): most secure first.
_BUILT_IN: tuple[str, ...] = ("OAUTHBEARER", "XOAUTH2", "CRAM-MD5", "PLAIN", "LOGIN")
_OAUTH2 = ("OAUTHBEARER", "XOAUTH2")
_MECHANISM_NAME = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _usable(*, password: str | None, oauth2_token: TokenSource | None,
            authenticators: tuple[Authenticator, ...],
            verified_tls: bool = False) -> dict[str, Authenticator]:
    """The authenticators these credentials make, by mechanism name, in the
    default order of preference: ``authenticators`` first, then OAuth2 (with a
    token), then the password mechanisms (with a password, or an empty one
    when nothing else is given).

    Of the password mechanisms, CRAM-MD5 comes first unless the connection
    has TLS with a verified certificate (``verified_tls``): it never sends
    the password itself, which matters where the other end may not be the
    server. Under verified TLS the channel already keeps the password from
    everyone but that server, so PLAIN comes first: one round trip, and with
    PIPELINING it goes in one write with the first message's envelope, where
    CRAM-MD5 must wait for the server's challenge and answer it."""
    usable: dict[str, Authenticator] = {item.mechanism.upper(): item for item in authenticators}
    if oauth2_token is not None:
        token = OAuth2Token(oauth2_token)
        usable.setdefault("OAUTHBEARER", OAuthBearer(token))
        usable.setdefault("XOAUTH2", XOAuth2(token))
    if password is not None or (oauth2_token is None and not authenticators):
        secret = password or ""
        made = (Plain(secret), CramMD5(secret)) if verified_tls else (CramMD5(secret), Plain(secret))
        for item in (*made, Login(secret)):
            usable.setdefault(item.mechanism, item)
    return usable


def _check_authenticators(given: object) -> tuple[Authenticator, ...]:
    """``authenticators=`` as a tuple of :class:`Authenticator`; ValueError otherwise."""
    expected = ("a list of syncsmtp.Authenticator objects (a SASL mechanism name of letters, "
                "digits, '-' and '_', a blocking flag, begin(attempt))")
    if isinstance(given, str | bytes) or not isinstance(given, tuple | list):
        raise ValueError(_messages.must_be("Policy", "authenticators", expected, given, secret=True))
    for item in given:
        name = getattr(item, "mechanism", None)
        if not isinstance(item, Authenticator) or not isinstance(name, str) or not name \
                or not set(name.upper()) <= _MECHANISM_NAME or len(name) > 20:
            raise ValueError(_messages.must_be("Policy", "authenticators", expected, item, secret=True))
    return tuple(given)


def _check_oauth2_token(given: object, username: str | None) -> None:
    """ValueError when ``oauth2_token=`` is not a token or a callable, or has no user name."""
    if given is None:
        return
    try:
        OAuth2Token(given)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(_messages.must_be(
            "Policy", "oauth2_token", "a non-empty str with no control characters, or a callable "
            "get_token(refresh: bool) -> str", given, secret=True)) from None
    if not username:
        raise ValueError("Policy oauth2_token needs a username (the mailbox the token is for)")


def _check_mechanism_names(names: tuple[str, ...], oauth2_token: object,
                          authenticators: tuple[Authenticator, ...]) -> str | None:
    """What is wrong with ``auth_mechanisms=`` (upper case names), or None."""
    custom = {item.mechanism.upper() for item in authenticators}
    unknown = [name for name in names if name not in _BUILT_IN and name not in custom]
    if unknown:
        return (f"Policy auth_mechanisms names {', '.join(unknown)}, which no authenticator has; "
                f"known: {', '.join(_BUILT_IN)} and those given as authenticators=")
    missing = [name for name in names if name in _OAUTH2 and oauth2_token is None and name not in custom]
    if missing:
        return f"Policy auth_mechanisms names {', '.join(missing)}, which needs oauth2_token="
    return None
