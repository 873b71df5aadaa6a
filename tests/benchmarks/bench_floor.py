"""The floor under syncsmtp's design: the same SMTP exchange through a Twisted
client in a reactor thread with no SMTP logic at all, beside smtplib and syncsmtp.

Run by hand (not part of the test suite)::

    python tests/benchmarks/bench_floor.py [--sequential 2000] [--fresh 300] [--bulk 10000] [--rounds 3]
        [--email]

syncsmtp runs its sessions in Twisted's reactor, in a thread of its own, and
the caller blocks on each message (the design fixes this). Some CPU per
message is the price of that design whatever the SMTP code does: the hand-off
to the reactor thread and back, the reactor's event dispatch, Twisted's
connection set-up and tear-down. This prints that price, measured with a
bare client that does only what the wire needs:

- it writes the same pipelined commands syncsmtp writes (MAIL, RCPT and DATA
  in one write, the data and, on a fresh connection, QUIT in the next) and
  counts reply lines, checking nothing else;
- it hands each message to the reactor thread and waits for it the way
  syncsmtp does (``syncsmtp._reactor.run``), and writes to the socket the
  way syncsmtp does (``syncsmtp._twisted.write_at_once``);
- for many messages (``--bulk``) it keeps 8 connections busy the way
  ``Mailer.send_many`` does over DATA: each message's data goes in one write
  with the next message's MAIL, RCPT and DATA (RFC 2920), and the batch is
  handed to the reactor thread once; smtplib sends them over one connection,
  as in ``bench_mailer.py``.

Every client sends the same message already serialised, as bytes with its
envelope (``smtplib.SMTP.sendmail``, ``Mailer.send(bytes, sender=,
recipients=)``), so that serialising an ``EmailMessage`` is not counted:
``bench_mailer.py`` and ``bench_send.py`` time that case.

With ``--email``, two more comparisons take the workload of
``bench_mailer.py`` (its 1 KiB ``EmailMessage``, through
``smtplib.SMTP.send_message``, ``Mailer.send`` and ``send_many``; aiosmtplib
with 8 connections too, when installed) and give the bare client each
message's preparation as syncsmtp does it before anything is sent
(``syncsmtp.message.prepare_message``: checks, envelope, serialisation), then
its own bytes of the same size. That is the most any client of this design
could get out of that workload. For many messages the bare client prepares
them all first and sends them after, without the overlap ``send_many`` has.

All against
Postfix's ``smtp-sink`` on 127.0.0.1, in one run, the clients' rounds taking
turns; each figure is the median of ``--rounds``, with the CPU time of each
thread of this process per message (from /proc, Linux only).
"""

from __future__ import annotations

import argparse
import email.message
import gc
import os
import platform
import smtplib
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import twisted
from postfix import SmtpSink
from twisted.internet import defer, protocol

import syncsmtp
from syncsmtp import _reactor, _twisted
from syncsmtp.message import prepare_message

SENDER = "bench@example.com"
RECIPIENT = "sink@example.com"
MESSAGE = (
    b"From: bench@example.com\r\nTo: sink@example.com\r\nSubject: benchmark\r\n"
    b"Message-ID: <floor@example.com>\r\nDate: Tue, 01 Dec 2026 12:00:00 +0000\r\n\r\n"
    + (b"0123456789abcdef" * 4 + b"\r\n") * 16
)
COMMANDS = b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (SENDER.encode(), RECIPIENT.encode())
DATA = MESSAGE + b".\r\n"  # no line starts with a dot: nothing to stuff
BULK_CONNECTIONS = 8


class BareClient(protocol.Protocol):
    """SMTP on the wire and nothing more: writes, counts final reply lines."""

    def __init__(self) -> None:
        self._buffer = b""
        self._awaited = 0
        self._then: Callable[[], None] = lambda: None
        self.ready: defer.Deferred[BareClient] = defer.Deferred()
        self.done: defer.Deferred[None] | None = None

    def connectionMade(self) -> None:
        self._expect(1, lambda: self._write(b"EHLO localhost\r\n", 1, lambda: self.ready.callback(self)))

    def _expect(self, replies: int, then: Callable[[], None]) -> None:
        self._awaited, self._then = replies, then

    def _write(self, data: bytes, replies: int, then: Callable[[], None]) -> None:
        self._expect(replies, then)
        _twisted.write_at_once(self.transport, data)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\r\n")
        for line in lines:
            if line[3:4] != b"-":
                self._awaited -= 1
                if self._awaited == 0:
                    self._then()

    def send(self, quit_after: bool) -> defer.Deferred[None]:
        """MAIL, RCPT and DATA in one write; after the 354, the data (and QUIT)."""
        done: defer.Deferred[None] = defer.Deferred()
        self.done = done
        tail = DATA + (b"QUIT\r\n" if quit_after else b"")
        replies = 2 if quit_after else 1
        self._write(COMMANDS, 3, lambda: self._write(tail, replies, lambda: done.callback(None)))
        return done

    def send_back_to_back(self, count: int) -> defer.Deferred[None]:
        """``count`` messages, each one's data in the same write as the next
        one's MAIL, RCPT and DATA; fires at the last one's final reply."""
        done: defer.Deferred[None] = defer.Deferred()

        def after_354(left: int) -> None:
            if left == 1:
                self._write(DATA, 1, lambda: done.callback(None))
            else:  # the 250 for this data, then the next message's 250, 250, 354
                self._write(DATA + COMMANDS, 4, lambda: after_354(left - 1))

        self._write(COMMANDS, 3, lambda: after_354(count))
        return done


def _bare_connect(reactor: Any, port: int) -> defer.Deferred[BareClient]:
    client = BareClient()
    factory = protocol.ClientFactory.forProtocol(lambda: client)
    factory.noisy = False
    reactor.connectTCP("127.0.0.1", port, factory)
    return client.ready


def _bare_fresh(reactor: Any, port: int) -> defer.Deferred[None]:
    def send(client: BareClient) -> defer.Deferred[None]:
        done = client.send(quit_after=True)
        done.addCallback(lambda _: client.transport.loseConnection())
        return done

    return _bare_connect(reactor, port).addCallback(send)


def _bare_bulk(reactor: Any, clients: list[BareClient], count: int) -> defer.Deferred[Any]:
    """``count`` messages over ``clients``, shared out as evenly as they go."""
    shares = [count // len(clients) + (index < count % len(clients)) for index in range(len(clients))]
    sending = [client.send_back_to_back(n) for client, n in zip(clients, shares, strict=True) if n]
    return defer.gatherResults(sending)


def _thread_cpu() -> dict[int, float]:
    """CPU seconds so far of each thread of this process."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds: dict[int, float] = {}
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        seconds[int(task)] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def measure(run: Callable[[], None], count: int) -> tuple[float, float, float]:
    """Messages per second, and CPU µs per message in this thread and in the others."""
    gc.collect()
    me = threading.get_native_id()
    before, started = _thread_cpu(), time.perf_counter()
    run()
    elapsed, after = time.perf_counter() - started, _thread_cpu()
    caller = (after[me] - before[me]) * 1e6 / count
    others = sum(after[t] - before.get(t, 0.0) for t in after if t != me) * 1e6 / count
    return count / elapsed, caller, others


def compare(title: str, runs: dict[str, Callable[[], None]], count: int, rounds: int) -> None:
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            figures[name].append(measure(run, count))
    print(f"{title} ({count} messages, median of {rounds} rounds)")
    smtplib_rate = statistics.median(rate for rate, _, _ in figures["smtplib"])
    aiosmtplib_rate = statistics.median(rate for rate, _, _ in figures.get("aiosmtplib", [(0.0, 0.0, 0.0)]))
    for name, values in figures.items():
        rate = statistics.median(v[0] for v in values)
        caller = statistics.median(v[1] for v in values)
        others = statistics.median(v[2] for v in values)
        against = f"{rate / smtplib_rate:5.2f}x smtplib"
        if aiosmtplib_rate:
            against += f" {rate / aiosmtplib_rate:5.2f}x aiosmtplib"
        print(f"   {name:<22} {rate:8.1f} msg/s  {against}   CPU per message: "
              f"caller {caller:5.0f} us + reactor thread {others:5.0f} us = {caller + others:5.0f} us")
    print()


def compare_email_messages(port: int, policy: syncsmtp.Policy, args: argparse.Namespace) -> None:
    """``--email``: bench_mailer.py's workload, and the bare client given
    syncsmtp's preparation of each message before it sends."""
    from bench_mailer import aiosmtplib_bulk, one_kib_message

    message = one_kib_message()
    # Made after the sequential sends: alive, they slowed smtplib's sends
    # of the one message in a scratch loop (medians of five pairs of runs).
    bulk: list[email.message.EmailMessage] = []

    def smtplib_sequential() -> None:
        with smtplib.SMTP("127.0.0.1", port) as client:
            for _ in range(args.sequential):
                client.send_message(message)

    def bare_sequential() -> None:
        client = _reactor.run(_bare_connect, port, timeout=10)
        for _ in range(args.sequential):
            prepare_message(message)
            _reactor.run(lambda reactor: client.send(quit_after=False), timeout=10)
        _reactor.run(lambda reactor: client.transport.loseConnection(), timeout=10)

    def syncsmtp_sequential() -> None:
        with syncsmtp.Mailer(policy, connections=1) as mailer:
            for _ in range(args.sequential):
                mailer.send(message, timeout=10)

    def smtplib_bulk() -> None:
        with smtplib.SMTP("127.0.0.1", port) as client:
            for item in bulk:
                client.send_message(item)

    def bare_bulk() -> None:
        for item in bulk:
            prepare_message(item)
        clients = [_reactor.run(_bare_connect, port, timeout=10) for _ in range(BULK_CONNECTIONS)]
        _reactor.run(_bare_bulk, clients, args.bulk, timeout=600)
        for client in clients:
            _reactor.run(lambda reactor, client=client: client.transport.loseConnection(), timeout=10)

    def syncsmtp_bulk() -> None:
        with syncsmtp.Mailer(policy, connections=BULK_CONNECTIONS) as mailer:
            report = mailer.send_many(bulk, timeout=60)
        assert report.sent == args.bulk, str(report)

    bulk_runs: dict[str, Callable[[], None]] = {"smtplib": smtplib_bulk}
    try:
        import aiosmtplib  # noqa: F401
    except ImportError:
        print("aiosmtplib is not installed: left out\n")
    else:
        bulk_runs["aiosmtplib"] = lambda: aiosmtplib_bulk("127.0.0.1", port, bulk, BULK_CONNECTIONS)
    bulk_runs |= {"bare + preparation": bare_bulk, "syncsmtp send_many": syncsmtp_bulk}
    compare("4. EmailMessage, one reused connection, sequential blocking sends",
            {"smtplib": smtplib_sequential, "bare + preparation": bare_sequential,
             "syncsmtp Mailer": syncsmtp_sequential}, args.sequential, args.rounds)
    bulk.extend(one_kib_message(number) for number in range(args.bulk))
    compare(f"5. EmailMessage, many messages: smtplib over one connection, the others over "
            f"{BULK_CONNECTIONS}", bulk_runs, args.bulk, args.rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=2000, help="messages on one reused connection")
    parser.add_argument("--fresh", type=int, default=300, help="messages on a new connection each")
    parser.add_argument("--bulk", type=int, default=10000, help="messages over 8 connections")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--email", action="store_true",
                        help="also compare with bench_mailer.py's EmailMessage workload")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"python {platform.python_version()}, twisted {twisted.__version__}, "
          f"syncsmtp {syncsmtp.__version__}\n")

    with SmtpSink(backlog=1024) as sink:
        port = sink.port
        policy = syncsmtp.Policy(host="127.0.0.1", port=port, tls="none")

        def smtplib_sequential() -> None:
            with smtplib.SMTP("127.0.0.1", port) as client:
                for _ in range(args.sequential):
                    client.sendmail(SENDER, [RECIPIENT], MESSAGE)

        def bare_sequential() -> None:
            client = _reactor.run(_bare_connect, port, timeout=10)
            for _ in range(args.sequential):
                _reactor.run(lambda reactor: client.send(quit_after=False), timeout=10)
            _reactor.run(lambda reactor: client.transport.loseConnection(), timeout=10)

        def syncsmtp_sequential() -> None:
            with syncsmtp.Mailer(policy, connections=1) as mailer:
                for _ in range(args.sequential):
                    mailer.send(MESSAGE, sender=SENDER, recipients=[RECIPIENT], timeout=10)

        def smtplib_fresh() -> None:
            for _ in range(args.fresh):
                with smtplib.SMTP("127.0.0.1", port) as client:
                    client.sendmail(SENDER, [RECIPIENT], MESSAGE)

        def bare_fresh() -> None:
            for _ in range(args.fresh):
                _reactor.run(_bare_fresh, port, timeout=10)

        def syncsmtp_fresh() -> None:
            for _ in range(args.fresh):
                syncsmtp.send(MESSAGE, policy, sender=SENDER, recipients=[RECIPIENT], timeout=10)

        def smtplib_bulk() -> None:
            with smtplib.SMTP("127.0.0.1", port) as client:
                for _ in range(args.bulk):
                    client.sendmail(SENDER, [RECIPIENT], MESSAGE)

        def bare_bulk() -> None:
            clients = [_reactor.run(_bare_connect, port, timeout=10) for _ in range(BULK_CONNECTIONS)]
            _reactor.run(_bare_bulk, clients, args.bulk, timeout=600)
            for client in clients:
                _reactor.run(lambda reactor, client=client: client.transport.loseConnection(), timeout=10)

        bulk_items = [syncsmtp.Outgoing(MESSAGE, SENDER, [RECIPIENT])] * args.bulk

        def syncsmtp_bulk() -> None:
            with syncsmtp.Mailer(policy, connections=BULK_CONNECTIONS) as mailer:
                report = mailer.send_many(bulk_items, timeout=60)
            assert report.sent == args.bulk, str(report)

        syncsmtp_fresh()  # starts the reactor thread; a warm-up for every client
        bare_fresh()
        smtplib_fresh()
        compare("1. one reused connection, sequential blocking sends",
                {"smtplib": smtplib_sequential, "bare Twisted client": bare_sequential,
                 "syncsmtp Mailer": syncsmtp_sequential}, args.sequential, args.rounds)
        compare("2. a new connection for each message",
                {"smtplib": smtplib_fresh, "bare Twisted client": bare_fresh,
                 "syncsmtp.send": syncsmtp_fresh}, args.fresh, args.rounds)
        compare(f"3. many messages: smtplib over one connection, the others over {BULK_CONNECTIONS}",
                {"smtplib": smtplib_bulk, "bare Twisted client": bare_bulk,
                 "syncsmtp send_many": syncsmtp_bulk}, args.bulk, args.rounds)
        if args.email:
            compare_email_messages(port, policy, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
