"""Settings of the Django project the tests configure (``DJANGO_SETTINGS_MODULE=django_site.settings``).

The email server is set per test with ``django.test.override_settings``; these
defaults point at a port nothing listens on, so a test that forgets to set one
fails instead of reaching a real server.
"""

SECRET_KEY = "syncsmtp-tests-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "syncsmtp.django",
]
DATABASES: dict[str, dict[str, str]] = {}
ROOT_URLCONF = "django_site.urls"
ALLOWED_HOSTS = ["127.0.0.1"]
MIDDLEWARE: list[str] = []

EMAIL_BACKEND = "syncsmtp.django.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = 9  # discard: nothing listens there
EMAIL_USE_TLS = False
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = "webmaster@example.com"
