"""Sending at a set rate: ``send_many`` with ``rate=`` over several connections.

Run by hand (not part of the test suite)::

    python tests/benchmarks/bench_rate.py [--messages 500] [--rate 50] [--connections 4]
                                          [--mailer-rate]

Against Postfix's ``smtp-sink`` on 127.0.0.1, 1 KiB messages. Prints the
rate measured over the whole batch (messages / elapsed seconds) and the most
messages started within any one second: each start is the moment a token is
taken, just before that message's MAIL FROM is written. With
``--mailer-rate`` the rate is the Mailer's (``Mailer(rate=)``) instead of
the batch's. Figures are printed, not checked.
"""

from __future__ import annotations

import argparse
import bisect
import email.message
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postfix import SmtpSink

import syncsmtp
from syncsmtp import _throttle


def message(n: int) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = "bench@example.com"
    msg["To"] = "sink@example.com"
    msg["Subject"] = f"rate {n}"
    msg.set_content("x" * 1000)
    return msg


def busiest_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--mailer-rate", action="store_true")
    args = parser.parse_args()

    starts: list[float] = []
    take = _throttle.Gate.take

    def timed_take(gate: _throttle.Gate, now: float, own: Any = None) -> None:
        starts.append(now)  # the reactor's clock, in the reactor thread
        take(gate, now, own)

    _throttle.Gate.take = timed_take  # type: ignore[method-assign]
    messages = [message(n) for n in range(args.messages)]
    with SmtpSink() as sink:
        policy = syncsmtp.Policy(host=sink.host, port=sink.port, tls="none")
        mailer_rate = args.rate if args.mailer_rate else None
        batch_rate = None if args.mailer_rate else args.rate
        with syncsmtp.Mailer(policy, connections=args.connections, rate=mailer_rate) as mailer:
            mailer.open()
            started = time.monotonic()
            report = mailer.send_many(messages, timeout=60, rate=batch_rate)
            elapsed = time.monotonic() - started
    which = "Mailer(rate=)" if args.mailer_rate else "send_many(rate=)"
    print(f"{which} {args.rate:g}/s, {args.connections} connections, {args.messages} messages")
    print(f"  {report}")
    print(f"  measured rate            {report.sent / elapsed:8.2f} msg/s")
    print(f"  most starts in any 1 s   {busiest_second(starts):8d}")


if __name__ == "__main__":
    main()
