"""A fresh STARTTLS + AUTH PLAIN send of a 1 KiB message to a real Postfix
(with Dovecot SASL) on 127.0.0.1: syncsmtp.send() vs smtplib, side by side.

Run by hand as root, with the Debian packages postfix and dovecot-core (not
part of the test suite)::

    python tests/benchmarks/bench_postfix_tls.py [--count 20] [--rounds 3]

Each send opens a new connection, does STARTTLS (verifying the test CA),
AUTH PLAIN, one message and QUIT. The clients take turns, round by round.
Prints the median and 90th percentile latency of each client per round and
the ratio of the medians (smtplib / syncsmtp: above 1 means syncsmtp is
faster).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import smtplib
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import twisted
from bench_send import one_kib_message
from postfix import PostfixInstance

import syncsmtp


def latencies(send: Callable[[], object], count: int) -> list[float]:
    taken = []
    for _ in range(count):
        started = time.perf_counter()
        send()
        taken.append(time.perf_counter() - started)
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="sends per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="syncsmtp-bench-postfix-"))
    postfix = PostfixInstance(folder).start()
    try:
        message = one_kib_message()
        policy = syncsmtp.Policy(host="localhost", port=postfix.port, tls="starttls",
                                 ca_file=postfix.ca_file, username=postfix.username,
                                 password=postfix.password)
        context = ssl.create_default_context(cafile=postfix.ca_file)

        def with_smtplib() -> None:
            with smtplib.SMTP("localhost", postfix.port, timeout=10) as client:
                client.starttls(context=context)
                client.login(postfix.username, postfix.password)
                client.send_message(message)

        def with_syncsmtp() -> None:
            syncsmtp.send(message, policy, timeout=10)

        with_syncsmtp()  # start the reactor thread outside the figures
        with_smtplib()
        print(f"Python {platform.python_version()}, Twisted {twisted.__version__}, "
              f"Postfix on 127.0.0.1:{postfix.port}, STARTTLS + AUTH PLAIN, 1 KiB, "
              f"fresh connection per message, {args.count} sends per client per round")
        ratios = []
        for round_number in range(1, args.rounds + 1):
            ours = latencies(with_syncsmtp, args.count)
            theirs = latencies(with_smtplib, args.count)
            ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
            ratios.append(theirs_median / ours_median)
            print(f"round {round_number}: syncsmtp median {ours_median * 1000:.1f} ms "
                  f"(p90 {statistics.quantiles(ours, n=10)[-1] * 1000:.1f}), smtplib median "
                  f"{theirs_median * 1000:.1f} ms (p90 {statistics.quantiles(theirs, n=10)[-1] * 1000:.1f}); "
                  f"smtplib/syncsmtp {ratios[-1]:.2f}")
        print(f"worst round: smtplib/syncsmtp {min(ratios):.2f}")
    finally:
        postfix.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
