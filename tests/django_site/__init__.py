"""A minimal Django project for tests/test_django.py (settings only: no URLs, no models)."""
