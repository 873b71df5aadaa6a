"""The Celery app of the tests' workers (``celery -A celery_app worker``), and of the test process.

Configured by environment variables, set by tests/celery_support.py:
SYNCSMTP_TEST_REDIS (broker and result backend URL), SYNCSMTP_TEST_QUEUE,
SYNCSMTP_TEST_WINDOW, SYNCSMTP_TEST_BASELINE (also register the baseline task
of tests/benchmarks/bench_celery.py), and DJANGO_SETTINGS_MODULE: the workers build
their policy from the Django settings (tests/django_site/celery_settings.py),
as a Django project's workers do.
"""

from __future__ import annotations

import os

from celery import Celery


def make_app(redis_url: str, queue: str) -> Celery:
    """A Celery app on the private Redis, JSON only, late acknowledgement friendly."""
    app = Celery("syncsmtp_tests", broker=redis_url, backend=redis_url)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_default_queue=queue, worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        result_expires=3600,
    )
    return app


if "SYNCSMTP_TEST_REDIS" in os.environ:
    import django

    import syncsmtp.celery
    import syncsmtp.django

    django.setup()
    app = make_app(os.environ["SYNCSMTP_TEST_REDIS"], os.environ.get("SYNCSMTP_TEST_QUEUE", "celery"))
    syncsmtp.celery.install(
        app, syncsmtp.django.settings_policy, window=int(os.environ.get("SYNCSMTP_TEST_WINDOW", "32")),
        retry_backoff=0.5, max_retries=3, timeout=30.0,
    )
    if os.environ.get("SYNCSMTP_TEST_BASELINE"):
        import bench_celery  # tests/benchmarks, on the benchmark workers' PYTHONPATH

        bench_celery.register_baseline(app)
