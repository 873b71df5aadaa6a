"""Django integration: an email backend and system checks.

In ``settings.py``::

    EMAIL_BACKEND = "syncsmtp.django.EmailBackend"
    INSTALLED_APPS = [..., "syncsmtp.django"]   # optional: the system checks

``EMAIL_BACKEND = "syncsmtp.django.CeleryEmailBackend"`` queues the mail
for syncsmtp's Celery workers instead (see :mod:`syncsmtp.celery`).

Every ``EMAIL_*`` setting keeps its meaning; ``EMAIL_URL`` and the
``SYNCSMTP`` dict reach the policy options Django has no setting for.
"""

from .backend import Connection, EmailBackend
from .celery_backend import CeleryEmailBackend, settings_policy

__all__ = ["CeleryEmailBackend", "Connection", "EmailBackend", "settings_policy"]
