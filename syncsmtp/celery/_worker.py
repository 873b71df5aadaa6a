"""The worker's side: one :class:`~syncsmtp.Mailer` and one delivery store per
process, and the delivery of a task's messages through them (no SMTP here:
the Mailer does the sending).

Celery's prefork pool forks its children after the app (and this module) is
loaded; each child makes its own Mailer on its first task, reuses its
connections for every task after that, and closes it when the child exits.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._send_many import Outgoing
from ..errors import SMTPError
from ..mailer import Mailer
from ..policy import Policy
from ..result import SendResult
from ._payload import (
    ALREADY_SENT,
    FAILED,
    MAYBE_DELIVERED,
    Payload,
    error_outcome,
    recorded_outcome,
    sent_outcome,
)
from ._store import DeliveryStore

__all__ = ["Delivery", "WorkerSettings", "close_process_mailer", "deliver", "forget_inherited"]

log = logging.getLogger("syncsmtp.celery")


@dataclass
class WorkerSettings:
    """What :func:`syncsmtp.celery.install` was given (see its docstring)."""

    policy: Policy | Callable[[], Policy]
    store: DeliveryStore | Callable[[], DeliveryStore]
    connections: int = 1
    window: int = 32
    timeout: float = 60.0
    at_least_once: bool = False
    max_retries: int = 5
    retry_backoff: float = 10.0
    retry_backoff_max: float = 600.0
    queue: str | None = None
    chunk: int = 100


@dataclass
class _ProcessState:
    pid: int
    settings: WorkerSettings | None = None  # what the mailer and store were made for
    mailer: Mailer | None = None
    store: DeliveryStore | None = None


_state_lock = threading.Lock()
_state = _ProcessState(os.getpid())


def _current() -> _ProcessState:
    """This process's state; a forked child starts afresh (the parent's
    Mailer and store belong to the parent, and are left alone)."""
    global _state
    if _state.pid != os.getpid():
        _state = _ProcessState(os.getpid())
    return _state


def forget_inherited(**_: Any) -> None:
    """``worker_process_init``: a new child drops what it inherited from its parent."""
    with _state_lock:
        _current()


def close_process_mailer(**_: Any) -> None:
    """``worker_process_shutdown`` / ``worker_shutdown``: QUIT this process's connections."""
    with _state_lock:
        state = _current()
        mailer, state.mailer = state.mailer, None
    if mailer is not None:
        mailer.close()


def _for(settings: WorkerSettings) -> _ProcessState:
    """This process's state for ``settings``: installed again with other
    settings, the Mailer and store made for the old ones are dropped."""
    state = _current()
    if state.settings is not settings:
        if state.mailer is not None:
            state.mailer.close()
        state.settings, state.mailer, state.store = settings, None, None
    return state


def process_mailer(settings: WorkerSettings) -> Mailer:
    """This process's Mailer, made on first use."""
    with _state_lock:
        state = _for(settings)
        if state.mailer is None:
            policy = settings.policy if isinstance(settings.policy, Policy) else settings.policy()
            state.mailer = Mailer(policy, connections=settings.connections)
        return state.mailer


def process_store(settings: WorkerSettings) -> DeliveryStore:
    """This process's delivery store, made on first use."""
    with _state_lock:
        state = _for(settings)
        if state.store is None:
            store = settings.store
            state.store = store if isinstance(store, DeliveryStore) else store()
        return state.store


@dataclass
class Delivery:
    """What one run of a task did: an outcome per message dealt with, the
    messages to try again later, and the store's error when it could not be
    reached (those messages were not sent)."""

    outcomes: list[dict[str, Any]] = field(default_factory=list)
    retry: list[tuple[int, Payload]] = field(default_factory=list)
    store_error: Exception | None = None


def _sending_record(task_id: str | None) -> dict[str, Any]:
    return {"state": "sending", "task": task_id, "worker": socket.gethostname(), "pid": os.getpid(),
            "at": time.time()}


def deliver(settings: WorkerSettings, items: Sequence[tuple[int, Payload]], *, task_id: str | None,
            final: bool) -> Delivery:
    """Send ``items`` (index, payload), ``settings.window`` at a time: claim
    their keys ("sending"), send them with one ``send_many``, record "sent" or
    "maybe_delivered", and release the keys of messages that were surely not
    delivered. A transient failure is left for a retry unless ``final``."""
    delivery = Delivery()
    store = process_store(settings)
    for start in range(0, len(items), settings.window):
        window = items[start:start + settings.window]
        try:
            claims = store.claim([payload.key for _, payload in window], _sending_record(task_id))
        except Exception as error:  # the store is down: nothing of these was sent
            log.warning("delivery store unreachable, %d messages not sent: %s",
                        len(items) - start, error)
            delivery.store_error = error
            delivery.retry.extend(items[start:])
            return delivery
        to_send = _sort_claims(settings, store, window, claims, delivery, task_id)
        if to_send:
            _send_window(settings, store, to_send, delivery, task_id, final)
    return delivery


def _sort_claims(settings: WorkerSettings, store: DeliveryStore, window: Sequence[tuple[int, Payload]],
                 claims: Sequence[dict[str, Any] | None], delivery: Delivery,
                 task_id: str | None) -> list[tuple[int, Payload]]:
    """The items of ``window`` to send now; an outcome for each of the others."""
    to_send, taken_over = [], {}
    for (index, payload), record in zip(window, claims, strict=True):
        if record is None:
            to_send.append((index, payload))
        elif record.get("state") == "sent":
            delivery.outcomes.append(recorded_outcome(index, payload, ALREADY_SENT, record))
        elif settings.at_least_once:
            taken_over[payload.key] = _sending_record(task_id)
            to_send.append((index, payload))
        else:
            # Another run claimed it and never recorded an outcome (it died
            # after the content left, or before), or its send ended in doubt.
            log.warning("not sending %s again: a previous attempt may have delivered it", payload.key)
            delivery.outcomes.append(recorded_outcome(index, payload, MAYBE_DELIVERED, record))
    if taken_over:
        store.put(taken_over)
    return to_send


def _send_window(settings: WorkerSettings, store: DeliveryStore, to_send: list[tuple[int, Payload]],
                 delivery: Delivery, task_id: str | None, final: bool) -> None:
    mailer = process_mailer(settings)
    try:
        report = mailer.send_many(
            [Outgoing(payload.data, payload.sender, payload.recipients) for _, payload in to_send],
            timeout=settings.timeout,
        )
    except BaseException:
        # Their fate is unknown: the keys stay "sending", and a redelivery reports them.
        log.exception("sending %d messages stopped; they stay recorded as being sent", len(to_send))
        raise
    records: dict[str, dict[str, Any]] = {}
    released: list[str] = []
    for (index, payload), result in zip(to_send, report.results, strict=True):
        if isinstance(result, SendResult):
            outcome = sent_outcome(index, payload, result)
            records[payload.key] = {"state": "sent", "task": task_id, "at": time.time(),
                                    "reply": outcome["reply"], "accepted": outcome["accepted"]}
        elif isinstance(result, SMTPError) and result.maybe_delivered:
            outcome = error_outcome(index, payload, result, MAYBE_DELIVERED)
            records[payload.key] = {"state": MAYBE_DELIVERED, "task": task_id, "at": time.time(),
                                    "error": outcome["error"]}
        else:
            released.append(payload.key)  # surely not delivered: a later try may send it
            if isinstance(result, SMTPError) and result.transient and not final:
                delivery.retry.append((index, payload))
                continue
            outcome = error_outcome(index, payload, result, FAILED)
        delivery.outcomes.append(outcome)
    try:
        store.put(records)
        store.release(released)
    except Exception as error:
        # The keys stay "sending": a redelivery reports them as maybe delivered, never sends twice.
        log.warning("could not record the outcome of %d messages: %s", len(to_send), error)
