"""System checks (``manage.py check``) for the email settings syncsmtp will use."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

__all__ = ["check_email_settings"]

# The backend's import paths: the package re-exports it.
BACKENDS = frozenset({"syncsmtp.django.EmailBackend", "syncsmtp.django.backend.EmailBackend"})


def check_email_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Errors for settings the backend refuses, warnings for insecure ones."""
    if getattr(settings, "EMAIL_BACKEND", None) not in BACKENDS:
        return []
    from .backend import EmailBackend

    try:
        policy = EmailBackend().policy
    except (ImproperlyConfigured, ValueError) as error:
        return [checks.Error(str(error), hint="Fix the EMAIL_* settings, EMAIL_URL or SYNCSMTP.",
                      id="syncsmtp.E001")]
    found: list[Any] = []
    if policy.username and policy.allow_plaintext_auth and policy.tls in ("none", "opportunistic"):
        found.append(checks.Warning(
            f"the password for {policy.address} may be sent in plaintext",
            hint="Set EMAIL_USE_TLS or EMAIL_USE_SSL and drop allow_plaintext_auth from SYNCSMTP.",
            id="syncsmtp.W001",
        ))
    if not policy.verify:
        found.append(checks.Warning(
            f"the certificate of {policy.address} is not verified: anyone on the path can read "
            "the mail and the password",
            hint="Remove verify=False; for a private CA, set ca_file in SYNCSMTP or EMAIL_URL.",
            id="syncsmtp.W002",
        ))
    if policy.tls == "none" and not _is_loopback(policy.host):
        found.append(checks.Warning(
            f"mail to {policy.address} travels unencrypted",
            hint="Set EMAIL_USE_TLS (STARTTLS) or EMAIL_USE_SSL, or SYNCSMTP = {'tls': 'opportunistic'}.",
            id="syncsmtp.W003",
        ))
    return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
