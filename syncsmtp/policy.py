"""How to reach and talk to a server: a frozen, validated value (no Twisted here)."""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import KW_ONLY, dataclass, field, fields, replace
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote, urlsplit

from . import _messages
from . import auth as _auth
from .auth import Authenticator
from .dkim import DKIM
from .errors import InsecureTLSWarning

__all__ = ["SUPPORTED_AUTH_MECHANISMS", "Policy", "TLSMode"]

TLSMode = Literal["starttls", "opportunistic", "implicit", "none"]
_TLS_MODES: tuple[str, ...] = ("starttls", "opportunistic", "implicit", "none")
_DEFAULT_PORTS = {"starttls": 587, "opportunistic": 587, "implicit": 465, "none": 25}

#: The mechanisms syncsmtp can authenticate with, most secure first: its default order
#: (OAuth2 ones with ``oauth2_token``, the others with a password), but for PLAIN,
#: which comes before CRAM-MD5 over TLS whose certificate was verified.
SUPPORTED_AUTH_MECHANISMS: tuple[str, ...] = _auth._BUILT_IN

# URL scheme -> tls mode. "smtp://" is secure by default, like Policy itself.
_URL_SCHEMES = {
    "smtp": "starttls",
    "smtp+starttls": "starttls",
    "smtp+tls": "starttls",
    "smtps": "implicit",
    "smtp+ssl": "implicit",
    "smtp+implicit": "implicit",
    "smtp+opportunistic": "opportunistic",
    "smtp+plain": "none",
    "smtp+none": "none",
}
_URL_OPTIONS = (
    "verify",
    "ca_file",
    "client_cert",
    "client_key",
    "auth_mechanisms",
    "require_auth",
    "allow_plaintext_auth",
    "helo_fallback",
    "local_hostname",
    "tls",
    "tls_ciphers",
    "chunking",
    "idle_limit",
)
_HOSTNAME = re.compile(r"^[^\s\x00-\x1f\x7f/]+$")
# An OpenSSL cipher string: names, separators and operators, nothing else.
_CIPHER_STRING = re.compile(r"^[A-Za-z0-9_+\-!:@=.,]+$")
# What may stand in a URL's user name or password unencoded (RFC 3986 userinfo);
# "/", "?", "#" and "@" would end it early and hand the rest to host or path.
_USERINFO = re.compile(r"^[A-Za-z0-9\-._~%!$&'()*+,;=:]*$")
# Set while syncsmtp itself makes a policy that does not verify (to show a
# certificate that failed verification): the caller asked for no such thing,
# so it is not warned about. A context variable: each thread has its own.
_LIBRARY_UNVERIFIED: ContextVar[bool] = ContextVar("_LIBRARY_UNVERIFIED", default=False)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class Policy:
    """Where and how to deliver: server, TLS, credentials and ESMTP behaviour.

    ``tls`` is ``"starttls"`` (the default: upgrade with STARTTLS or fail),
    ``"implicit"`` (TLS from the first byte, port 465), ``"opportunistic"``
    (STARTTLS when offered, plaintext otherwise) or ``"none"``. ``port``
    defaults to 587, 465 or 25 to match, and keeps following ``tls`` through
    :meth:`with_options` until a port is given explicitly. Certificates and host names are
    verified unless ``verify=False``; ``ca_file`` (PEM) replaces the system's
    trust store, ``client_cert`` / ``client_key`` (PEM) present a client
    certificate.

    TLS 1.2 is the minimum version; its suites are limited to forward-secret
    AEAD ones (ECDHE with AES-GCM or ChaCha20-Poly1305). ``tls_ciphers`` (an
    OpenSSL cipher string, such as ``"DEFAULT"``) replaces that list for a
    legacy relay; TLS 1.3 suites are not affected. ``verify=False`` emits an
    :class:`~syncsmtp.InsecureTLSWarning` once for each policy made with it.

    When the server offers CHUNKING (RFC 3030), messages go as BDAT chunks
    (no dot-stuffing, fewer round trips); ``chunking=False`` keeps to DATA.

    Credentials are sent only over TLS unless ``allow_plaintext_auth=True``.
    ``require_auth`` defaults to True when a ``username`` is given: a server
    that offers no usable mechanism is then an error rather than an
    unauthenticated send. ``auth_mechanisms`` is the order to prefer
    (default: ``authenticators`` first, then OAUTHBEARER, XOAUTH2, CRAM-MD5,
    PLAIN, LOGIN, of those the credentials allow, with PLAIN before CRAM-MD5
    over TLS whose certificate was verified). ``oauth2_token`` (a token,
    or a callable ``get_token(refresh: bool) -> str``) authenticates with
    OAuth2 (see :doc:`oauth2`); ``authenticators`` adds SASL mechanisms
    (:class:`~syncsmtp.Authenticator` objects). ``helo_fallback`` allows HELO when EHLO
    is refused; it is ignored when STARTTLS or authentication is required
    (with implicit TLS the connection is already encrypted, so it applies).

    ``idle_limit`` (seconds, default None: none) bounds each silence of a
    send: no byte received from the server and none of the data taken by the
    connection for that long raises :class:`~syncsmtp.SendTimeout`, while a
    slow transfer that keeps moving runs on, up to the send's own
    ``timeout`` (see :ref:`idle-limit`).

    ``dkim`` (a :class:`~syncsmtp.DKIM`, or a dict of its arguments) signs
    every message sent with the policy; a URL cannot give it (see :doc:`dkim`).

    ``host`` may be given by position; every other field only by keyword.

    The password and the OAuth2 token never appear in ``repr()`` or ``str()``.
    """

    host: str
    _: KW_ONLY
    port: int | None = None
    tls: TLSMode = "starttls"
    verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    username: str | None = None
    password: str | None = None
    auth_mechanisms: tuple[str, ...] | None = None
    require_auth: bool | None = None
    allow_plaintext_auth: bool = False
    helo_fallback: bool = False
    local_hostname: str | None = None
    tls_ciphers: str | None = None
    chunking: bool = True
    idle_limit: float | None = None
    dkim: DKIM | None = None
    oauth2_token: str | Callable[[bool], str] | None = None
    authenticators: tuple[Authenticator, ...] = ()
    # Whether ``port`` was left to follow ``tls`` (None when given): not an
    # argument, not compared, not shown.
    _port_follows_tls: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host = self.host.strip("[]") if isinstance(self.host, str) else self.host
        if not isinstance(host, str) or not host or not _HOSTNAME.match(host):
            raise ValueError(_messages.must_be("Policy", "host", "a host name or IP address", self.host))
        object.__setattr__(self, "host", host)
        if not isinstance(self.tls, str) or self.tls not in _TLS_MODES:
            raise ValueError(_messages.one_of("Policy", "tls", _TLS_MODES, self.tls))
        if self.port is None:
            object.__setattr__(self, "port", _DEFAULT_PORTS[self.tls])
            object.__setattr__(self, "_port_follows_tls", True)
        elif isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(_messages.must_be("Policy", "port", "an integer from 1 to 65535", self.port))
        self._check_flags()
        self._check_credentials()
        object.__setattr__(self, "authenticators", _auth._check_authenticators(self.authenticators))
        _auth._check_oauth2_token(self.oauth2_token, self.username)
        self._check_auth_mechanisms()
        self._check_files()
        self._check_dkim()
        limit = self.idle_limit
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit < math.inf:
                raise ValueError(_messages.optional_seconds("Policy", "idle_limit", limit))
            object.__setattr__(self, "idle_limit", float(limit))
        if self.local_hostname is not None and (
            not isinstance(self.local_hostname, str) or not _HOSTNAME.match(self.local_hostname)
        ):
            raise ValueError(_messages.must_be(
                "Policy", "local_hostname", "one word with no control characters", self.local_hostname
            ))
        if self.tls_ciphers is not None and (
            not isinstance(self.tls_ciphers, str) or not _CIPHER_STRING.match(self.tls_ciphers)
        ):
            raise ValueError(_messages.must_be(
                "Policy", "tls_ciphers", "an OpenSSL cipher string such as 'DEFAULT'", self.tls_ciphers
            ))
        if not self.verify and self.tls != "none" and not _LIBRARY_UNVERIFIED.get():
            # stacklevel: the caller of Policy(...), through the dataclass __init__.
            warnings.warn(
                f"Policy(verify=False) for {self.address}: the connection is encrypted, but the "
                "server's certificate and host name are not checked, so anyone on the network "
                "path could pose as the server and read the credentials and mail; give the "
                "server's CA as ca_file= instead",
                InsecureTLSWarning,
                stacklevel=3,
            )

    def _check_flags(self) -> None:
        # A string such as "false" is true: a switch that may turn security off takes a bool only.
        for name in ("verify", "allow_plaintext_auth", "helo_fallback", "chunking"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(_messages.flag("Policy", name, getattr(self, name)))
        if self.require_auth is not None and not isinstance(self.require_auth, bool):
            raise ValueError(_messages.flag("Policy", "require_auth", self.require_auth, optional=True))

    def _check_credentials(self) -> None:
        for name in ("username", "password"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or "\r" in value
                                      or "\n" in value or "\0" in value):
                raise ValueError(_messages.must_be(
                    "Policy", name, "a string with no CR, LF or NUL", value, secret=True
                ))
        if self.password is not None and not self.username:
            raise ValueError(_messages.credentials_without_username())
        if self.require_auth and not self.username:
            raise ValueError(_messages.require_auth_without_username())
        if self.username and self.tls == "none" and not self.allow_plaintext_auth:
            raise ValueError(_messages.plaintext_credentials())

    def _check_auth_mechanisms(self) -> None:
        if self.auth_mechanisms is None:
            return
        given: object = self.auth_mechanisms
        if isinstance(given, str | bytes) or not isinstance(given, Iterable):
            raise ValueError(_messages.auth_mechanisms(SUPPORTED_AUTH_MECHANISMS, given))
        names = tuple(name.upper() if isinstance(name, str) else "" for name in given)
        if not names or not all(names):
            raise ValueError(_messages.auth_mechanisms(SUPPORTED_AUTH_MECHANISMS, given))
        wrong = _auth._check_mechanism_names(names, self.oauth2_token, self.authenticators)
        if wrong:
            raise ValueError(wrong)
        object.__setattr__(self, "auth_mechanisms", names)

    def _check_files(self) -> None:
        for name in ("ca_file", "client_cert", "client_key"):
            path = getattr(self, name)
            if path is not None and not isinstance(path, str | os.PathLike):
                raise ValueError(_messages.must_be("Policy", name, "the path of a PEM file", path))
            if path is not None and not os.path.isfile(path):
                raise ValueError(_messages.not_a_file(name, path))
        if self.client_key and not self.client_cert:
            raise ValueError(_messages.client_key_without_cert())

    def _check_dkim(self) -> None:
        given: object = self.dkim
        if isinstance(given, Mapping):  # from a settings file: the arguments of DKIM
            given = DKIM(**given)
            object.__setattr__(self, "dkim", given)
        if given is not None and not isinstance(given, DKIM):
            raise ValueError(_messages.must_be(
                "Policy", "dkim", "a syncsmtp.DKIM or None", given, secret=True
            ))

    # -- derived values ---------------------------------------------------------

    @property
    def effective_port(self) -> int:
        """The port that will be used (``port`` is filled in at construction)."""
        return cast(int, self.port)

    @property
    def auth_required(self) -> bool:
        """Whether a send fails when it cannot authenticate."""
        if self.require_auth is None:
            return bool(self.username)
        return self.require_auth

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The AUTH mechanisms to try, in order of preference (where the
        server is not authenticated: see :meth:`sasl_authenticators`)."""
        return tuple(item.mechanism for item in self.sasl_authenticators())

    def sasl_authenticators(self, verified_tls: bool = False) -> tuple[Authenticator, ...]:
        """The authenticators AUTH tries, in order of preference: ``auth_mechanisms``
        when given, else the default, in which PLAIN comes before CRAM-MD5 on a
        connection with TLS whose certificate was verified (``verified_tls``)."""
        usable = _auth._usable(password=self.password, oauth2_token=self.oauth2_token,
                               authenticators=self.authenticators, verified_tls=verified_tls)
        order = self.auth_mechanisms or tuple(usable)
        return tuple(usable[name] for name in order if name in usable)

    @property
    def address(self) -> str:
        """``host:port``, with brackets around an IPv6 address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def with_options(self, **changes: Any) -> Policy:
        """A copy with some fields changed, validated again.

        A port that was not given (``port=None``, the default) is the default
        of the new ``tls``: ``Policy(host=h).with_options(tls="implicit")``
        connects to 465. A port given explicitly, to the constructor, in a
        URL or here, is kept. ``port=None`` here goes back to the default.
        """
        if "port" not in changes and self._port_follows_tls:
            changes["port"] = None
        return replace(self, **changes)

    def __repr__(self) -> str:
        shown = []
        for item in fields(self):
            if not item.init:
                continue
            value = getattr(self, item.name)
            if item.name in ("password", "oauth2_token") and value is not None:
                shown.append(f"{item.name}='<redacted>'")
            elif value != item.default or item.name in ("host", "port", "tls"):
                shown.append(f"{item.name}={value!r}")
        return f"Policy({', '.join(shown)})"

    __str__ = __repr__

    # -- URLs ---------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str) -> Policy:
        """Build a policy from a URL such as
        ``smtp+starttls://user:pass@smtp.example.com:587``.

        Schemes: ``smtp`` and ``smtp+starttls`` (STARTTLS required; ``smtp+tls``
        is an alias), ``smtps`` and ``smtp+ssl`` (implicit TLS),
        ``smtp+opportunistic``, and ``smtp+plain`` (no TLS). User name and
        password are percent-decoded. Query parameters set the other fields:
        ``verify``, ``ca_file``, ``client_cert``, ``client_key``,
        ``auth_mechanisms`` (comma-separated), ``require_auth``,
        ``allow_plaintext_auth``, ``helo_fallback``, ``local_hostname``,
        ``tls_ciphers``, ``chunking``, ``idle_limit`` (seconds). ``dkim`` cannot be given in a URL (a
        private key does not belong in one): add it with
        ``with_options(dkim=syncsmtp.DKIM(...))``.

        Errors never quote the URL's user name or password: a password with
        an unencoded ``/``, ``?``, ``#`` or ``@`` is refused with a request to
        percent-encode it, not echoed.
        """
        if not isinstance(url, str):
            raise ValueError(_messages.must_be("Policy.from_url()", "url", "a string", url, secret=True))
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        if not _USERINFO.match(userinfo) or "@" in url[len(parts.scheme) + 3 + len(parts.netloc):]:
            raise ValueError(_messages.url_userinfo())
        try:
            port = parts.port
        except ValueError:
            raise ValueError(_messages.url_port()) from None
        scheme = parts.scheme.lower()
        if scheme not in _URL_SCHEMES:
            raise ValueError(_messages.url_scheme(sorted(_URL_SCHEMES), parts.scheme))
        if not parts.hostname:
            raise ValueError(_messages.url_host())
        options: dict[str, Any] = {"tls": _URL_SCHEMES[scheme]}
        for key, values in parse_qs(parts.query, keep_blank_values=True, strict_parsing=False).items():
            if key == "dkim":
                raise ValueError(
                    "Policy.from_url() url cannot give dkim: a DKIM private key does not belong in "
                    "a URL; add it with policy.with_options(dkim=syncsmtp.DKIM(...))"
                )
            if key not in _URL_OPTIONS:
                raise ValueError(_messages.url_option(key, _URL_OPTIONS))
            options[key] = _parse_option(key, values[-1])
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            **options,
        )


def unverified_copy(policy: Policy) -> Policy:
    """``policy`` without certificate verification and without credentials,
    made without a warning: for a second look at a server whose certificate
    did not verify, to show what it is. Nothing is ever sent over it."""
    token = _LIBRARY_UNVERIFIED.set(True)
    try:
        return policy.with_options(verify=False, username=None, password=None, require_auth=None,
                                   oauth2_token=None, auth_mechanisms=None)
    finally:
        _LIBRARY_UNVERIFIED.reset(token)


def _parse_option(key: str, value: str) -> Any:
    if key in ("verify", "require_auth", "allow_plaintext_auth", "helo_fallback", "chunking"):
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(_messages.url_flag(key, value))
    if key == "auth_mechanisms":
        return tuple(name.strip() for name in value.split(",") if name.strip())
    if key == "idle_limit":
        try:
            return float(value)
        except ValueError:
            raise ValueError(_messages.url_number(key, value)) from None
    return value
