"""Run Django's own SMTP backend tests with syncsmtp's backend in place of Django's.

tests/test_django_own_suite.py hands :mod:`django_own_suite.settings` to the
``tests/runtests.py`` of the sdist of the installed Django, in a subprocess;
nothing of Django's is copied here.
"""
