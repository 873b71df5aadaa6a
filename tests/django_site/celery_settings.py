"""Settings of the tests' Celery workers: tests/django_site/settings.py, with
the SMTP server the test started (SYNCSMTP_TEST_SMTP_PORT)."""

import os

from .settings import *  # noqa: F403

EMAIL_PORT = int(os.environ["SYNCSMTP_TEST_SMTP_PORT"])
EMAIL_USE_TLS = False
EMAIL_TIMEOUT = 30
