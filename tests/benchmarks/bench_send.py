"""Fresh-connection sends of a 1 KiB message: syncsmtp.send() vs smtplib, side by side.

Run by hand (not part of the test suite)::

    python tests/benchmarks/bench_send.py [--count 500] [--rounds 5]

Starts Postfix's ``smtp-sink`` on 127.0.0.1 (Debian package postfix), then
alternates rounds of ``--count`` sends with each client, each send on a new
connection: smtplib as ``with smtplib.SMTP(host, port) as s: s.send_message(msg)``
and syncsmtp as ``syncsmtp.send(msg, policy, timeout=10)``. Prints messages per
second for each round, the median over rounds, latency percentiles, and the
ratio syncsmtp/smtplib of the medians.
"""

from __future__ import annotations

import argparse
import email.message
import platform
import smtplib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import twisted
from postfix import SmtpSink

import syncsmtp


def one_kib_message() -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "bench@example.com"
    message["To"] = "sink@example.com"
    message["Subject"] = "benchmark"
    message.set_content(("0123456789abcdef" * 4 + "\n") * 16)  # 1040 bytes of body
    return message


def run_round(send: Callable[[], object], count: int) -> tuple[float, list[float]]:
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        before = time.perf_counter()
        send()
        latencies.append(time.perf_counter() - before)
    return count / (time.perf_counter() - started), latencies


def print_cpu_split(with_smtplib: Callable[[], None], with_syncsmtp: Callable[[], None], count: int) -> None:
    """CPU time per message of each thread (time.thread_time), not wall time."""
    from syncsmtp import _reactor

    def reactor_cpu() -> float:
        return float(_reactor.run(lambda reactor: time.thread_time(), timeout=10))

    caller, reactor = time.thread_time(), reactor_cpu()
    for _ in range(count):
        with_syncsmtp()
    caller, reactor = time.thread_time() - caller, reactor_cpu() - reactor
    print(f"\nCPU per message over {count} sends: syncsmtp caller thread "
          f"{caller / count * 1e6:.0f} us + reactor thread {reactor / count * 1e6:.0f} us")
    caller = time.thread_time()
    for _ in range(count):
        with_smtplib()
    print(f"CPU per message over {count} sends: smtplib {(time.thread_time() - caller) / count * 1e6:.0f} us")


def stock_twisted_seconds(sink: SmtpSink, message: email.message.EmailMessage, count: int) -> float:
    """Seconds per message through Twisted's own sender factory, driven by crochet
    (no TCP_NODELAY: each message waits for a delayed ACK)."""
    import io

    import crochet
    from twisted.internet import defer, reactor
    from twisted.mail.smtp import ESMTPSenderFactory

    data = message.as_bytes()

    @crochet.wait_for(10)
    def send_once() -> defer.Deferred[object]:
        done: defer.Deferred[object] = defer.Deferred()
        factory = ESMTPSenderFactory(
            None, None, "bench@example.com", ["sink@example.com"], io.BytesIO(data), done,
            requireAuthentication=False, requireTransportSecurity=False,
        )
        reactor.connectTCP(sink.host, sink.port, factory)  # type: ignore[attr-defined]
        return done

    started = time.perf_counter()
    for _ in range(count):
        send_once()
    return (time.perf_counter() - started) / count


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="sends per round and client")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per client")
    parser.add_argument(
        "--stock-twisted", type=int, default=0, metavar="N",
        help="also time N sends through Twisted's stock ESMTPSenderFactory via crochet",
    )
    parser.add_argument(
        "--cpu", type=int, default=0, metavar="N",
        help="also measure CPU time per message over N sends, per thread",
    )
    parser.add_argument(
        "--host", default=None, metavar="NAME",
        help="the name both clients connect to (default: the sink's address, 127.0.0.1); "
             "localhost, say, adds resolving the name to every send",
    )
    args = parser.parse_args()

    message = one_kib_message()
    print(f"command: python {' '.join(sys.argv)}")
    versions = f"python {platform.python_version()}, twisted {twisted.__version__}"
    print(f"{versions}, syncsmtp {syncsmtp.__version__}")
    print(f"message: {len(message.as_bytes())} bytes, {args.count} sends x {args.rounds} rounds per client\n")

    with SmtpSink() as sink:
        host = args.host or sink.host
        policy = syncsmtp.Policy(host=host, port=sink.port, tls="none")

        def with_smtplib() -> None:
            with smtplib.SMTP(host, sink.port) as client:
                client.send_message(message)

        def with_syncsmtp() -> None:
            syncsmtp.send(message, policy, timeout=10)

        clients = {"smtplib": with_smtplib, "syncsmtp": with_syncsmtp}
        for send in clients.values():  # warm up: imports, the reactor thread, caches
            for _ in range(20):
                send()
        rates: dict[str, list[float]] = {name: [] for name in clients}
        latencies: dict[str, list[float]] = {name: [] for name in clients}
        for round_number in range(1, args.rounds + 1):
            order = list(clients) if round_number % 2 else list(reversed(clients))
            for name in order:
                rate, times = run_round(clients[name], args.count)
                rates[name].append(rate)
                latencies[name].extend(times)
                print(f"round {round_number}  {name:<9} {rate:8.1f} msg/s")

        if args.cpu:
            print_cpu_split(with_smtplib, with_syncsmtp, args.cpu)

        if args.stock_twisted:
            per_message = stock_twisted_seconds(sink, message, args.stock_twisted)
            print(f"\nstock ESMTPSenderFactory: {per_message * 1000:.1f} ms per message "
                  f"({args.stock_twisted} sends)")

    print()
    for name in clients:
        ms = [t * 1000 for t in latencies[name]]
        print(
            f"{name:<9} median {statistics.median(rates[name]):8.1f} msg/s   best "
            f"{max(rates[name]):8.1f} msg/s   latency p50 {percentile(ms, 0.5):.2f} ms  "
            f"p95 {percentile(ms, 0.95):.2f} ms"
        )
    ratio = statistics.median(rates["syncsmtp"]) / statistics.median(rates["smtplib"])
    print(f"\nratio syncsmtp/smtplib (medians): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
