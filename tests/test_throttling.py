"""Sending at a provider's limits: a Mailer-wide rate shared by every thread
and connection, pauses after throttling replies, and retries that never
resend a message that may have been delivered. Against the project's test
server, which records when each MAIL FROM arrived."""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Callable

import pytest
from many_messages import make_message, run_concurrently

import syncsmtp
from syncsmtp._throttle import Gate, TokenBucket, is_throttling
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]


def mail_times(server: SMTPTestServer) -> list[float]:
    """Start recording when each MAIL FROM reaches the server; the list fills as they come."""
    times: list[float] = []
    core = server._core
    record = core.record

    def timed(commands: list[bytes], line: bytes) -> None:
        if line[:10].upper() == b"MAIL FROM:":
            times.append(time.monotonic())
        record(commands, line)

    core.record = timed  # type: ignore[method-assign]
    return times


def busiest_second(times: list[float]) -> int:
    """The most MAIL FROM commands that arrived within any one second."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, start + 1.0) - i for i, start in enumerate(ordered)), default=0)


def subjects(server: SMTPTestServer) -> Counter[str]:
    return Counter(str(received.message["Subject"]) for received in server.outbox)


# -- the rate ----------------------------------------------------------------------------------------


def test_sixteen_threads_share_one_rate(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    times = mail_times(server)
    rate = 10.0
    errors: list[BaseException] = []
    with syncsmtp.Mailer(server.policy(), connections=4, rate=rate) as mailer:

        def worker(number: int) -> None:
            try:
                for k in range(2):
                    mailer.send(make_message(number * 10 + k), timeout=20)
            except BaseException as error:  # reported below
                errors.append(error)

        run_concurrently(worker, 16, seconds=60)
    assert not errors, errors
    assert len(server.outbox) == 32 and len(times) == 32
    assert server.connections <= 4
    assert busiest_second(times) <= math.ceil(rate) + 1, sorted(times)


@pytest.mark.parametrize(("mailer_rate", "batch_rate"), [(20.0, 5.0), (5.0, 20.0)])
def test_the_stricter_of_mailer_and_batch_rate_applies(smtp_server_factory: ServerFactory,
                                                       mailer_rate: float, batch_rate: float) -> None:
    server = smtp_server_factory(tls="none", extensions=("PIPELINING", "8BITMIME"))
    times = mail_times(server)
    with syncsmtp.Mailer(server.policy(), connections=4, rate=mailer_rate) as mailer:
        report = mailer.send_many([make_message(n) for n in range(14)], timeout=20, rate=batch_rate)
    assert report.sent == 14 and not report.failed
    assert busiest_second(times) <= math.ceil(min(mailer_rate, batch_rate)) + 1, sorted(times)
    assert report.waited > 0  # messages waited for their turn


def test_a_message_that_gets_no_turn_in_time_fails_unsent(smtp_server_factory: ServerFactory) -> None:
    # One message every 20 s: of two sent at once with a 2 s deadline, one waits too long.
    server = smtp_server_factory(tls="none")
    outcomes: list[object] = []
    with syncsmtp.Mailer(server.policy(), connections=2, rate=0.05) as mailer:

        def one(n: int) -> None:
            try:
                outcomes.append(mailer.send(make_message(n), timeout=2))
            except syncsmtp.SMTPError as error:
                outcomes.append(error)

        run_concurrently(one, 2, seconds=30)
    results = [o for o in outcomes if isinstance(o, syncsmtp.SendResult)]
    errors = [o for o in outcomes if isinstance(o, syncsmtp.SendTimeout)]
    assert len(results) == 1 and len(errors) == 1, outcomes
    error = errors[0]
    assert error.stage == "connect" and not error.maybe_delivered and error.transient
    assert "rate limit" in str(error)
    assert len(server.outbox) == 1
    assert sum(line.startswith(b"MAIL FROM") for lines in server.commands for line in lines) == 1


# -- throttling replies -------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "text"), [
    (421, "4.7.0 Try again later, closing connection"),
    (432, "4.3.2 Concurrent connections limit exceeded"),
    (451, "4.7.1 Please try again later"),
    (454, "4.7.0 Too many login attempts, please try again later"),
    (454, "Throttling failure: Maximum sending rate exceeded."),
])
def test_a_throttling_reply_pauses_then_the_retry_goes_through(smtp_server_factory: ServerFactory,
                                                              code: int, text: str) -> None:
    server = smtp_server_factory(tls="none")
    server.fail("mail", code, text, times=2)
    with syncsmtp.Mailer(server.policy(), throttle_backoff=0.2) as mailer:
        report = mailer.send_many([make_message(n) for n in range(4)], timeout=20, retries=3)
    assert report.sent == 4 and not report.failed, report
    assert report.retries == 2
    assert [event.reply.code for event in report.throttled] == [code, code]
    # The second came after the first pause was over: the backoff doubled.
    assert [event.pause for event in report.throttled] == [0.2, 0.4]
    assert report.throttled[0].at <= report.throttled[1].at
    assert report.waited > 0
    assert "2 throttling replies" in str(report) and "throttled=" in repr(report)
    assert all(count == 1 for count in subjects(server).values()) and len(server.outbox) == 4


def test_the_backoff_starts_again_after_a_message_goes_through(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    with syncsmtp.Mailer(server.policy(), throttle_backoff=0.1) as mailer:
        server.fail("mail", 421, "4.7.0 slow down", times=3)
        first = mailer.send_many([make_message(0)], timeout=20, retries=5)
        server.fail("mail", 454, "4.7.0 slow down", times=1)
        second = mailer.send_many([make_message(1)], timeout=20, retries=5)
    assert first.sent == 1 and [event.pause for event in first.throttled] == [0.1, 0.2, 0.4]
    assert second.sent == 1 and [event.pause for event in second.throttled] == [0.1]


def test_a_refusal_that_is_not_throttling_does_not_pause(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    server.fail("mail", 450, "4.2.1 Mailbox busy", times=1)
    with syncsmtp.Mailer(server.policy(), throttle_backoff=30) as mailer:
        report = mailer.send_many([make_message(0)], timeout=20, retries=1, backoff=0.05)
    assert report.sent == 1 and report.retries == 1
    assert report.throttled == () and "throttling" not in str(report)


def test_a_send_during_a_pause_times_out_unsent(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    server.fail("mail", 421, "4.7.0 Try again later", times=1)
    with syncsmtp.Mailer(server.policy(), throttle_backoff=30) as mailer:
        with pytest.raises(syncsmtp.SenderRefused) as refused:
            mailer.send(make_message(0), timeout=10)
        assert refused.value.reply is not None and refused.value.reply.code == 421
        with pytest.raises(syncsmtp.SendTimeout) as timed_out:
            mailer.send(make_message(1), timeout=1)
    error = timed_out.value
    assert error.stage == "connect" and not error.maybe_delivered
    assert "throttling" in str(error)
    assert server.outbox == []


def test_no_retry_after_the_content_was_sent_without_an_answer(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    server.drop("end-of-data", times=1)
    with syncsmtp.Mailer(server.policy(), throttle_backoff=0.1) as mailer:
        report = mailer.send_many([make_message(n) for n in range(3)], timeout=20, retries=3, backoff=0.05)
    assert len(report.failed) == 1
    _, error = report.failed[0]
    assert isinstance(error, syncsmtp.ConnectionLostError) and error.maybe_delivered
    assert all(count == 1 for count in subjects(server).values())  # never sent twice
    assert len(server.outbox) == 3


def test_a_throttling_reply_after_the_data_is_retried(smtp_server_factory: ServerFactory) -> None:
    # A well-formed 421 after the final dot says the message was not taken: safe to retry.
    server = smtp_server_factory(tls="none")
    server.fail("end-of-data", 421, "4.7.0 Too much mail, try later", times=1)
    with syncsmtp.Mailer(server.policy(), throttle_backoff=0.1) as mailer:
        report = mailer.send_many([make_message(0)], timeout=20, retries=2)
    assert report.sent == 1 and report.retries == 1
    assert [event.reply.code for event in report.throttled] == [421]
    assert subjects(server) == Counter({"message 0": 1})


# -- the pieces, on a clock of their own ------------------------------------------------------------


def test_replies_that_ask_to_slow_down() -> None:
    parse = syncsmtp.Reply.parse
    assert is_throttling(parse(421, "4.3.2 Service not available"))
    assert is_throttling(parse(432, "4.3.2 Concurrent connections limit exceeded"))
    assert is_throttling(parse(451, "4.7.500 Server busy"))
    assert is_throttling(parse(454, "4.7.0 Try again later"))
    assert is_throttling(parse(454, "Throttling failure: Daily message quota exceeded."))
    assert not is_throttling(parse(451, "4.3.0 Local error in processing"))
    assert not is_throttling(parse(454, "4.7.1 Relay access denied"))
    assert not is_throttling(parse(450, "4.2.1 Mailbox busy"))
    assert not is_throttling(parse(550, "5.7.1 Rejected"))
    assert not is_throttling(None)


def test_token_bucket_keeps_the_rate_and_the_burst() -> None:
    bucket = TokenBucket(4.0)  # one every 0.25 s, none saved up
    started = [t / 100 for t in range(0, 300) if not bucket.delay(t / 100) and bucket.take(t / 100) is None]
    assert started == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75]
    saving = TokenBucket(4.0, burst=3)
    now = 10.0
    taken = 0
    while not saving.delay(now):
        saving.take(now)
        taken += 1
    assert taken == 3 and saving.delay(now) == pytest.approx(0.25)


@pytest.mark.parametrize("late", [0.0, 0.001, 0.004, 0.019])
def test_a_late_timer_neither_slows_the_rate_nor_lets_a_second_hold_more(late: float) -> None:
    bucket = TokenBucket(50.0)  # one every 20 ms
    now, starts = 0.0, []
    for _ in range(1000):  # bounded: 10 s of simulated time is about 500 starts
        wait = bucket.delay(now)
        if wait > 0:
            now += wait + late  # the reactor's timer fires after the moment it was set for
        if now >= 10.0:
            break
        bucket.take(now)
        starts.append(now)
    assert len(starts) >= 0.95 * 500
    assert max(sum(1 for t in starts[i:] if t < start + 1.0) for i, start in enumerate(starts)) <= 50


def test_gate_pauses_double_and_start_again() -> None:
    reply = syncsmtp.Reply.parse(421, "4.7.0 later")
    gate = Gate(None, 1.0, 4.0)
    gate.throttled(0.0, reply)
    gate.throttled(0.5, reply)  # during the pause: no new pause
    assert gate.delay(0.5) == pytest.approx(0.5)
    gate.throttled(1.0, reply)
    gate.throttled(3.0, reply)
    gate.throttled(7.0, reply)
    assert [event.pause for event in gate.events] == [1.0, 0.0, 2.0, 4.0, 4.0]  # capped
    gate.saw(11.0, None)
    gate.throttled(12.0, reply)
    assert gate.events[-1].pause == 1.0


def test_mailer_checks_its_rate_arguments() -> None:
    policy = syncsmtp.Policy("127.0.0.1", tls="none")
    for wrong in (0, -1.0, float("inf"), "10", True):
        with pytest.raises(ValueError, match="Mailer rate must be a positive, finite number per second"):
            syncsmtp.Mailer(policy, rate=wrong)
    for wrong in (0, 1.5, True):
        with pytest.raises(ValueError, match="Mailer burst must be a positive integer"):
            syncsmtp.Mailer(policy, rate=1, burst=wrong)
    with pytest.raises(ValueError, match="Mailer throttle_backoff must be a positive, finite number"):
        syncsmtp.Mailer(policy, throttle_backoff=0)
    mailer = syncsmtp.Mailer(policy, connections=4, rate=10)
    assert mailer.rate == 10.0 and "rate=10" in repr(mailer)
    mailer.close()
