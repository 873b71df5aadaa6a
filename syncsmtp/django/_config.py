"""Django settings to a :class:`~syncsmtp.Policy` (no SMTP here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .._settings import POLICY_OPTIONS, policy_from_settings, syncsmtp_options
from ..policy import Policy

__all__ = ["ConnectionSettings", "build_policy", "connection_settings"]

# What Django's own settings say about the connection; the rest of a URL's
# options are policy options, like those of SYNCSMTP.
_CONNECTION_FIELDS = frozenset({"host", "port", "username", "password", "client_cert", "client_key"})


@dataclasses.dataclass
class ConnectionSettings:
    """The connection settings of Django's SMTP backend, before constructor
    arguments override them; ``options`` are further Policy keywords."""

    host: str
    port: int
    username: str
    password: str
    use_tls: bool
    use_ssl: bool
    ssl_keyfile: str | None
    ssl_certfile: str | None
    # The TLS mode when neither use_tls nor use_ssl is set: a URL may say "opportunistic".
    fallback_tls: str
    options: dict[str, Any]


def connection_settings() -> ConnectionSettings:
    """From ``EMAIL_URL`` (or ``SYNCSMTP["url"]``) when one is set, else from
    the ``EMAIL_*`` settings; then the ``SYNCSMTP`` options."""
    extra = _syncsmtp_setting()
    url = extra.pop("url", None) or getattr(settings, "EMAIL_URL", None)
    if not url:
        found = ConnectionSettings(
            host=settings.EMAIL_HOST, port=settings.EMAIL_PORT,
            username=settings.EMAIL_HOST_USER, password=settings.EMAIL_HOST_PASSWORD,
            use_tls=settings.EMAIL_USE_TLS, use_ssl=settings.EMAIL_USE_SSL,
            ssl_keyfile=settings.EMAIL_SSL_KEYFILE, ssl_certfile=settings.EMAIL_SSL_CERTFILE,
            fallback_tls="none", options={},
        )
    else:
        try:
            from_url = Policy.from_url(url)
        except ValueError as error:
            raise ImproperlyConfigured(f"EMAIL_URL: {error}") from None
        found = ConnectionSettings(
            host=from_url.host, port=from_url.effective_port,
            username=from_url.username or "", password=from_url.password or "",
            use_tls=from_url.tls == "starttls", use_ssl=from_url.tls == "implicit",
            ssl_keyfile=from_url.client_key, ssl_certfile=from_url.client_cert,
            fallback_tls="opportunistic" if from_url.tls == "opportunistic" else "none",
            options=_policy_options(from_url),
        )
    found.options.update(extra)
    return found


def _policy_options(policy: Policy) -> dict[str, Any]:
    """The options a URL set beyond the connection settings and the TLS mode."""
    defaults = Policy(host="localhost", tls=policy.tls)
    return {
        name: getattr(policy, name) for name in POLICY_OPTIONS - _CONNECTION_FIELDS - {"tls"}
        if getattr(policy, name) != getattr(defaults, name)
    }


def _syncsmtp_setting() -> dict[str, Any]:
    try:
        return syncsmtp_options(getattr(settings, "SYNCSMTP", None), frozenset({"url"}))
    except ValueError as error:
        raise ImproperlyConfigured(str(error)) from None


def build_policy(
    *, host: str, port: int | str, username: str | None, password: str | None, use_tls: bool,
    use_ssl: bool, ssl_keyfile: str | None, ssl_certfile: str | None, fallback_tls: str,
    options: Mapping[str, Any],
) -> Policy:
    """The policy that does what Django's SMTP backend does with these
    settings, with ``options`` (from a URL or ``SYNCSMTP``) applied last."""
    try:
        return policy_from_settings(
            host=host, port=port, username=username, password=password, use_tls=use_tls,
            use_ssl=use_ssl, client_cert=ssl_certfile, client_key=ssl_keyfile,
            fallback_tls=fallback_tls, options=options, names="email",
            plaintext_hint="Django's own SMTP backend would send them in plaintext: set "
                           "EMAIL_USE_TLS or EMAIL_USE_SSL",
        )
    except ValueError as error:
        raise ImproperlyConfigured(str(error)) from None
