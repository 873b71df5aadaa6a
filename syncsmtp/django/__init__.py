"""Django integration: an email backend and system checks.

In ``settings.py``::

    EMAIL_BACKEND = "syncsmtp.django.EmailBackend"
    INSTALLED_APPS = [..., "syncsmtp.django"]   # optional: the system checks

Every ``EMAIL_*`` setting keeps its meaning; ``EMAIL_URL`` and the
``SYNCSMTP`` dict reach the policy options Django has no setting for.
"""

from .backend import Connection, EmailBackend

__all__ = ["Connection", "EmailBackend"]
