"""Many messages: syncsmtp's Mailer against smtplib, aiosmtplib and Postfix's smtp-source.

Run by hand (not part of the test suite)::

    python tests/benchmarks/bench_mailer.py [--sequential 2000] [--bulk 10000] [--rounds 3]

All against Postfix's ``smtp-sink`` on 127.0.0.1, 1 KiB messages, in one run:

1. one reused connection, sequential: ``Mailer(connections=1).send`` vs one
   ``smtplib.SMTP`` object's ``send_message``;
2. ``--bulk`` messages: ``Mailer(connections=8).send_many`` vs smtplib's best
   (one connection, sequential) and aiosmtplib with 8 concurrent connections
   (skipped when aiosmtplib is not installed);
3. Postfix's C client ``smtp-source`` with 8 sessions: the ceiling;
4. peak memory for one 25 MiB message, in a fresh process per client.

Each throughput figure is the median of ``--rounds`` rounds; the clients'
rounds take turns, each after a full garbage collection.
"""

from __future__ import annotations

import argparse
import email.message
import gc
import platform
import shutil
import smtplib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import twisted
from postfix import SmtpSink

import syncsmtp

MEMORY_SCRIPT = r"""
import email.message, smtplib, sys, tracemalloc
import syncsmtp
client, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def mib(n):
    return n / 1024 / 1024
def message(body):
    msg = email.message.EmailMessage()
    msg["From"] = "bench@example.com"; msg["To"] = "sink@example.com"; msg["Subject"] = "big"
    msg.set_content(body, cte="7bit") if body else msg.set_content("warm-up")
    return msg
policy = syncsmtp.Policy(host="127.0.0.1", port=port, tls="none")
warm = message("")
if client.startswith("syncsmtp"):  # imports and the reactor thread are not the message's cost
    syncsmtp.send(warm, policy, timeout=60)
else:
    with smtplib.SMTP("127.0.0.1", port) as s: s.send_message(warm)
tracemalloc.start()  # traces every thread's Python allocations, the reactor's too
baseline = tracemalloc.get_traced_memory()[0]
line = "0123456789abcdef" * 4 + "\n"
body = line * (size // len(line))
if client == "syncsmtp-bytes":  # already serialised, as when read from a file
    msg = b"From: bench@example.com\r\nSubject: big\r\n\r\n" + body.replace("\n", "\r\n").encode()
else:
    msg = message(body)
del body
built = tracemalloc.get_traced_memory()[0]
tracemalloc.reset_peak()
if client == "syncsmtp":
    syncsmtp.send(msg, policy, timeout=120)
elif client == "syncsmtp-bytes":
    syncsmtp.send(msg, policy, timeout=120, sender="bench@example.com", recipients=["sink@example.com"])
else:
    with smtplib.SMTP("127.0.0.1", port) as s: s.send_message(msg)
peak = tracemalloc.get_traced_memory()[1]
print(f"{mib(built - baseline):.1f} {mib(peak - baseline):.1f}")
"""


def one_kib_message(number: int = 0) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "bench@example.com"
    message["To"] = "sink@example.com"
    message["Subject"] = f"benchmark {number}"
    message.set_content(("0123456789abcdef" * 4 + "\n") * 16)
    return message


def rates_of(runs: dict[str, Callable[[], None]], count: int, rounds: int) -> dict[str, float]:
    """The median rate of each run, its rounds interleaved with the others' so
    that a slow spell of a shared machine does not fall on one client only."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            gc.collect()
            started = time.perf_counter()
            run()
            rates[name].append(count / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


def aiosmtplib_bulk(
    host: str, port: int, messages: list[email.message.EmailMessage], connections: int
) -> None:
    import asyncio

    import aiosmtplib

    async def worker(queue: asyncio.Queue[email.message.EmailMessage]) -> None:
        client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, use_tls=False)
        await client.connect()
        while not queue.empty():
            await client.send_message(queue.get_nowait())
        await client.quit()

    async def main() -> None:
        queue: asyncio.Queue[email.message.EmailMessage] = asyncio.Queue()
        for message in messages:
            queue.put_nowait(message)
        await asyncio.gather(*(worker(queue) for _ in range(connections)))

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=2000, help="messages, reused-connection test")
    parser.add_argument("--bulk", type=int, default=10000, help="messages for the bulk test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-mib", type=int, default=25, help="size of the big message")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    versions = f"python {platform.python_version()}, twisted {twisted.__version__}"
    print(f"{versions}, syncsmtp {syncsmtp.__version__}\n")

    with SmtpSink(backlog=1024) as sink:
        policy = syncsmtp.Policy(host=sink.host, port=sink.port, tls="none")
        message = one_kib_message()

        # 1. One reused connection, sequential.
        def smtplib_sequential(count: int) -> None:
            with smtplib.SMTP(sink.host, sink.port) as client:
                for _ in range(count):
                    client.send_message(message)

        def mailer_sequential(count: int) -> None:
            with syncsmtp.Mailer(policy, connections=1) as mailer:
                for _ in range(count):
                    mailer.send(message, timeout=30)

        smtplib_sequential(50)
        mailer_sequential(50)
        n = args.sequential
        sequential = rates_of(
            {"smtplib": lambda: smtplib_sequential(n), "Mailer": lambda: mailer_sequential(n)}, n, args.rounds
        )
        a, b = sequential["smtplib"], sequential["Mailer"]
        print(f"1. one reused connection, {n} sequential sends (median of {args.rounds} rounds)")
        print(f"   smtplib  {a:9.1f} msg/s\n   Mailer   {b:9.1f} msg/s")
        print(f"   ratio Mailer/smtplib {b / a:.2f}\n")

        # 2. Bulk.
        bulk = [one_kib_message(i) for i in range(args.bulk)]

        def mailer_bulk() -> None:
            with syncsmtp.Mailer(policy, connections=8) as mailer:
                report = mailer.send_many(bulk, timeout=60)
            assert report.sent == len(bulk), str(report)

        def smtplib_bulk() -> None:
            with smtplib.SMTP(sink.host, sink.port) as client:
                for item in bulk:
                    client.send_message(item)

        runs = {"Mailer": mailer_bulk, "smtplib": smtplib_bulk}
        try:
            import aiosmtplib  # noqa: F401
        except ImportError:
            pass
        else:
            runs["aiosmtplib"] = lambda: aiosmtplib_bulk(sink.host, sink.port, bulk, 8)
        bulk_rates = rates_of(runs, len(bulk), args.rounds)
        m, s = bulk_rates["Mailer"], bulk_rates["smtplib"]
        print(f"2. {len(bulk)} messages (median of {args.rounds} rounds)")
        print(f"   Mailer.send_many, 8 connections   {m:9.1f} msg/s")
        print(f"   smtplib, 1 connection, sequential {s:9.1f} msg/s   ratio {m / s:.2f}")
        if "aiosmtplib" in bulk_rates:
            ai = bulk_rates["aiosmtplib"]
            print(f"   aiosmtplib, 8 connections         {ai:9.1f} msg/s   ratio {m / ai:.2f}")
        else:
            print("   aiosmtplib: not installed, skipped")

        # 3. The ceiling: Postfix's own C client.
        source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
        if Path(source).exists():
            started = time.perf_counter()
            subprocess.run([source, "-s", "8", "-m", str(len(bulk)), "-l", "1024", "-f", "bench@example.com",
                            "-t", "sink@example.com", f"{sink.host}:{sink.port}"], check=True, timeout=600)
            ceiling = len(bulk) / (time.perf_counter() - started)
            print(f"   smtp-source, 8 sessions (ceiling) {ceiling:9.1f} msg/s   "
                  f"Mailer at {m / ceiling:.0%} of it\n")

        # 4. Peak memory for one big message, each client in a fresh process.
        size = args.memory_mib * 1024 * 1024
        print(f"4. one {args.memory_mib} MiB message: Python memory above the baseline (MiB, tracemalloc, "
              "fresh process each)")
        for client in ("syncsmtp", "syncsmtp-bytes", "smtplib"):
            out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, client, str(sink.port), str(size)],
                                 capture_output=True, text=True, check=True, timeout=600)
            built, peak = (float(x) for x in out.stdout.split())
            print(f"   {client:<14} the message {built:6.1f}, peak while sending {peak:6.1f} "
                  f"= {peak / args.memory_mib:.2f}x the message size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
