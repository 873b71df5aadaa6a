"""Messages per second through Celery workers to Postfix's smtp-sink: syncsmtp's tasks
against one task per message calling Django's SMTP backend (as django-celery-email does).

    python tests/benchmarks/bench_celery.py [messages]      # default 10000

Starts a private redis-server (broker and result backend), smtp-sink on
127.0.0.1, and one ``celery worker`` (prefork pool, 2 processes) that has
both kinds of task. The same Django messages (about 1 KiB each) go through:

- syncsmtp: ``syncsmtp.django.CeleryEmailBackend``: 100 messages per
  ``syncsmtp.send_many`` task, each worker process sending over its one
  reused connection, pipelined, with the delivery store's bookkeeping;
- baseline: :func:`baseline_send`, one task per message carrying the
  message's fields as a dict, which rebuilds the EmailMessage and sends it
  with ``django.core.mail.backends.smtp.EmailBackend`` (a new connection,
  EHLO and QUIT per task), as django-celery-email's task does.

Each run is timed from the first message queued to the last task's result.
Prints both rates and their ratio; asserts nothing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

BASELINE_TASK = "bench.django_smtp_send"


def register_baseline(app: Any) -> None:
    """Register the baseline task on ``app`` (the workers call this)."""

    @app.task(name=BASELINE_TASK, serializer="json")  # type: ignore[untyped-decorator]
    def django_smtp_send(fields: dict[str, Any]) -> int:
        from django.core.mail import EmailMessage
        from django.core.mail.backends.smtp import EmailBackend

        message = EmailMessage(subject=fields["subject"], body=fields["body"],
                               from_email=fields["from_email"], to=fields["to"],
                               headers=fields["headers"])
        return int(EmailBackend(fail_silently=False).send_messages([message]))


def _messages(count: int, tag: str) -> list[Any]:
    from django.core.mail import EmailMessage

    body = ("The quick brown fox jumps over the lazy dog. " * 22 + "\n")
    return [EmailMessage(subject=f"{tag} {n}", body=body, from_email="bench@example.com",
                         to=[f"user{n}@example.com"], headers={"Message-ID": f"<{tag}.{n}@example.com>"})
            for n in range(count)]


def _wait(results: list[Any]) -> None:
    for result in results:
        result.get(timeout=600)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    from celery_support import CeleryWorker, RedisServer
    from postfix import SmtpSink

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
    import django

    django.setup()
    from celery_app import make_app
    from django.core import mail
    from django.test import override_settings

    import syncsmtp
    import syncsmtp.celery

    queue = "bench"
    with SmtpSink(backlog=256) as sink:
        redis = RedisServer().start()
        try:
            env = {"SYNCSMTP_TEST_REDIS": redis.url, "SYNCSMTP_TEST_QUEUE": queue,
                   "SYNCSMTP_TEST_SMTP_PORT": str(sink.port), "SYNCSMTP_TEST_BASELINE": "1",
                   "DJANGO_SETTINGS_MODULE": "django_site.celery_settings",
                   "PYTHONPATH": str(HERE)}
            app = make_app(redis.url, queue)
            syncsmtp.celery.install(app, syncsmtp.Policy(host="127.0.0.1", port=sink.port, tls="none"),
                                    queue=queue)
            with CeleryWorker(env, concurrency=2, queue=queue):
                # Warm-up: both kinds of task, so each worker process has imported everything.
                _wait([app.send_task(BASELINE_TASK, args=(_fields(m),), queue=queue)
                       for m in _messages(20, "warm-b")])
                with override_settings(EMAIL_BACKEND="syncsmtp.django.CeleryEmailBackend",
                                       SYNCSMTP={"celery": {"chunk": 100, "queue": queue}}):
                    warm = mail.get_connection()
                    warm.send_messages(_messages(200, "warm-s"))
                    _wait(warm.results)

                    messages = _messages(count, "syncsmtp")
                    started = time.monotonic()
                    connection = mail.get_connection()
                    connection.send_messages(messages)
                    _wait(connection.results)
                    ours = count / (time.monotonic() - started)

                messages = _messages(count, "baseline")
                started = time.monotonic()
                results = [app.send_task(BASELINE_TASK, args=(_fields(m),), queue=queue) for m in messages]
                _wait(results)
                baseline = count / (time.monotonic() - started)
        finally:
            redis.stop()
    print(f"{count} messages, 2 worker processes, smtp-sink on 127.0.0.1")
    print(f"syncsmtp.celery (chunks of 100, reused connections, pipelined): {ours:8.0f} msg/s")
    print(f"one task per message, Django's SMTP backend:                     {baseline:8.0f} msg/s")
    print(f"ratio: {ours / baseline:.1f}x")


def _fields(message: Any) -> dict[str, Any]:
    """A message as django-celery-email's task receives it: its fields, as JSON."""
    return {"subject": message.subject, "body": message.body, "from_email": message.from_email,
            "to": list(message.to), "headers": dict(message.extra_headers)}


if __name__ == "__main__":
    main()
