"""Mailer: reused connections, a thread-safe pool, and no message ever sent twice."""

from __future__ import annotations

import contextlib
import email.message
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import syncsmtp
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]


def make_message(subject: str = "test", to: str = "bob@example.com") -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "ann@example.com"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("hello\n")
    return message


def test_connection_is_reused(smtp_server: SMTPTestServer) -> None:
    with syncsmtp.Mailer(smtp_server.policy()) as mailer:
        results = [mailer.send(make_message(f"m{i}"), timeout=10) for i in range(5)]
    assert smtp_server.connections == 1
    assert [r.message["Subject"] for r in smtp_server.wait_for(5)] == [f"m{i}" for i in range(5)]
    assert all(r.auth_mechanism and r.tls for r in results)
    assert not any("EHLO" in line for line in results[1].transcript), "set-up happens once"
    assert smtp_server.commands[0][-1] == b"QUIT", "close() sends QUIT"
    assert b"RSET" not in smtp_server.commands[0], "RSET only after a failed transaction"


def test_a_reused_connection_s_transcripts_hold_each_message_s_own_lines(
        smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")
    with syncsmtp.Mailer(server.policy()) as mailer:
        first, second, third = (mailer.send(make_message(f"m{i}"), timeout=10) for i in range(3))
    assert server.connections == 1
    assert first.transcript[0].startswith("S: 220") and any("EHLO" in line for line in first.transcript)
    for result in (second, third):
        assert result.transcript[0].startswith("C: MAIL FROM:"), result.transcript
        assert result.transcript[-1].startswith("S: 250"), result.transcript
    # Nothing of an earlier message is left over in a later one, nothing is missing.
    def shape(transcript: tuple[str, ...]) -> list[str]:
        return [line[:6] for line in transcript]
    assert shape(second.transcript) == shape(third.transcript)
    assert shape(first.transcript)[-len(third.transcript):] == shape(third.transcript)


def test_open_connects_before_the_first_message(smtp_server: SMTPTestServer) -> None:
    with syncsmtp.Mailer(smtp_server.policy()) as mailer:
        mailer.open(timeout=10)
        assert smtp_server.connections == 1 and not smtp_server.outbox
        mailer.open(timeout=10)  # already open: nothing more
        mailer.send(make_message(), timeout=10)
    assert smtp_server.connections == 1 and len(smtp_server.wait_for(1)) == 1


def test_open_raises_why_it_could_not_connect(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(users={"user": "password"})
    wrong_password = server.policy(password="wrong")
    with syncsmtp.Mailer(wrong_password) as mailer, pytest.raises(syncsmtp.AuthDeclinedError):
        mailer.open(timeout=10)
    policy = syncsmtp.Policy(host="127.0.0.1", port=_closed_port(), tls="none")
    with syncsmtp.Mailer(policy) as mailer, pytest.raises(syncsmtp.ConnectError):
        mailer.open(timeout=10)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("pipelining", [True, False])
def test_failed_transaction_then_rset_and_go_on(smtp_server_factory: ServerFactory, pipelining: bool) -> None:
    server = smtp_server_factory(users={"user": "password"},
                                 extensions=("PIPELINING",) if pipelining else ())
    server.refuse_recipient("gone@example.com")
    with syncsmtp.Mailer(server.policy()) as mailer:
        with pytest.raises(syncsmtp.RecipientsRefused):
            mailer.send(make_message(to="gone@example.com"), timeout=10)
        mailer.send(make_message("after"), timeout=10)
    assert server.connections == 1
    assert b"RSET" in server.commands[0]
    assert [r.message["Subject"] for r in server.outbox] == ["after"]


def test_dead_idle_connection_is_replaced_before_data(smtp_server: SMTPTestServer) -> None:
    with syncsmtp.Mailer(smtp_server.policy()) as mailer:
        mailer.send(make_message("first"), timeout=10)
        smtp_server.drop("mail", times=1)  # the reused connection dies as the next message starts
        result = mailer.send(make_message("second"), timeout=10)
    assert result.reply.code == 250
    assert [r.message["Subject"] for r in smtp_server.outbox] == ["first", "second"]
    assert smtp_server.connections >= 2


def test_never_resent_once_data_began(smtp_server: SMTPTestServer) -> None:
    with syncsmtp.Mailer(smtp_server.policy()) as mailer:
        mailer.send(make_message("first"), timeout=10)
        smtp_server.drop("end-of-data")
        with pytest.raises(syncsmtp.ConnectionLostError) as caught:
            mailer.send(make_message("second"), timeout=10)
        assert caught.value.maybe_delivered
        smtp_server.clear_faults()
        mailer.send(make_message("third"), timeout=10)
    assert [r.message["Subject"] for r in smtp_server.outbox] == ["first", "second", "third"]


def test_idle_connections_are_closed(smtp_server: SMTPTestServer) -> None:
    with syncsmtp.Mailer(smtp_server.policy(), idle_timeout=0.3) as mailer:
        mailer.send(make_message("a"), timeout=10)
        deadline = time.monotonic() + 10
        while smtp_server.commands[0][-1:] != [b"QUIT"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert smtp_server.commands[0][-1] == b"QUIT"
        mailer.send(make_message("b"), timeout=10)
    assert smtp_server.connections == 2


def test_the_idle_timeout_counts_from_the_last_message(smtp_server: SMTPTestServer) -> None:
    # Used again before its idle_timeout from the first message, a connection
    # gets the whole timeout again from the second.
    with syncsmtp.Mailer(smtp_server.policy(), connections=1, idle_timeout=1.0) as mailer:
        for subject in ("a", "b", "c"):
            mailer.send(make_message(subject), timeout=10)
            time.sleep(0.6)
        assert smtp_server.connections == 1
        deadline = time.monotonic() + 10
        while smtp_server.commands[0][-1:] != [b"QUIT"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert smtp_server.commands[0][-1] == b"QUIT"
    assert smtp_server.connections == 1


def test_waiting_for_a_busy_connection_counts_against_the_deadline(smtp_server: SMTPTestServer) -> None:
    smtp_server.stall("rcpt")
    with syncsmtp.Mailer(smtp_server.policy(), connections=1) as mailer:
        errors: list[BaseException] = []

        def blocked() -> None:
            try:
                mailer.send(make_message("stalled"), timeout=3)
            except syncsmtp.SMTPError as exc:
                errors.append(exc)

        thread = threading.Thread(target=blocked)
        thread.start()
        time.sleep(0.5)
        with pytest.raises(syncsmtp.SendTimeout) as caught:
            mailer.send(make_message("queued"), timeout=1)
        assert caught.value.stage == "connect"
        thread.join(10)
    assert errors and isinstance(errors[0], syncsmtp.SendTimeout) and errors[0].stage == "rcpt"


def test_deadlines_expire_in_their_order_and_leave_no_timer_behind(smtp_server: SMTPTestServer) -> None:
    """Messages queued behind a stalled one, with shorter deadlines given
    later: each fails at its own deadline; once the Mailer is closed, its
    pool leaves no timer in the reactor."""
    from twisted.internet import reactor

    from syncsmtp import _reactor

    smtp_server.stall("rcpt")
    with syncsmtp.Mailer(smtp_server.policy(), connections=1) as mailer:
        failed_at: dict[str, tuple[float, str]] = {}
        started = time.monotonic()

        def send(subject: str, timeout: float) -> None:
            try:
                mailer.send(make_message(subject), timeout=timeout)
            except syncsmtp.SendTimeout as error:
                failed_at[subject] = (time.monotonic() - started, error.stage)

        threads = [threading.Thread(target=send, args=(subject, timeout))
                   for subject, timeout in (("stalled", 4.0), ("queued-long", 3.0), ("queued-short", 1.0))]
        for thread in threads:
            thread.start()
            time.sleep(0.2)
        for thread in threads:
            thread.join(15)
        assert set(failed_at) == {"stalled", "queued-long", "queued-short"}
        assert failed_at["stalled"][1] == "rcpt"
        assert failed_at["queued-long"][1] == failed_at["queued-short"][1] == "connect"
        assert failed_at["queued-short"][0] < failed_at["queued-long"][0] < failed_at["stalled"][0]
        pool = mailer._pool
    assert _reactor.run(lambda _: _deadline_timers(reactor, pool), timeout=10) == []


def test_delivered_messages_leave_no_deadline_timer(smtp_server: SMTPTestServer) -> None:
    from twisted.internet import reactor

    from syncsmtp import _reactor

    with syncsmtp.Mailer(smtp_server.policy(), connections=2) as mailer:
        mailer.send(make_message("one"), timeout=10)
        report = mailer.send_many([make_message(f"many {n}") for n in range(20)], timeout=10)
        assert report.sent == 20
        pool = mailer._pool
        assert pool is not None
        # Left set between messages (one timer for all), and gone with the Mailer.
        assert len(_reactor.run(lambda _: _deadline_timers(reactor, pool), timeout=10)) == 1
    assert _reactor.run(lambda _: _deadline_timers(reactor, pool), timeout=10) == []
    assert pool._deadlines._heap == []


def _deadline_timers(reactor: Any, pool: Any) -> list[Any]:
    """The reactor's timers set by a Mailer's deadline watch (run in the reactor thread)."""
    return [call for call in reactor.getDelayedCalls()
            if getattr(call.func, "__self__", None) is pool._deadlines]


def test_deadlines_of_finished_messages_are_let_go() -> None:
    """The deadline heap is rebuilt without finished requests once they
    outnumber the live ones, so a long batch does not keep every message it
    sent until its deadline; a request that finished is never expired."""
    from twisted.internet.task import Clock

    from syncsmtp._deadlines import Deadlines
    from syncsmtp._engine import Progress
    from syncsmtp._request import Request
    from syncsmtp.message import prepare_message

    clock = Clock()
    expired: list[Request] = []
    deadlines = Deadlines(clock, expired.append)
    envelope = prepare_message(make_message())
    requests = [Request(envelope, Progress(), 60.0, lambda outcome: None) for _ in range(1000)]
    most_kept = 0
    for number, request in enumerate(requests):
        deadlines.add(request, 60.0)
        clock.advance(0.01)
        if number >= 3:  # three stay live, the rest finish as they go
            requests[number - 3].finish(object())  # type: ignore[arg-type]
        most_kept = max(most_kept, len(deadlines._heap))
    assert most_kept <= 2 * 64 + 4
    clock.advance(60.0)
    assert expired == requests[-3:]
    for request in requests[-3:]:
        request.finish(object())  # type: ignore[arg-type]
    assert deadlines._heap == [] and clock.getDelayedCalls() == []
    assert deadlines._stale == 0  # expired entries left the heap: none is counted as in it
    # Messages one after another share one timer, left set between them.
    for _ in range(10):
        request = Request(envelope, Progress(), 60.0, lambda outcome: None)
        deadlines.add(request, 60.0)
        clock.advance(0.5)
        request.finish(object())  # type: ignore[arg-type]
    assert len(clock.getDelayedCalls()) == 1
    # Once closed, the last live request finishing takes the timer away.
    last = Request(envelope, Progress(), 60.0, lambda outcome: None)
    deadlines.add(last, 60.0)
    deadlines.close()
    assert len(clock.getDelayedCalls()) == 1
    last.finish(object())  # type: ignore[arg-type]
    assert deadlines._heap == [] and clock.getDelayedCalls() == []
    assert expired == requests[-3:]
    # The last live request expiring leaves no timer, though a finished
    # request's later deadline was still in the heap.
    late = Request(envelope, Progress(), 1.0, lambda outcome: None)
    deadlines.add(late, 1.0)
    done = Request(envelope, Progress(), 60.0, lambda outcome: None)
    deadlines.add(done, 60.0)
    done.finish(object())  # type: ignore[arg-type]
    clock.advance(2.0)
    assert expired[-1] is late
    assert deadlines._heap == [] and clock.getDelayedCalls() == []
    assert deadlines._stale == 0


def test_closed_mailer_refuses(smtp_server: SMTPTestServer) -> None:
    mailer = syncsmtp.Mailer(smtp_server.policy())
    mailer.close()
    mailer.close()
    with pytest.raises(syncsmtp.SMTPError, match="closed"):
        mailer.send(make_message(), timeout=5)
    assert smtp_server.connections == 0


def test_bad_arguments() -> None:
    policy = syncsmtp.Policy(host="127.0.0.1", tls="none")
    for connections in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            syncsmtp.Mailer(policy, connections=connections)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        syncsmtp.Mailer("smtp://h")  # type: ignore[arg-type]


def test_many_threads_each_get_their_own_result(smtp_server_factory: ServerFactory) -> None:
    """32 threads x 50 messages through 4 connections: each delivered once, each
    result to the thread that sent it."""
    server = smtp_server_factory(users={"user": "password"}, extensions=("PIPELINING", "8BITMIME"))
    threads_count, per_thread = 32, 50
    mismatches: list[str] = []
    failures: list[BaseException] = []
    with syncsmtp.Mailer(server.policy(), connections=4) as mailer:

        def worker(number: int) -> None:
            for index in range(per_thread):
                message = make_message(f"t{number}-m{index}")
                message["Message-ID"] = f"<t{number}.m{index}@example.com>"
                try:
                    result = mailer.send(message, timeout=60)
                except BaseException as exc:
                    failures.append(exc)
                    return
                if result.message_id != message["Message-ID"]:
                    mismatches.append(f"{message['Message-ID']} got {result.message_id}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not failures, failures[:3]
    assert not mismatches, mismatches[:3]
    subjects = [r.message["Subject"] for r in server.wait_for(threads_count * per_thread, timeout=30)]
    assert len(subjects) == len(set(subjects)) == threads_count * per_thread
    assert server.connections <= 4


FORK_SCRIPT = '''
import os, sys
import syncsmtp
from syncsmtp.testing import SMTPTestServer

def message(subject):
    return (b"Subject: " + subject.encode() + b"\\r\\n\\r\\nx\\r\\n")

if __name__ == "__main__":
    with SMTPTestServer(users={"u": "p"}) as server:
        mailer = syncsmtp.Mailer(server.policy(), connections=2)
        mailer.send(message("parent-1"), sender="a@example.com", recipients=["b@example.com"], timeout=10)
        pid = os.fork()
        if pid == 0:
            code = mailer.send(message("child"), sender="a@example.com", recipients=["b@example.com"],
                               timeout=10).reply.code
            mailer.close()
            os._exit(0 if code == 250 else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        mailer.send(message("parent-2"), sender="a@example.com", recipients=["b@example.com"], timeout=10)
        mailer.close()
        subjects = sorted(m.message["Subject"] for m in server.wait_for(3))
        assert subjects == ["child", "parent-1", "parent-2"], subjects
        # The child opened a connection of its own: the parent's first one was not shared.
        assert server.connections >= 2
    print("ok")
'''


def test_mailer_in_a_forked_child(tmp_path: Any) -> None:
    script = tmp_path / "mailer_fork.py"
    script.write_text(FORK_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- send_many -----------------------------------------------------------------------------


def test_send_many_reports_every_message_in_order(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(users={"user": "password"}, extensions=("PIPELINING",))
    server.refuse_recipient("gone@example.com")
    messages: list[Any] = [make_message(f"m{i}") for i in range(200)]
    messages[10] = make_message("refused", to="gone@example.com")
    messages[20] = make_message("partly", to="bob@example.com, gone@example.com")
    messages[30] = b"no envelope"  # bad input: reported, never sent
    with syncsmtp.Mailer(server.policy(), connections=4) as mailer:
        report = mailer.send_many(messages, timeout=30)
    assert len(report.results) == 200
    assert report.sent == 198
    assert [index for index, _ in report.failed] == [10, 30]
    assert isinstance(report.results[10], syncsmtp.RecipientsRefused)
    assert isinstance(report.results[30], syncsmtp.MessageError)
    assert report.refused_recipients == 1
    result = report.results[5]
    assert isinstance(result, syncsmtp.SendResult) and result.accepted == ("bob@example.com",)
    subjects = sorted(m.message["Subject"] for m in server.wait_for(198))
    assert len(subjects) == len(set(subjects)) == 198
    assert server.connections <= 4
    assert "198 sent, 2 failed" in str(report)
    assert "RecipientsRefused" in report._repr_html_()


def test_send_many_takes_bytes_and_str_with_their_envelopes_beside_messages(
    smtp_server_factory: ServerFactory,
) -> None:
    server = smtp_server_factory(users={"user": "password"}, extensions=("PIPELINING",))
    raw = b"From: ann@example.com\r\nTo: list@example.com\r\nSubject: raw bytes\r\n\r\nbody\r\n"
    items: list[Any] = [
        make_message("from headers"),
        (raw, "bounce@example.com", ["carl@example.com", "dora@example.com"]),
        syncsmtp.Outgoing("Subject: text\r\n\r\nstr body\r\n", "ann@example.com", "eve@example.com"),
        syncsmtp.Outgoing(make_message("override"), recipients=["fred@example.com"]),
        (make_message("override tuple"), "list-owner@example.com", None),
        (b"Subject: no envelope\r\n\r\nx\r\n", None, None),  # bytes need one: refused, not sent
        (make_message("two items"), "ann@example.com"),  # not (message, sender, recipients)
        42,
    ]
    with syncsmtp.Mailer(server.policy(), connections=2) as mailer:
        report = mailer.send_many(iter(items), timeout=10)
    assert report.sent == 5
    assert [index for index, _ in report.failed] == [5, 6, 7]
    assert all(isinstance(error, syncsmtp.MessageError) for _, error in report.failed)
    assert "sender= and recipients=" in str(report.results[5])
    assert "(message, sender, recipients)" in str(report.results[6])
    assert "int" in str(report.results[7])
    received = {m.message["Subject"]: m for m in server.wait_for(5)}
    assert len(server.outbox) == 5
    envelopes = {subject: (m.sender, m.recipients) for subject, m in received.items()}
    assert envelopes == {
        "from headers": ("ann@example.com", ("bob@example.com",)),
        "raw bytes": ("bounce@example.com", ("carl@example.com", "dora@example.com")),
        "text": ("ann@example.com", ("eve@example.com",)),
        "override": ("ann@example.com", ("fred@example.com",)),
        "override tuple": ("list-owner@example.com", ("bob@example.com",)),
    }
    assert received["raw bytes"].data == raw, "bytes go as given"
    second = report.results[1]
    assert isinstance(second, syncsmtp.SendResult) and second.message_id is None
    assert second.accepted == ("carl@example.com", "dora@example.com")


def test_send_many_refuses_one_message_for_its_messages(smtp_server: SMTPTestServer) -> None:
    """One message is iterable (header names, bytes, characters, fields): not a batch."""
    with syncsmtp.Mailer(smtp_server.policy()) as mailer:
        for single in (make_message(), b"Subject: x\r\n\r\nx\r\n", "Subject: x\r\n\r\nx\r\n",
                       syncsmtp.Outgoing(make_message()), 42):
            with pytest.raises(TypeError, match=r"^Mailer.send_many\(\) messages must be an iterable"):
                mailer.send_many(single, timeout=5)  # type: ignore[arg-type]
    assert smtp_server.connections == 0


def test_send_many_streams_its_input_with_a_bounded_backlog(
    smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generator of messages is read while earlier ones are sent, and no
    further ahead of the server than the backlog allows."""
    from syncsmtp import mailer as mailer_module

    monkeypatch.setattr(mailer_module, "_BACKLOG", 40)
    monkeypatch.setattr(mailer_module, "_FEED_SIZE", 8)
    ahead: list[int] = []

    def messages() -> Any:
        for index in range(300):
            ahead.append(index - len(smtp_server.outbox))  # prepared but not yet received
            yield make_message(f"m{index}")

    with syncsmtp.Mailer(smtp_server.policy(), connections=2) as mailer:
        report = mailer.send_many(messages(), timeout=30)
    assert report.sent == 300
    assert sorted(int(m.message["Subject"][1:]) for m in smtp_server.wait_for(300)) == list(range(300))
    assert max(ahead) <= 40 + 2 * 8
    assert ahead[-1] < 299  # sending began long before the input ran out


def test_send_many_retries_transient_failures(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("mail", 451, "4.3.0 Try again later", times=2)
    with syncsmtp.Mailer(smtp_server.policy()) as mailer:
        report = mailer.send_many([make_message(f"m{i}") for i in range(3)], timeout=10,
                                  retries=3, backoff=0.05)
    assert report.sent == 3 and report.retries == 2
    assert sorted(m.message["Subject"] for m in smtp_server.outbox) == ["m0", "m1", "m2"]


def test_send_many_does_not_retry_permanent_or_without_retries(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail("mail", 550, "5.7.1 No", times=1)
    with syncsmtp.Mailer(smtp_server.policy()) as mailer:
        report = mailer.send_many([make_message("a"), make_message("b")], timeout=10, retries=3,
                                  backoff=0.05)
        assert report.retries == 0 and report.sent == 1
        assert isinstance(report.results[0], syncsmtp.SenderRefused)
        smtp_server.fail("mail", 451, "4.3.0 Later", times=1)
        report = mailer.send_many([make_message("c")], timeout=10)
        assert report.sent == 0 and report.failed[0][1].transient


def test_send_many_rate_limit(smtp_server: SMTPTestServer) -> None:
    with syncsmtp.Mailer(smtp_server.policy(), connections=2) as mailer:
        started = time.monotonic()
        report = mailer.send_many([make_message(f"m{i}") for i in range(11)], timeout=10, rate=20)
        elapsed = time.monotonic() - started
    assert report.sent == 11
    assert elapsed >= 0.45  # 10 intervals of 1/20 s at least: a bound on the limiter, not a speed goal


def test_send_many_rejects_bad_options(smtp_server: SMTPTestServer) -> None:
    with syncsmtp.Mailer(smtp_server.policy()) as mailer:
        for options in ({"rate": 0}, {"rate": -1}, {"retries": -1}, {"retries": 1.5}, {"backoff": 0}):
            with pytest.raises(ValueError):
                mailer.send_many([make_message()], **options)  # type: ignore[arg-type]
    assert smtp_server.connections == 0


EXIT_SCRIPT = '''
import sys
import syncsmtp
policy = syncsmtp.Policy(host="127.0.0.1", port=int(sys.argv[1]), ca_file=sys.argv[2],
                         username="user", password="password")
mailer = syncsmtp.Mailer(policy, connections=2)
mailer.send(b"Subject: left open\\r\\n\\r\\nx\\r\\n", sender="a@example.com",
            recipients=["b@example.com"], timeout=10)
print("sent")
# No close(): the interpreter exits with the Mailer open.
'''


def test_interpreter_exit_closes_an_open_mailer(smtp_server: SMTPTestServer, tmp_path: Any) -> None:
    script = tmp_path / "left_open.py"
    script.write_text(EXIT_SCRIPT)
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(script), str(smtp_server.port), str(smtp_server.ca_file)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sent"
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 10
    while smtp_server.commands[0][-1:] != [b"QUIT"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert smtp_server.commands[0][-1] == b"QUIT", "the open connection was closed with QUIT"


def test_exit_does_not_hang_when_the_server_stalls_quit(smtp_server: SMTPTestServer, tmp_path: Any) -> None:
    smtp_server.stall("quit")
    script = tmp_path / "left_open_stalled.py"
    script.write_text(EXIT_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(smtp_server.port), str(smtp_server.ca_file)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_a_connection_stalled_in_set_up_does_not_take_a_place_for_ever(smtp_server: SMTPTestServer) -> None:
    smtp_server.stall("greeting")
    with syncsmtp.Mailer(smtp_server.policy(), connections=1) as mailer:
        with pytest.raises(syncsmtp.SendTimeout):
            mailer.send(make_message("stalled"), timeout=1)
        smtp_server.clear_faults()
        assert mailer.send(make_message("after"), timeout=10).reply.code == 250


@contextlib.contextmanager
def interrupted_after(seconds: float) -> Iterator[None]:
    """Ctrl-C (SIGINT to this thread) after ``seconds``: the block must end
    with KeyboardInterrupt, within 5 seconds."""
    main = threading.get_ident()
    timer = threading.Timer(seconds, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5


def test_ctrl_c_stops_send_many(smtp_server: SMTPTestServer) -> None:
    smtp_server.stall("rcpt")
    with syncsmtp.Mailer(smtp_server.policy(), connections=2) as mailer:
        with interrupted_after(0.5):
            mailer.send_many([make_message(f"m{i}") for i in range(10)], timeout=30)
        smtp_server.clear_faults()
        assert mailer.send(make_message("after"), timeout=10).reply.code == 250
    assert [m.message["Subject"] for m in smtp_server.outbox] == ["after"]


def test_ctrl_c_stops_mailer_send(smtp_server: SMTPTestServer) -> None:
    """Ctrl-C abandons the message in the reactor thread too: its connection
    is dropped mid-transaction and the Mailer goes on with a new one."""
    smtp_server.stall("rcpt")
    with syncsmtp.Mailer(smtp_server.policy(), connections=1) as mailer:
        with interrupted_after(0.5):
            mailer.send(make_message("interrupted"), timeout=30)
        smtp_server.clear_faults()
        assert mailer.send(make_message("after"), timeout=10).reply.code == 250
    assert [m.message["Subject"] for m in smtp_server.outbox] == ["after"]
    assert smtp_server.connections == 2


def test_send_many_with_every_message_failing_at_once() -> None:
    """A thousand failures (nothing listens) must not recurse per message."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = syncsmtp.Policy(host="127.0.0.1", port=port, tls="none")
    with syncsmtp.Mailer(policy, connections=2) as mailer:
        report = mailer.send_many([make_message(f"m{i}") for i in range(1000)], timeout=10)
    assert report.sent == 0 and len(report.failed) == 1000
    assert all(isinstance(error, syncsmtp.ConnectError) for _, error in report.failed)
