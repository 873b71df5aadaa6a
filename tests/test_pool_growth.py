"""How many connections a Mailer opens against the project's test server:
messages sent at once spread over the connections asked for, also when a
busy connection could take them behind its own (PIPELINING, BDAT); a server
that refuses more connections than it has fails no message."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from many_messages import MODES, make_message, run_concurrently

import syncsmtp
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]


def delivered_once(server: SMTPTestServer, count: int) -> bool:
    subjects = Counter(str(received.message["Subject"]) for received in server.outbox)
    return set(subjects) == {f"message {n}" for n in range(count)} and set(subjects.values()) == {1}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_warm_pool_grows_to_its_size(smtp_server_factory: ServerFactory, mode: str) -> None:
    # The first message leaves one idle connection; the batch's others could
    # queue behind it (over BDAT, 16 at once), yet the pool opens the rest.
    server = smtp_server_factory(tls="none", extensions=MODES[mode])
    with syncsmtp.Mailer(server.policy(), connections=3) as mailer:
        mailer.send(make_message(0), timeout=10)
        report = mailer.send_many([make_message(n) for n in range(1, 60)], timeout=20)
    assert report.sent == 59 and not report.failed
    assert delivered_once(server, 60)
    assert server.connections == 3


def test_concurrent_sends_spread_over_the_connections(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", extensions=MODES["bdat"])
    errors: list[BaseException] = []
    with syncsmtp.Mailer(server.policy(), connections=4) as mailer:
        mailer.send(make_message(0), timeout=10)

        def sender(thread: int) -> None:
            try:
                for n in range(1 + 10 * thread, 11 + 10 * thread):
                    mailer.send(make_message(n), timeout=10)
            except BaseException as error:  # asserted on below
                errors.append(error)

        run_concurrently(sender, 8, seconds=60)
    assert not errors
    assert delivered_once(server, 81)
    assert server.connections == 4


def test_a_server_refusing_more_connections_fails_no_message(smtp_server_factory: ServerFactory) -> None:
    # More messages than one connection takes in flight (16): some wait while
    # the other connections are refused. They go over the first one, and the
    # pool tries no more connections for a while.
    server = smtp_server_factory(tls="none", extensions=MODES["bdat"])
    with syncsmtp.Mailer(server.policy(), connections=3) as mailer:
        mailer.send(make_message(0), timeout=10)
        server.fail("greeting", 421, "4.7.0 Too many connections from your host")
        report = mailer.send_many([make_message(n) for n in range(1, 41)], timeout=20)
        assert report.sent == 40 and not report.failed, report.failed
        tried = server.connections
        assert 1 < tried <= 3
        report = mailer.send_many([make_message(n) for n in range(41, 81)], timeout=20)
        assert report.sent == 40 and not report.failed, report.failed
    assert delivered_once(server, 81)
    assert server.connections == tried


def test_with_no_connection_up_a_refusal_still_fails_the_message(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none", extensions=MODES["bdat"])
    server.fail("greeting", 421, "4.7.0 Too many connections from your host")
    with syncsmtp.Mailer(server.policy(), connections=3) as mailer:
        with pytest.raises(syncsmtp.SMTPError) as raised:
            mailer.send(make_message(0), timeout=10)
        assert raised.value.reply is not None and raised.value.reply.code == 421
        server.clear_faults()
        assert mailer.send(make_message(1), timeout=10).reply.code == 250
