"""The app that registers syncsmtp's system checks (``INSTALLED_APPS``: ``"syncsmtp.django"``)."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["SyncSMTPConfig"]


class SyncSMTPConfig(AppConfig):  # type: ignore[misc]  # Django is not typed
    name = "syncsmtp.django"
    label = "syncsmtp"
    verbose_name = "syncsmtp"

    def ready(self) -> None:
        from django.core import checks

        from .checks import check_email_settings

        checks.register(check_email_settings, checks.Tags.security)
