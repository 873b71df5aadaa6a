"""A framework's mail settings to a :class:`~syncsmtp.Policy`: what the Django
and Flask integrations share (no Twisted here).

Both frameworks describe a server with host, port, user, password and two TLS
switches, log in only when both user and password are set, and take further
Policy options from a ``SYNCSMTP`` dict; they differ in names only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .policy import Policy

__all__ = ["POLICY_OPTIONS", "policy_from_settings", "syncsmtp_options"]

#: The keyword arguments of :class:`~syncsmtp.Policy`.
POLICY_OPTIONS = frozenset(field.name for field in dataclasses.fields(Policy))


def syncsmtp_options(value: object, extra_keys: frozenset[str]) -> dict[str, Any]:
    """A copy of the ``SYNCSMTP`` setting: Policy options and ``extra_keys``.
    ValueError when it is not a dict or has another key."""
    value = value or {}
    if not isinstance(value, Mapping):
        raise ValueError("SYNCSMTP must be a dict of syncsmtp.Policy options")
    unknown = sorted(map(str, set(value) - POLICY_OPTIONS - extra_keys))
    if unknown:
        raise ValueError(
            f"SYNCSMTP has unknown keys {', '.join(unknown)}; it takes syncsmtp.Policy options "
            f"({', '.join(sorted(POLICY_OPTIONS))}) and {', '.join(sorted(extra_keys))}"
        )
    return dict(value)


def policy_from_settings(
    *, host: str, port: int | str, username: str | None, password: str | None, use_tls: bool,
    use_ssl: bool, client_cert: str | None = None, client_key: str | None = None,
    fallback_tls: str = "none", options: Mapping[str, Any], names: str, plaintext_hint: str,
) -> Policy:
    """The policy for these settings, with ``options`` applied last.

    TLS is implicit with ``use_ssl``, STARTTLS with ``use_tls``, else
    ``fallback_tls``. ValueError says what is wrong with the ``names``
    settings; for credentials without TLS it adds ``plaintext_hint`` (what
    to set instead) and how to allow plaintext AUTH explicitly.
    """
    # Both frameworks' own backends log in only when both are set.
    credentials = bool(username and password)
    fields: dict[str, Any] = {
        "host": host,
        "port": int(port),
        "tls": "implicit" if use_ssl else "starttls" if use_tls else fallback_tls,
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
