"""Sending through Celery workers, with no message lost and none sent twice.

In the project's Celery module::

    import syncsmtp.celery
    syncsmtp.celery.install(app, policy)      # registers the tasks on the app

    syncsmtp.celery.send_later(msg)                       # -> AsyncResult
    syncsmtp.celery.send_many_later(messages, chunk=100)  # one task per chunk

A message is serialised when it is queued; a task carries its bytes (base64),
envelope and idempotency key as JSON, never a pickled object. Each worker
process sends through one :class:`~syncsmtp.Mailer` whose connections it
reuses across tasks, a chunk's messages pipelined. Tasks are acknowledged
late and requeued when their worker dies; a :class:`DeliveryStore` (Redis by
default) records "sending" before a message's content may leave and "sent"
after the server's reply, so a redelivered task skips what was sent and
reports, without sending again, what may have been. Needs the ``celery``
extra (``pip install -e '.[celery]'`` from a checkout). See :doc:`celery`.
"""

from ._payload import Payload, payload_of
from ._store import DeliveryStore, RedisStore
from ._tasks import SEND_MANY_TASK, SEND_TASK, SendFailed, install, send_later, send_many_later

__all__ = [
    "SEND_MANY_TASK",
    "SEND_TASK",
    "DeliveryStore",
    "Payload",
    "RedisStore",
    "SendFailed",
    "install",
    "payload_of",
    "send_later",
    "send_many_later",
]
