"""Settings for Django's ``tests/runtests.py`` (``--settings=django_own_suite.settings``).

Django's own test settings (its ``test_sqlite`` module, found on the path
runtests.py runs from), plus three things:

- ``django.core.mail.backends.smtp.EmailBackend`` *is* syncsmtp's backend
  from here on: Django's tests name it by that path and build it as
  ``smtp.EmailBackend(...)`` from that module;
- ``SYNCSMTP`` allows a password over plaintext, as Django's backend sends
  it (the tests' server speaks no TLS);
- ``TEST_RUNNER`` records each test's outcome in the JSON file named by
  ``SYNCSMTP_SUITE_RESULTS``.
"""

import django.core.mail.backends.smtp
from test_sqlite import *  # noqa: F403  # Django's own test settings, from its tests/ folder

from syncsmtp.django import EmailBackend

django.core.mail.backends.smtp.EmailBackend = EmailBackend  # type: ignore[misc]

SYNCSMTP = {"allow_plaintext_auth": True}
TEST_RUNNER = "django_own_suite.runner.RecordingRunner"
