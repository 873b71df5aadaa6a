"""Transactions back to back on one connection (PIPELINING, with BDAT or DATA),
through Mailer.send_many against the project's test server: each message's
outcome from its own replies, failures in the middle, and a connection lost
with several messages in flight."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from many_messages import MODES, make_message

import syncsmtp
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]


def subjects(server: SMTPTestServer) -> list[str]:
    return [str(received.message["Subject"]) for received in server.outbox]


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What the sessions write to their sockets, one item a write."""
    from syncsmtp import _twisted

    written: list[bytes] = []
    write = _twisted.write_at_once

    def recording(transport: object, data: bytes) -> None:
        written.append(data)
        write(transport, data)

    monkeypatch.setattr(_twisted, "write_at_once", recording)
    return written


def overlapped(mode: str, server: SMTPTestServer, writes: list[bytes]) -> bool:
    """Whether a message's commands left before the message ahead had its answer."""
    if mode == "bdat":
        # Behind a message sent by BDAT whose outcome is not known yet, RSET goes first.
        return server.commands[0].count(b"RSET") > 0
    # Over DATA: one message's end of data and the next one's MAIL FROM in one write.
    return any(b"\r\n.\r\n" in data and b"MAIL FROM:" in data.split(b"\r\n.\r\n", 1)[1] for data in writes)


@pytest.mark.parametrize("mode", list(MODES))
def test_many_messages_over_one_connection_overlap(smtp_server_factory: ServerFactory, mode: str,
                                                   writes: list[bytes]) -> None:
    server = smtp_server_factory(tls="none", extensions=MODES[mode])
    with syncsmtp.Mailer(server.policy(), connections=1) as mailer:
        report = mailer.send_many([make_message(n) for n in range(30)], timeout=20)
    assert report.sent == 30 and not report.failed
    assert subjects(server) == [f"message {n}" for n in range(30)]
    assert server.connections == 1
    assert overlapped(mode, server, writes)
    if mode == "data":
        # The end of DATA ends a transaction whatever its reply (RFC 5321 4.1.1.4):
        # with nothing refused, no RSET.
        assert b"RSET" not in server.commands[0]
    assert all(r.via == ("BDAT" if mode == "bdat" else "DATA") for r in server.outbox)
    for n, result in enumerate(report.results):
        assert isinstance(result, syncsmtp.SendResult)
        assert result.accepted == (f"rcpt{n}@example.com",)


def test_one_message_s_data_and_the_next_one_s_commands_leave_in_one_write(
        smtp_server_factory: ServerFactory, writes: list[bytes]) -> None:
    server = smtp_server_factory(tls="none", extensions=MODES["data"])
    with syncsmtp.Mailer(server.policy(), connections=1) as mailer:
        report = mailer.send_many([make_message(n) for n in range(12)], timeout=20)
    assert report.sent == 12
    # The replies of one read (the 354 of one message, say) make one write:
    # that message's data with the commands of the next.
    assert any(b"\r\n.\r\n" in data and b"MAIL FROM:" in data.split(b"\r\n.\r\n", 1)[1]
               for data in writes), writes
    assert len(writes) < 2 * 12


@pytest.mark.parametrize("mode", list(MODES))
def test_each_transcript_holds_its_own_message_only(smtp_server_factory: ServerFactory, mode: str,
                                                    writes: list[bytes]) -> None:
    server = smtp_server_factory(tls="none", extensions=MODES[mode])
    with syncsmtp.Mailer(server.policy(), connections=1) as mailer:
        mailer.send(make_message(99), timeout=20)  # a connection set up first
        server.fail("rcpt", 550, "5.1.1 no such user", times=1)
        report = mailer.send_many([make_message(n) for n in range(12)], timeout=20)
    assert server.connections == 1 and overlapped(mode, server, writes)
    outcomes = [outcome for outcome in report.results]
    refused = [error for _, error in report.failed]
    assert len(refused) == 1
    for n, outcome in enumerate(outcomes):
        transcript = "\n".join(outcome.transcript)
        mine = f"RCPT TO:<rcpt{n}@example.com>"
        assert mine in transcript, (n, transcript)
        others = [line for line in outcome.transcript if "RCPT TO:" in line and mine not in line]
        assert not others, (n, transcript)
        # One MAIL FROM, and the reply lines of this message: one reply to MAIL and one to RCPT.
        assert sum(line.startswith("C: MAIL FROM:") for line in outcome.transcript) == 1, transcript
    refused_transcript = refused[0].transcript
    assert any("550" in line for line in refused_transcript)
    assert sum(line.startswith("S: 250") for line in refused_transcript) == 1  # its MAIL only


@pytest.mark.parametrize("mode", list(MODES))
def test_a_refusal_in_the_middle_does_not_disturb_the_others(smtp_server_factory: ServerFactory,
                                                              mode: str) -> None:
    server = smtp_server_factory(tls="none", extensions=MODES[mode])
    with syncsmtp.Mailer(server.policy(), connections=1) as mailer:
        mailer.send(make_message(99), timeout=20)  # a connection set up first
        server.fail("rcpt", 550, "5.1.1 no such user", times=1)
        report = mailer.send_many([make_message(n) for n in range(12)], timeout=20)
    assert len(report.failed) == 1
    index, error = report.failed[0]
    assert isinstance(error, syncsmtp.RecipientsRefused) and not error.maybe_delivered
    expected = ["message 99"] + [f"message {n}" for n in range(12) if n != index]
    assert subjects(server) == expected
    assert server.connections == 1


def test_a_refusal_at_the_end_of_data_leaves_the_messages_behind_it_alone(
        smtp_server_factory: ServerFactory, writes: list[bytes]) -> None:
    # The messages behind the refused one went out before its answer and
    # without RSET (the end of DATA ended its transaction, refused or not);
    # only the first one started once the refusal was known begins with RSET.
    server = smtp_server_factory(tls="none", extensions=MODES["data"])
    with syncsmtp.Mailer(server.policy(), connections=1) as mailer:
        mailer.send(make_message(99), timeout=20)
        server.fail("end-of-data", 554, "5.7.1 content rejected", times=1)
        report = mailer.send_many([make_message(n) for n in range(12)], timeout=20)
    assert overlapped("data", server, writes)
    [(index, error)] = report.failed
    assert index == 0 and isinstance(error, syncsmtp.MessageRefused) and not error.maybe_delivered
    assert subjects(server) == ["message 99"] + [f"message {n}" for n in range(1, 12)]
    assert server.connections == 1 and server.commands[0].count(b"RSET") <= 1
    for n in range(1, 12):
        result = report.results[n]
        assert isinstance(result, syncsmtp.SendResult) and result.accepted == (f"rcpt{n}@example.com",)


def test_connection_lost_with_several_in_flight_over_data(smtp_server_factory: ServerFactory) -> None:
    # Over DATA, the messages behind the lost one have not sent their content:
    # they are retried on a new connection; the lost one may have been delivered.
    server = smtp_server_factory(tls="none", extensions=MODES["data"])
    with syncsmtp.Mailer(server.policy(), connections=1) as mailer:
        mailer.send(make_message(99), timeout=20)
        server.drop("end-of-data", times=1)
        report = mailer.send_many([make_message(n) for n in range(10)], timeout=20)
    counts = Counter(subjects(server))
    assert all(count == 1 for count in counts.values()), counts  # nothing delivered twice
    for index, error in report.failed:
        assert isinstance(error, syncsmtp.ConnectionLostError)
        assert error.maybe_delivered
        assert counts[f"message {index}"] == 1  # the server had it: it was right not to resend
    assert len(report.failed) == 1
    assert sum(counts.values()) == 11


def test_connection_lost_with_several_in_flight_over_bdat(smtp_server_factory: ServerFactory) -> None:
    # Over BDAT, the messages behind the lost one had their content written:
    # each is reported as maybe delivered, none is sent twice.
    server = smtp_server_factory(tls="none", extensions=MODES["bdat"])
    with syncsmtp.Mailer(server.policy(), connections=1) as mailer:
        mailer.send(make_message(99), timeout=20)
        server.drop("end-of-data", times=1)
        report = mailer.send_many([make_message(n) for n in range(10)], timeout=20, retries=2)
    counts = Counter(subjects(server))
    assert all(count == 1 for count in counts.values()), counts
    failed = dict(report.failed)
    assert failed and report.sent + len(failed) == 10
    for error in failed.values():
        assert isinstance(error, syncsmtp.ConnectionLostError) and error.maybe_delivered
    sent = {f"message {n}" for n, result in enumerate(report.results) if n not in failed}
    assert sent <= set(counts)  # every message reported sent is at the server, once
    assert "message 0" in counts and 0 in failed  # the lost one: delivered, reported as maybe
