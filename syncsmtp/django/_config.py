"""Django settings to a :class:`~syncsmtp.Policy` (no SMTP here).

Django's error reports (the DEBUG page, the report mailed to ADMINS) hide a
setting by its name (PASS, KEY, SECRET, ...): ``EMAIL_HOST_PASSWORD`` and
``SYNCSMTP["password"]``, not the password in ``EMAIL_URL`` or
``SYNCSMTP["url"]``. :func:`hide_secret_settings` makes those URLs
:class:`~syncsmtp._settings.SecretURL` in place, and passwords read from the
settings are :class:`~syncsmtp._settings.SecretStr`, hidden in the frames a
report shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from .._settings import (
    POLICY_OPTIONS,
    SecretURL,
    hide_password,
    hide_url,
    policy_from_settings,
    syncsmtp_options,
)
from ..policy import Policy

__all__ = ["ConnectionSettings", "build_policy", "connection_settings", "hide_secret_settings"]

# What Django's own settings say about the connection; the rest of a URL's
# options are policy options, like those of SYNCSMTP.
_CONNECTION_FIELDS = frozenset({"host", "port", "username", "password", "client_cert", "client_key"})


@dataclasses.dataclass
class ConnectionSettings:
    """The connection settings of Django's SMTP backend, before constructor
    arguments override them; ``options`` are further Policy keywords."""

    host: str
    port: int | None  # None: a URL without a port, the TLS mode's default
    username: str
    password: str = dataclasses.field(repr=False)
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
    # Without the app in INSTALLED_APPS, the first backend is the first chance.
    hide_secret_settings()
    extra = _syncsmtp_setting()
    extra.pop("celery", None)  # how CeleryEmailBackend queues, not a policy option
    url = extra.pop("url", None) or hide_url(getattr(settings, "EMAIL_URL", None))
    if not url:
        found = ConnectionSettings(
            host=settings.EMAIL_HOST, port=settings.EMAIL_PORT,
            username=settings.EMAIL_HOST_USER, password=hide_password(settings.EMAIL_HOST_PASSWORD),
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
            host=from_url.host, port=None if from_url._port_follows_tls else from_url.port,
            username=from_url.username or "", password=hide_password(from_url.password or ""),
            use_tls=from_url.tls == "starttls", use_ssl=from_url.tls == "implicit",
            ssl_keyfile=from_url.client_key, ssl_certfile=from_url.client_cert,
            fallback_tls="opportunistic" if from_url.tls == "opportunistic" else "none",
            options=_policy_options(from_url),
        )
    found.options.update(extra)
    return found


def hide_secret_settings() -> None:
    """Make ``EMAIL_URL`` and ``SYNCSMTP["url"]`` URLs whose repr hides the
    password, in place: equal strings, so every reader gets what was set.
    Called when the app is ready, whenever either setting changes
    (``override_settings``), and by each backend."""
    url = getattr(settings, "EMAIL_URL", None)
    if isinstance(url, str) and not isinstance(url, SecretURL):
        settings.EMAIL_URL = hide_url(url)
    options = getattr(settings, "SYNCSMTP", None)
    if isinstance(options, Mapping) and not isinstance(options, dict):
        # Reports look into dicts only (to hide keys such as "password"); another mapping shows whole.
        settings.SYNCSMTP = options = dict(options)
    if isinstance(options, dict) and isinstance(options.get("url"), str) \
            and not isinstance(options["url"], SecretURL):
        options["url"] = hide_url(options["url"])  # in place: whoever holds the dict sees the change


def _hide_changed_settings(*, setting: str, **kwargs: Any) -> None:
    if setting in ("EMAIL_URL", "SYNCSMTP"):
        hide_secret_settings()


setting_changed.connect(_hide_changed_settings, dispatch_uid="syncsmtp.django.hide_secret_settings")


def _policy_options(policy: Policy) -> dict[str, Any]:
    """The options a URL set beyond the connection settings and the TLS mode."""
    defaults = Policy(host="localhost", tls=policy.tls)
    return {
        name: getattr(policy, name) for name in POLICY_OPTIONS - _CONNECTION_FIELDS - {"tls"}
        if getattr(policy, name) != getattr(defaults, name)
    }


def _syncsmtp_setting() -> dict[str, Any]:
    try:
        return syncsmtp_options(getattr(settings, "SYNCSMTP", None), frozenset({"url", "celery"}))
    except ValueError as error:
        raise ImproperlyConfigured(str(error)) from None


def build_policy(
    *, host: str, port: int | str | None, username: str | None, password: str | None, use_tls: bool,
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
