"""``syncsmtp.django.CeleryEmailBackend``: queue Django's mail for syncsmtp's Celery workers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage, sanitize_address

from ..policy import Policy
from .backend import EmailBackend, _envelope_address

__all__ = ["CeleryEmailBackend", "settings_policy"]

_DEFAULT_CHUNK = 100


def settings_policy() -> Policy:
    """The :class:`~syncsmtp.Policy` that Django's ``EMAIL_*`` settings,
    ``EMAIL_URL`` and ``SYNCSMTP`` make, as :class:`EmailBackend` sends with
    it. Give it to :func:`syncsmtp.celery.install` so that each worker
    builds its policy from the settings::

        syncsmtp.celery.install(app, syncsmtp.django.settings_policy)
    """
    policy: Policy = EmailBackend().policy
    return policy


def _celery_options() -> dict[str, Any]:
    options = getattr(settings, "SYNCSMTP", None) or {}
    found = options.get("celery", {}) if isinstance(options, Mapping) else {}
    if not isinstance(found, Mapping) or set(found) - {"chunk", "queue"}:
        raise ImproperlyConfigured("SYNCSMTP['celery'] must be a dict with the keys 'chunk' and 'queue' only")
    chunk = found.get("chunk", _DEFAULT_CHUNK)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ImproperlyConfigured(f"SYNCSMTP['celery']['chunk'] must be a positive integer, not {chunk!r}")
    queue = found.get("queue")
    if queue is not None and not (isinstance(queue, str) and queue):
        raise ImproperlyConfigured(f"SYNCSMTP['celery']['queue'] must be a queue name, not {queue!r}")
    return {"chunk": chunk, "queue": queue}


class CeleryEmailBackend(BaseEmailBackend):  # type: ignore[misc]  # Django is not typed
    """An email backend that queues each message for syncsmtp's Celery tasks
    (see :doc:`celery`) instead of sending it: the workers send through
    syncsmtp's :class:`~syncsmtp.Mailer`, each message at most once.

    :meth:`send_messages` builds each message's bytes and envelope as
    Django's SMTP backend does (and :class:`EmailBackend`), queues them, and
    returns how many were queued: one ``syncsmtp.send`` task for a single
    message, ``syncsmtp.send_many`` tasks of up to ``chunk`` messages for
    more. A message with no recipients is skipped. ``fail_silently`` swallows
    a failure to queue (the broker down); what happens later is in the
    tasks' results.

    Settings: ``SYNCSMTP = {"celery": {"chunk": 100, "queue": "mail"}}``
    (both optional; the queue defaults to ``install(queue=)``, else Celery's
    default). The SMTP settings are read by the workers, not here.
    """

    def __init__(self, fail_silently: bool = False, **kwargs: Any) -> None:
        super().__init__(fail_silently=fail_silently)
        options = _celery_options()
        #: Messages per ``syncsmtp.send_many`` task.
        self.chunk: int = options["chunk"]
        #: The queue the tasks go to (None: the installed default).
        self.queue: str | None = options["queue"]
        #: The ``AsyncResult`` of each task the last :meth:`send_messages` queued.
        self.results: list[Any] = []

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Queue the messages; how many were queued."""
        import syncsmtp.celery

        self.results = []
        queued = 0
        try:
            if len(email_messages or ()) == 1:
                if not email_messages[0].recipients():
                    return 0
                data, sender, recipients = self._item(email_messages[0])
                self.results.append(syncsmtp.celery.send_later(data, sender=sender, recipients=recipients,
                                                               queue=self.queue))
                return 1
            # Each chunk is queued as soon as it is built: workers start on it
            # while the next one is being serialised.
            chunk: list[tuple[bytes, str, list[str]]] = []
            for message in email_messages or ():
                if message.recipients():
                    chunk.append(self._item(message))
                if len(chunk) == self.chunk:
                    queued += self._queue_chunk(chunk)
                    chunk = []
            if chunk:
                queued += self._queue_chunk(chunk)
        except Exception:
            if not self.fail_silently:
                raise
        return queued

    def _queue_chunk(self, chunk: list[tuple[bytes, str, list[str]]]) -> int:
        import syncsmtp.celery

        self.results += syncsmtp.celery.send_many_later(chunk, chunk=len(chunk), queue=self.queue)
        return len(chunk)

    @staticmethod
    def _item(message: EmailMessage) -> tuple[bytes, str, list[str]]:
        # The envelope and the bytes exactly as Django's SMTP backend makes them.
        encoding = message.encoding or settings.DEFAULT_CHARSET
        sender = _envelope_address(sanitize_address(message.from_email, encoding))
        recipients = [_envelope_address(sanitize_address(address, encoding))
                      for address in message.recipients()]
        return message.message().as_bytes(linesep="\r\n"), sender, recipients
