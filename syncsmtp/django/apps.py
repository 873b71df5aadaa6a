"""The app (``INSTALLED_APPS``: ``"syncsmtp.django"``) that registers syncsmtp's system checks and
hides the password in ``EMAIL_URL`` / ``SYNCSMTP["url"]`` from error reports from start-up."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["SyncSMTPConfig"]


class SyncSMTPConfig(AppConfig):  # type: ignore[misc]  # Django is not typed
    name = "syncsmtp.django"
    label = "syncsmtp"
    verbose_name = "syncsmtp"

    def ready(self) -> None:
        from django.core import checks

        from ._config import hide_secret_settings
        from .checks import check_email_settings

        checks.register(check_email_settings, checks.Tags.security)
        # Before any error report lists the settings.
        hide_secret_settings()
