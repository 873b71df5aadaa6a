"""A framework's mail settings to a :class:`~syncsmtp.Policy`: what the Django
and Flask integrations share (no Twisted here).

Both frameworks describe a server with host, port, user, password and two TLS
switches, log in only when both user and password are set, and take further
Policy options from a ``SYNCSMTP`` dict; they differ in names only.

Passwords and URLs read from settings are kept as :class:`SecretStr` and
:class:`SecretURL`: equal to what was set, but with a repr that hides the
password, because error reports and debuggers show the repr of every local
variable, argument and dict value in the traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from .policy import Policy

__all__ = [
    "POLICY_OPTIONS", "REDACTED", "SecretStr", "SecretURL", "hide_password", "hide_url",
    "policy_from_settings", "redact_url", "syncsmtp_options", "tls_mode",
]

#: The keyword arguments of :class:`~syncsmtp.Policy`.
POLICY_OPTIONS = frozenset(field.name for field in dataclasses.fields(Policy) if field.init)

#: What a hidden password shows as.
REDACTED = "********"

_T = TypeVar("_T")


class SecretStr(str):
    """A password: a str in every way but its repr, which hides it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(REDACTED)


class SecretURL(str):
    """A URL whose repr hides the password in it (see :func:`redact_url`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(redact_url(self))


def redact_url(url: str) -> str:
    """``url`` with what follows the user name in its userinfo replaced by
    REDACTED. The userinfo is taken to end at the last ``@``, so that a
    password with an unencoded ``/``, ``?``, ``#`` or ``@`` is hidden whole
    (a URL that does not parse is still shown without it)."""
    head, at, host = str(url).rpartition("@")
    if not at:
        return str(url)
    scheme, separator, userinfo = head.partition("://")
    if not separator:
        scheme, separator, userinfo = head.partition(":")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{separator}{user}{':' + REDACTED if colon else ''}@{host}"


def hide_password(value: _T) -> _T:
    """A non-empty str as a :class:`SecretStr`; anything else as it is."""
    if isinstance(value, str) and value and not isinstance(value, SecretStr):
        return cast(_T, SecretStr(value))
    return value


def hide_url(value: _T) -> _T:
    """A str as a :class:`SecretURL`; anything else as it is."""
    if isinstance(value, str) and value and not isinstance(value, SecretURL):
        return cast(_T, SecretURL(value))
    return value


def syncsmtp_options(value: object, extra_keys: frozenset[str]) -> dict[str, Any]:
    """A copy of the ``SYNCSMTP`` setting: Policy options and ``extra_keys``,
    its password and URL hidden. ValueError when it is not a dict or has
    another key."""
    value = value or {}
    if not isinstance(value, Mapping):
        raise ValueError("SYNCSMTP must be a dict of syncsmtp.Policy options")
    unknown = sorted(map(str, set(value) - POLICY_OPTIONS - extra_keys))
    if unknown:
        raise ValueError(
            f"SYNCSMTP has unknown keys {', '.join(unknown)}; it takes syncsmtp.Policy options "
            f"({', '.join(sorted(POLICY_OPTIONS))}) and {', '.join(sorted(extra_keys))}"
        )
    options = dict(value)
    for key, hide in (("password", hide_password), ("url", hide_url)):
        if key in options:
            options[key] = hide(options[key])
    return options


def tls_mode(*, use_tls: bool, use_ssl: bool, fallback_tls: str, options: Mapping[str, Any]) -> str:
    """The ``tls`` of the policy these settings make: ``options["tls"]`` when
    given, else implicit with ``use_ssl``, STARTTLS with ``use_tls``, else
    ``fallback_tls``."""
    return str(options.get("tls") or ("implicit" if use_ssl else "starttls" if use_tls else fallback_tls))


def policy_from_settings(
    *, host: str, port: int | str | None, username: str | None, password: str | None, use_tls: bool,
    use_ssl: bool, client_cert: str | None = None, client_key: str | None = None,
    fallback_tls: str = "none", options: Mapping[str, Any], names: str, plaintext_hint: str,
) -> Policy:
    """The policy for these settings, with ``options`` applied last.

    TLS is implicit with ``use_ssl``, STARTTLS with ``use_tls``, else
    ``fallback_tls``. ValueError says what is wrong with the ``names``
    settings; for credentials without TLS it adds ``plaintext_hint`` (what
    to set instead) and how to allow plaintext AUTH explicitly.
    """
    # Rebound so that this frame's locals hide it too.
    password = hide_password(password)
    # Both frameworks' own backends log in only when both are set.
    credentials = bool(username and password)
    fields: dict[str, Any] = {
        "host": host,
        "port": None if port is None else int(port),  # None: the TLS mode's default
        "tls": tls_mode(use_tls=use_tls, use_ssl=use_ssl, fallback_tls=fallback_tls, options={}),
        "username": username if credentials else None,
        "password": password if credentials else None,
        "client_cert": client_cert or None,
        "client_key": client_key or None,
        **options,
    }
    try:
        return Policy(**fields)
    except (TypeError, ValueError) as error:
        hint = ""
        if credentials and fields["tls"] == "none":
            hint = f" ({plaintext_hint}, or SYNCSMTP = {{'allow_plaintext_auth': True}} to allow it)"
        raise ValueError(f"the {names} settings do not make a valid syncsmtp policy: {error}{hint}") from None
