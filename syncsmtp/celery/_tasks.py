"""The two Celery tasks and what queues them (see :mod:`syncsmtp.celery`)."""

from __future__ import annotations

import email.message
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from celery import Celery, Task  # type: ignore[import-untyped]
from celery.result import AsyncResult  # type: ignore[import-untyped]
from celery.signals import (  # type: ignore[import-untyped]
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from .. import _messages
from .._send_many import Outgoing
from ..errors import MessageError
from ..policy import Policy
from ._payload import ALREADY_SENT, FAILED, SENT, Payload, error_outcome, payload_of
from ._store import DEFAULT_TTL, DeliveryStore, RedisStore
from ._worker import WorkerSettings, close_process_mailer, deliver, forget_inherited

__all__ = ["SEND_MANY_TASK", "SEND_TASK", "SendFailed", "install", "send_later", "send_many_later"]

#: The names the tasks are registered under.
SEND_TASK = "syncsmtp.send"
SEND_MANY_TASK = "syncsmtp.send_many"

_installed_lock = threading.Lock()
_installed: dict[str, Any] = {}  # "app", "settings": the last install()
_app_settings: weakref.WeakKeyDictionary[Celery, WorkerSettings] = weakref.WeakKeyDictionary()


class SendFailed(Exception):
    """A task's messages were not all delivered for sure: the task fails with
    this error, whose :attr:`details` is the plain-data outcome (one
    message's for ``send_later``, the chunk's report for ``send_many_later``).

    ``details["status"]`` is ``"failed"`` (not delivered: ``details["error"]``
    has the error's ``type``, ``message``, ``reply``, ``transient`` and
    ``maybe_delivered``) or ``"maybe_delivered"`` (the server may have it; it
    was not sent again). It travels through the result backend as JSON and
    comes back from ``AsyncResult.get()`` as this class.
    """

    def __init__(self, details: dict[str, Any]) -> None:
        super().__init__(details)
        #: The outcome, as plain data.
        self.details = details

    def __str__(self) -> str:
        details = self.details
        if "messages" in details:
            counts = ", ".join(f"{n} {status}" for status, n in sorted(details["counts"].items()))
            return f"not every message of the chunk was delivered for sure: {counts}"
        error = details.get("error") or {}
        reason = error.get("message") or "a previous attempt may have delivered it; not sent again"
        return f"{details.get('status')}: {details.get('message_id') or details.get('key')}: {reason}"


def install(
    app: Celery,
    policy: Policy | Callable[[], Policy],
    *,
    store: DeliveryStore | Callable[[], DeliveryStore] | None = None,
    connections: int = 1,
    window: int = 32,
    timeout: float = 60.0,
    at_least_once: bool = False,
    max_retries: int = 5,
    retry_backoff: float = 10.0,
    retry_backoff_max: float = 600.0,
    queue: str | None = None,
    chunk: int = 100,
    key_ttl: int = DEFAULT_TTL,
) -> None:
    """Register syncsmtp's tasks (``syncsmtp.send``, ``syncsmtp.send_many``)
    on ``app``; :func:`send_later` and :func:`send_many_later` queue them.

    ``policy`` is the server to send to, or a function returning it, called
    in each worker process on its first task (so a Django project can build
    it from its settings there: ``syncsmtp.django.settings_policy``).

    ``store`` records what is being sent (a :class:`DeliveryStore`, or a
    function returning one, called per process); by default a
    :class:`RedisStore` on the app's result backend, or on its broker, when
    either is a Redis URL. ``key_ttl`` is how long that store keeps its records.

    Each worker process sends through one :class:`~syncsmtp.Mailer` of
    ``connections`` connections, ``window`` messages pipelined at a time
    (each with its own ``timeout``). A transient failure is retried by Celery
    up to ``max_retries`` times, after ``retry_backoff`` seconds, doubling,
    at most ``retry_backoff_max``. ``at_least_once=True`` sends again a
    message whose previous attempt may have delivered it, rather than
    reporting it. ``queue`` is the queue :func:`send_later` uses by default,
    ``chunk`` the default chunk size of :func:`send_many_later`.

    Installed again on the same app, the tasks take the new settings (each
    worker process then makes a new Mailer). The tasks belong to ``app``
    alone (not shared with other Celery apps).
    """
    for name, value in (("connections", connections), ("window", window), ("chunk", chunk),
                        ("key_ttl", key_ttl)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(_messages.positive_integer("install()", name, value))
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(_messages.non_negative_integer("install()", "max_retries", max_retries))
    if not (isinstance(policy, Policy) or callable(policy)):
        raise TypeError(_messages.must_be("install()", "policy", "a syncsmtp.Policy or a function "
                                          "returning one", policy, secret=True))
    settings = WorkerSettings(
        policy=policy, store=store if store is not None else _default_store(app, key_ttl),
        connections=connections, window=window, timeout=timeout, at_least_once=at_least_once,
        max_retries=max_retries, retry_backoff=retry_backoff, retry_backoff_max=retry_backoff_max,
        queue=queue, chunk=chunk,
    )
    worker_process_init.connect(forget_inherited, weak=False, dispatch_uid="syncsmtp.celery.init")
    worker_process_shutdown.connect(close_process_mailer, weak=False, dispatch_uid="syncsmtp.celery.exit")
    worker_shutdown.connect(close_process_mailer, weak=False, dispatch_uid="syncsmtp.celery.shutdown")
    with _installed_lock:
        first = app not in _app_settings
        _app_settings[app] = settings  # installed again: the tasks use the new settings
        _installed.update(app=app, settings=settings)
    if first:
        _register(app)


def _register(app: Celery) -> None:
    options = {"bind": True, "acks_late": True, "reject_on_worker_lost": True, "serializer": "json",
               "ignore_result": False, "shared": False}

    @app.task(name=SEND_TASK, **options)  # type: ignore[untyped-decorator]
    def send(task: Task, payload: dict[str, Any], done: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        outcome = _run(task, _app_settings[app], [payload], [0], done)[0]
        if outcome["status"] not in (SENT, ALREADY_SENT):
            raise SendFailed(outcome)
        return outcome

    @app.task(name=SEND_MANY_TASK, **options)  # type: ignore[untyped-decorator]
    def send_many(task: Task, payloads: list[dict[str, Any]], done: list[dict[str, Any]] | None = None,
                  indexes: list[int] | None = None) -> dict[str, Any]:
        outcomes = _run(task, _app_settings[app], payloads, indexes or list(range(len(payloads))), done)
        counts = Counter(outcome["status"] for outcome in outcomes)
        report = {"messages": outcomes, "counts": dict(counts)}
        if set(counts) - {SENT, ALREADY_SENT}:
            raise SendFailed(report)
        return report


def _default_store(app: Celery, ttl: int) -> Callable[[], DeliveryStore]:
    for url in (app.conf.result_backend, app.conf.broker_url):
        if isinstance(url, str) and url.startswith(("redis://", "rediss://", "unix://")):
            return lambda: RedisStore(url, ttl=ttl)
    raise ValueError("install(): neither the Celery result backend nor the broker is Redis; "
                     "give store= (a syncsmtp.celery.DeliveryStore) to record what is being sent")


def _run(task: Task, settings: WorkerSettings, payloads: Sequence[dict[str, Any]], indexes: Sequence[int],
         done: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Deliver the payloads; retry the task (raising Celery's Retry) for the
    transient failures while retries remain; the outcomes, in input order."""
    outcomes = list(done or [])
    items: list[tuple[int, Payload]] = []
    for index, raw in zip(indexes, payloads, strict=True):
        try:
            items.append((index, Payload.from_json(raw)))
        except MessageError as error:
            key = str(raw.get("key")) if isinstance(raw, dict) else "?"
            outcomes.append(error_outcome(index, Payload(b"", "", (), key, None), error, FAILED))
    final = task.request.retries >= settings.max_retries
    delivery = deliver(settings, items, task_id=task.request.id, final=final)
    for outcome in delivery.outcomes:
        outcome["attempt"] = task.request.retries + 1
    outcomes.extend(delivery.outcomes)
    if delivery.retry and not final:
        countdown = min(settings.retry_backoff * 2 ** task.request.retries, settings.retry_backoff_max)
        retry_payloads = [payload.to_json() for _, payload in delivery.retry]
        retry_indexes = [index for index, _ in delivery.retry]
        if task.name == SEND_TASK:
            raise task.retry(args=(retry_payloads[0],), kwargs={"done": outcomes}, countdown=countdown,
                             max_retries=settings.max_retries)
        raise task.retry(args=(retry_payloads,), kwargs={"done": outcomes, "indexes": retry_indexes},
                         countdown=countdown, max_retries=settings.max_retries)
    # On the last try only the messages the store kept from being sent are left.
    unsent = delivery.store_error or RuntimeError("not sent")
    outcomes.extend(error_outcome(index, payload, unsent, FAILED) for index, payload in delivery.retry)
    return sorted(outcomes, key=lambda outcome: int(outcome["index"]))


def _app_and_settings(app: Celery | None) -> tuple[Celery, WorkerSettings | None]:
    """``app``, else the app installed last, else Celery's current app; and
    the settings it was installed with (None when it was not)."""
    with _installed_lock:
        if app is None:
            app = _installed.get("app")
        if app is None:
            from celery import current_app

            return current_app, _app_settings.get(current_app)
        return app, _app_settings.get(app)


def _queue(app: Celery, name: str, args: tuple[Any, ...], queue: str | None) -> AsyncResult:
    """Queue one task: through the task itself when this app has it
    installed (so ``task_always_eager`` runs it here and now, as ``delay()``
    would), else by name."""
    options: dict[str, Any] = {"serializer": "json", **({"queue": queue} if queue else {})}
    if name in app.tasks:
        return app.tasks[name].apply_async(args=args, **options)
    return app.send_task(name, args=args, **options)


def send_later(message: Any, *, sender: str | None = None, recipients: Iterable[str] | str | None = None,
               key: str | None = None, queue: str | None = None, app: Celery | None = None) -> AsyncResult:
    """Serialise ``message`` now and queue one ``syncsmtp.send`` task for it;
    its ``AsyncResult``. ``message``, ``sender`` and ``recipients`` are as
    :func:`syncsmtp.send` takes them (bad input raises
    :class:`~syncsmtp.MessageError` here). ``key`` is its idempotency key
    (default: its Message-ID qualified by its envelope). ``queue`` defaults
    to ``install(queue=)``; ``app`` to the installed app (else Celery's
    current app: a web process need not install the tasks to queue them).

    The task's result is the message's outcome (a dict: ``status`` ``"sent"``
    or ``"already_sent"``, the result's fields); otherwise it fails with
    :class:`SendFailed`.
    """
    payload = payload_of(message, sender=sender, recipients=recipients, key=key)
    app, settings = _app_and_settings(app)
    queue = queue or (settings.queue if settings is not None else None)
    return _queue(app, SEND_TASK, (payload.to_json(),), queue)


def send_many_later(messages: Iterable[Any], chunk: int | None = None, *, queue: str | None = None,
                    app: Celery | None = None) -> list[AsyncResult]:
    """Serialise every message now and queue one ``syncsmtp.send_many`` task
    per ``chunk`` of them (default: ``install(chunk=)``, else 100); the tasks'
    ``AsyncResult``, in order. Each item is as :meth:`Mailer.send_many
    <syncsmtp.Mailer.send_many>` takes it: an EmailMessage, an
    :class:`~syncsmtp.Outgoing` or a ``(message, sender, recipients)`` tuple.

    A task's result is its chunk's report: ``{"messages": [outcome, ...],
    "counts": {status: n}}``; when a message was not delivered for sure, the
    task fails with :class:`SendFailed` holding that report.
    """
    app, settings = _app_and_settings(app)
    if chunk is None:
        chunk = settings.chunk if settings is not None else 100
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(_messages.positive_integer("send_many_later()", "chunk", chunk))
    queue = queue or (settings.queue if settings is not None else None)
    if isinstance(messages, (email.message.Message, bytes, bytearray, str, Outgoing)) \
            or not isinstance(messages, Iterable):
        raise TypeError(_messages.messages_not_iterable("send_many_later()", messages))
    payloads = [payload_of(message).to_json() for message in messages]
    return [
        _queue(app, SEND_MANY_TASK, (payloads[start:start + chunk],), queue)
        for start in range(0, len(payloads), chunk)
    ]
