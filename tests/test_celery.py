"""syncsmtp.celery and syncsmtp.django.CeleryEmailBackend with real Celery workers.

A private redis-server (broker, result backend and delivery store) and a
real ``celery worker`` (prefork pool, two child processes) that sends to the
test server running in this process. The workers build their policy from
Django settings (tests/django_site/celery_settings.py), as a Django project's
workers would.
"""

from __future__ import annotations

import collections
import email.message
import os
import secrets
import signal
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
django.setup()

from celery_support import CeleryWorker, RedisServer, redis_binary  # noqa: E402
from django.core import mail  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.test.utils import setup_test_environment, teardown_test_environment  # noqa: E402

import syncsmtp  # noqa: E402
import syncsmtp.celery  # noqa: E402
from syncsmtp.celery import RedisStore, SendFailed  # noqa: E402
from syncsmtp.celery._payload import payload_of  # noqa: E402
from syncsmtp.celery._worker import WorkerSettings, close_process_mailer, deliver  # noqa: E402
from syncsmtp.testing import SMTPTestServer  # noqa: E402

WINDOW = 10  # the workers' window: at most this many messages in doubt per killed worker
QUEUE = f"syncsmtp-test-{os.getpid()}"
RESULT_SECONDS = 60


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if redis_binary() is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(tls="none") as server:
        yield server


@pytest.fixture(scope="module")
def worker(redis_url: str, smtp_server: SMTPTestServer) -> Iterator[CeleryWorker]:
    env = {"SYNCSMTP_TEST_REDIS": redis_url, "SYNCSMTP_TEST_QUEUE": QUEUE,
           "SYNCSMTP_TEST_WINDOW": str(WINDOW), "SYNCSMTP_TEST_SMTP_PORT": str(smtp_server.port),
           "DJANGO_SETTINGS_MODULE": "django_site.celery_settings"}
    with CeleryWorker(env, concurrency=2, queue=QUEUE) as running:
        yield running


@pytest.fixture(scope="module")
def app(redis_url: str, smtp_server: SMTPTestServer) -> Any:
    """This process's app, as a web process has it: the tasks installed, the queue set."""
    from celery_app import make_app

    celery_app = make_app(redis_url, QUEUE)
    policy = syncsmtp.Policy(host="127.0.0.1", port=smtp_server.port, tls="none")
    syncsmtp.celery.install(celery_app, policy, queue=QUEUE, chunk=100)
    return celery_app


@pytest.fixture
def server(smtp_server: SMTPTestServer) -> SMTPTestServer:
    smtp_server.clear()
    smtp_server.clear_faults()
    return smtp_server


def _message(tag: str, number: int, to: str = "rcpt@example.com") -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = f"{tag}@example.com"
    message["To"] = to
    message["Subject"] = f"{tag} {number}"
    message["Message-ID"] = f"<{tag}.{number}@example.com>"
    message.set_content(f"message {number} of {tag}\n")
    return message


def _outcome(result: Any) -> Any:
    """A task's plain-data result: its return value, or SendFailed's details."""
    try:
        return result.get(timeout=RESULT_SECONDS, propagate=True)
    except SendFailed as error:
        return error.details


def _ids(server: SMTPTestServer) -> collections.Counter[str]:
    return collections.Counter(str(received.message["Message-ID"]) for received in server.outbox)


def test_500_messages_queued_from_django_are_delivered_once_each(
        worker: CeleryWorker, app: Any, server: SMTPTestServer) -> None:
    messages = [mail.EmailMessage(f"note {n}", f"body {n}\n", "shop@example.com", [f"user{n}@example.com"],
                                  bcc=["audit@example.com"]) for n in range(500)]
    with override_settings(EMAIL_BACKEND="syncsmtp.django.CeleryEmailBackend",
                           SYNCSMTP={"celery": {"chunk": 100, "queue": QUEUE}}):
        connection = mail.get_connection()
        assert connection.send_messages(messages) == 500
    assert len(connection.results) == 5  # one task per chunk of 100
    reports = [_outcome(result) for result in connection.results]
    assert all(report["counts"] == {"sent": 100} for report in reports), [r["counts"] for r in reports]
    server.wait_for(500, timeout=10)
    received = _ids(server)
    assert len(received) == 500 and set(received.values()) == {1}
    expected = {message.message()["Message-ID"] for message in messages}
    assert {o["message_id"] for report in reports for o in report["messages"]} == set(received)
    assert len(expected) == 500
    first = server.outbox[0]
    assert b"audit@example.com" not in first.data and "audit@example.com" in first.recipients
    outcome = reports[0]["messages"][0]
    assert outcome["reply"]["code"] == 250
    assert outcome["accepted"] == ["user0@example.com", "audit@example.com"]
    # Connections were reused across tasks: far fewer than the 5 tasks' 500 messages.
    assert server.connections <= 2


def test_django_test_runner_still_fills_mail_outbox(app: Any, server: SMTPTestServer) -> None:
    with override_settings(EMAIL_BACKEND="syncsmtp.django.CeleryEmailBackend"):
        setup_test_environment()
        try:
            assert mail.send_mail("hi", "body", "a@example.com", ["b@example.com"]) == 1
            assert [m.subject for m in mail.outbox] == ["hi"]
        finally:
            teardown_test_environment()
    redis = RedisStore(app.conf.broker_url).client
    assert redis.llen(QUEUE) == 0 and server.outbox == []


def test_one_message_from_django_is_one_send_task(worker: CeleryWorker, app: Any,
                                                  server: SMTPTestServer) -> None:
    with override_settings(EMAIL_BACKEND="syncsmtp.django.CeleryEmailBackend"):
        connection = mail.get_connection()
        message = mail.EmailMessage("one", "body\n", "shop@example.com", ["one@example.com"])
        assert connection.send_messages([message]) == 1
        [result] = connection.results
        assert connection.send_messages([mail.EmailMessage("none", "body", "shop@example.com", [])]) == 0
        assert connection.results == []
    outcome = result.get(timeout=RESULT_SECONDS)
    assert outcome["status"] == "sent" and outcome["accepted"] == ["one@example.com"]
    [received] = server.wait_for(1)
    assert received.sender == "shop@example.com" and outcome["message_id"] == received.message["Message-ID"]


def test_django_backend_settings_and_fail_silently(app: Any, server: SMTPTestServer) -> None:
    from django.core.exceptions import ImproperlyConfigured

    for bad in ({"chunk": 0}, {"queue": ""}, {"chunks": 5}):
        with override_settings(EMAIL_BACKEND="syncsmtp.django.CeleryEmailBackend",
                               SYNCSMTP={"celery": bad}), pytest.raises(ImproperlyConfigured):
            mail.get_connection()
    from celery_app import make_app
    from postfix import free_port

    # A broker nothing listens on: queuing fails, loudly unless fail_silently.
    dead = make_app(f"redis://127.0.0.1:{free_port()}/0", QUEUE)
    retry_once = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}
    dead.conf.update(task_publish_retry=False, broker_connection_timeout=1,
                     broker_transport_options=retry_once,
                     result_backend_transport_options={"retry_policy": retry_once})
    policy = syncsmtp.Policy(host="127.0.0.1", port=server.port, tls="none")
    syncsmtp.celery.install(dead, policy, store=RedisStore(app.conf.broker_url))
    messages = [mail.EmailMessage("x", "y", "a@example.com", ["b@example.com"])] * 2
    try:
        with override_settings(EMAIL_BACKEND="syncsmtp.django.CeleryEmailBackend"):
            assert mail.get_connection(fail_silently=True).send_messages(messages) == 0
            with pytest.raises(Exception):  # noqa: B017  # whatever Celery raises for a dead broker
                mail.get_connection().send_messages(messages)
    finally:
        syncsmtp.celery.install(app, policy, queue=QUEUE, chunk=100)
    assert server.outbox == []


def test_killed_worker_loses_nothing_and_sends_nothing_twice(
        worker: CeleryWorker, app: Any, server: SMTPTestServer, redis_url: str) -> None:
    tag = f"kill{secrets.token_hex(3)}"
    messages = [_message(tag, n) for n in range(300)]
    results = syncsmtp.celery.send_many_later(messages, chunk=50)
    server.wait_for(60, timeout=RESULT_SECONDS)
    # From now on no message is answered after its final dot (it is recorded as received).
    server.stall("end-of-data")
    store = RedisStore(redis_url)
    stuck: set[int] = set()
    deadline, last_count, still_since = time.monotonic() + 30, -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(server.outbox)
        if count != last_count:
            last_count, still_since = count, time.monotonic()
        sending = [store.client.get(key) for key in store.client.scan_iter(store.prefix + "*")]
        stuck = {int(record["pid"]) for record in map(_json, sending) if record.get("state") == "sending"}
        if stuck and time.monotonic() - still_since > 1.0:
            break
        time.sleep(0.1)
    assert stuck and stuck <= set(worker.children())
    server.clear_faults()  # the stalled sessions stay stalled; new ones are answered
    for pid in stuck:
        os.kill(pid, signal.SIGKILL)
    reports = [_outcome(result) for result in results]
    outcomes = [outcome for report in reports for outcome in report["messages"]]
    by_status = collections.defaultdict(set)
    for outcome in outcomes:
        by_status[outcome["status"]].add(outcome["message_id"])
    received = _ids(server)
    everything = {message["Message-ID"] for message in messages}
    assert len(outcomes) == 300 and {o["message_id"] for o in outcomes} == everything
    # Nothing sent twice.
    assert set(received.values()) == {1}
    # Nothing lost: each message arrived, or is reported as maybe delivered.
    assert set(received) | by_status["maybe_delivered"] == everything
    assert by_status["sent"] | by_status["already_sent"] <= set(received)
    # The stalled messages arrived but went unanswered: reported, not sent again.
    assert by_status["maybe_delivered"] & set(received)
    assert len(by_status["maybe_delivered"]) <= WINDOW * len(stuck)
    assert by_status["already_sent"]  # the redelivered tasks skipped what was sent before
    failed_reports = [report for report in reports if "maybe_delivered" in report["counts"]]
    assert len(failed_reports) == len(stuck)


def test_permanent_refusal_fails_the_task_with_the_reason(
        worker: CeleryWorker, app: Any, server: SMTPTestServer) -> None:
    server.refuse_recipient("nobody@example.com", 550, "5.1.1 No such user here")
    result = syncsmtp.celery.send_later(_message("refused", 1, to="nobody@example.com"))
    with pytest.raises(SendFailed) as caught:
        result.get(timeout=RESULT_SECONDS)
    details = caught.value.details
    assert details["status"] == "failed" and details["message_id"] == "<refused.1@example.com>"
    error = details["error"]
    assert error["type"] == "RecipientsRefused" and error["transient"] is False
    assert error["maybe_delivered"] is False
    assert result.state == "FAILURE" and server.outbox == []
    assert "No such user here" in error["message"] + str(error["reply"])


def test_transient_failure_is_retried_and_delivered(
        worker: CeleryWorker, app: Any, server: SMTPTestServer) -> None:
    server.fail("mail", 451, "4.3.0 Try again later", times=1)
    result = syncsmtp.celery.send_later(_message("retried", 1))
    outcome = result.get(timeout=RESULT_SECONDS)
    assert outcome["status"] == "sent" and outcome["reply"]["code"] == 250
    assert _ids(server) == {"<retried.1@example.com>": 1}
    assert outcome["attempt"] == 2  # refused once, then sent by Celery's retry


def test_bad_input_is_refused_when_queued_and_a_bad_payload_fails_in_the_worker(
        worker: CeleryWorker, app: Any, server: SMTPTestServer) -> None:
    with pytest.raises(syncsmtp.MessageError):
        syncsmtp.celery.send_later(b"Subject: x\r\n\r\nbody\r\n", sender="a@example.com",
                                   recipients=["b@example.com\r\nRCPT TO:<evil@example.com>"])
    with pytest.raises(TypeError):
        syncsmtp.celery.send_many_later(_message("single", 1))
    with pytest.raises(ValueError):
        syncsmtp.celery.send_many_later([_message("chunk", 1)], chunk=0)
    result = app.send_task(syncsmtp.celery.SEND_TASK, args=({"v": 99, "key": "k"},), queue=QUEUE)
    with pytest.raises(SendFailed) as caught:
        result.get(timeout=RESULT_SECONDS)
    details = caught.value.details
    assert details["status"] == "failed" and details["error"]["type"] == "MessageError"
    assert "payload" in details["error"]["message"] and server.outbox == []


def test_eager_app_sends_in_the_calling_process(redis_url: str, app: Any, server: SMTPTestServer) -> None:
    from celery_app import make_app

    eager = make_app(redis_url, QUEUE)
    eager.conf.task_always_eager = True
    policy = syncsmtp.Policy(host="127.0.0.1", port=server.port, tls="none")
    syncsmtp.celery.install(eager, policy)
    try:
        outcome = syncsmtp.celery.send_later(_message("eager", 1)).get(timeout=RESULT_SECONDS)
        assert outcome["status"] == "sent"
        assert _ids(server) == {"<eager.1@example.com>": 1}
        # The same message again: the delivery store knows it was sent.
        again = syncsmtp.celery.send_later(_message("eager", 1)).get(timeout=RESULT_SECONDS)
        assert again["status"] == "already_sent" and len(server.outbox) == 1
    finally:
        syncsmtp.celery.install(app, policy, queue=QUEUE, chunk=100)
        close_process_mailer()


def test_worker_reuses_its_connection_and_quits_at_shutdown(
        redis_url: str, app: Any, server: SMTPTestServer) -> None:
    queue = f"{QUEUE}-shutdown"
    env = {"SYNCSMTP_TEST_REDIS": redis_url, "SYNCSMTP_TEST_QUEUE": queue,
           "SYNCSMTP_TEST_SMTP_PORT": str(server.port),
           "DJANGO_SETTINGS_MODULE": "django_site.celery_settings"}
    with CeleryWorker(env, concurrency=1, queue=queue):
        for number in range(3):
            syncsmtp.celery.send_later(_message("shutdown", number), queue=queue).get(timeout=RESULT_SECONDS)
        assert len(server.outbox) == 3
        assert server.connections == 1  # three tasks, one connection
        assert b"QUIT" not in server.commands[0]
    # The worker process closed its Mailer when it shut down.
    assert server.commands[0][-1] == b"QUIT"


def _json(value: Any) -> dict[str, Any]:
    import json

    return dict(json.loads(value))


# The worker's side in this process: the store's rules, against the test server.

def _settings(policy: syncsmtp.Policy, store: RedisStore, **options: Any) -> WorkerSettings:
    return WorkerSettings(policy=policy, store=store, window=4, timeout=10.0, **options)


def test_a_key_left_sending_is_reported_unless_at_least_once(redis_url: str, server: SMTPTestServer) -> None:
    store = RedisStore(redis_url, prefix=f"syncsmtp:test:{secrets.token_hex(4)}:")
    policy = syncsmtp.Policy(host="127.0.0.1", port=server.port, tls="none")
    payloads = [payload_of(_message("inproc", n)) for n in range(3)]
    store.claim([payloads[1].key], {"state": "sending", "pid": 1})
    store.put({payloads[2].key: {"state": "sent"}})
    try:
        delivery = deliver(_settings(policy, store), list(enumerate(payloads)), task_id="t1", final=True)
        statuses = {o["index"]: o["status"] for o in delivery.outcomes}
        assert statuses == {0: "sent", 1: "maybe_delivered", 2: "already_sent"}
        assert _ids(server) == {"<inproc.0@example.com>": 1}
        assert store.get(payloads[0].key)["state"] == "sent"  # type: ignore[index]
        again = deliver(_settings(policy, store, at_least_once=True), list(enumerate(payloads)),
                        task_id="t2", final=True)
        statuses = {o["index"]: o["status"] for o in again.outcomes}
        assert statuses == {0: "already_sent", 1: "sent", 2: "already_sent"}
        assert _ids(server) == {"<inproc.0@example.com>": 1, "<inproc.1@example.com>": 1}
    finally:
        close_process_mailer()


def test_refused_message_releases_its_key_and_an_unreachable_store_sends_nothing(
        redis_url: str, server: SMTPTestServer) -> None:
    store = RedisStore(redis_url, prefix=f"syncsmtp:test:{secrets.token_hex(4)}:")
    policy = syncsmtp.Policy(host="127.0.0.1", port=server.port, tls="none")
    server.fail("mail", 451, "4.3.0 Busy", times=1)
    payload = payload_of(_message("release", 1))
    try:
        delivery = deliver(_settings(policy, store), [(0, payload)], task_id="t", final=False)
        assert delivery.outcomes == [] and [p.key for _, p in delivery.retry] == [payload.key]
        assert store.get(payload.key) is None  # surely not delivered: free for the retry
        dead = RedisStore(f"redis://127.0.0.1:{_closed_port()}/0")
        down = deliver(_settings(policy, dead), [(0, payload)], task_id="t", final=False)
        assert down.store_error is not None and len(down.retry) == 1 and down.outcomes == []
        assert server.outbox == []
    finally:
        close_process_mailer()


def _closed_port() -> int:
    from postfix import free_port

    return free_port()


@pytest.mark.parametrize(("options", "named"), [
    ({"chunk": 0}, "install() chunk must be a positive integer"),
    ({"window": -1}, "install() window must be a positive integer"),
    ({"max_retries": -1}, "install() max_retries must be a non-negative integer"),
])
def test_install_names_the_parameter_it_refuses(options: dict[str, int], named: str) -> None:
    from celery import Celery

    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        syncsmtp.celery.install(Celery("refusing"), syncsmtp.Policy(host="127.0.0.1", tls="none"),
                                **options)
    with pytest.raises(TypeError, match=r"install\(\) policy must be .*the dict given \(not shown\)"):
        syncsmtp.celery.install(Celery("refusing"), {"password": "secret"})  # type: ignore[arg-type]
