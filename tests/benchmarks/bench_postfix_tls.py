"""A fresh STARTTLS + AUTH send of a 1 KiB message to a real Postfix
(with Dovecot SASL) on 127.0.0.1: syncsmtp.send() vs smtplib, side by side.

Run by hand as root, with the Debian packages postfix and dovecot-core (not
part of the test suite)::

    python tests/benchmarks/bench_postfix_tls.py [--count 20] [--rounds 3]

Each send opens a new connection, does STARTTLS (verifying the test CA),
AUTH, one message and QUIT. Postfix offers PLAIN, LOGIN and CRAM-MD5: each
client runs with its default choice (syncsmtp: PLAIN, pipelined with the
envelope, as the certificate is verified; smtplib's ``login()``: CRAM-MD5),
and smtplib once more with PLAIN (its ``esmtp_features["auth"]``), so that
the ratio is also shown for the same mechanism. Prints the median and 90th
percentile latency of each client per round and the ratios of the medians
(smtplib / syncsmtp: above 1 means syncsmtp is faster).

The clients take turns send by send, with a short untimed pause after each
send (see ``PAUSE``).
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

#: Untimed pause after every send. syncsmtp returns at the message's reply and
#: closes the connection after (QUIT went with the message), while smtplib
#: closes before it returns: the pause keeps that close out of the next
#: client's figure. It hides no cost of syncsmtp's own: back to back, its sends
#: took 9.33 and 8.09 ms (medians of 150), against 9.58 and 8.68 ms after a
#: 6 ms pause, in two runs of a scratch script.
PAUSE = 0.005


def latencies(clients: dict[str, Callable[[], object]], count: int) -> dict[str, list[float]]:
    """``count`` sends per client, the clients taking turns send by send, so
    that a slow spell of a shared machine falls on all of them alike."""
    taken: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(count):
        for name, send in clients.items():
            started = time.perf_counter()
            send()
            taken[name].append(time.perf_counter() - started)
            time.sleep(PAUSE)
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

        def with_smtplib(mechanism: str | None = None) -> None:
            with smtplib.SMTP("localhost", postfix.port, timeout=10) as client:
                client.starttls(context=context)
                if mechanism is not None:
                    client.ehlo()
                    client.esmtp_features["auth"] = mechanism
                client.login(postfix.username, postfix.password)
                client.send_message(message)

        def with_syncsmtp() -> None:
            syncsmtp.send(message, policy, timeout=10)

        clients: dict[str, Callable[[], object]] = {
            "syncsmtp": with_syncsmtp,
            "smtplib": with_smtplib,
            "smtplib PLAIN": lambda: with_smtplib("PLAIN"),
        }
        for send in clients.values():  # start the reactor thread outside the figures
            send()
        print(f"Python {platform.python_version()}, Twisted {twisted.__version__}, "
              f"Postfix on 127.0.0.1:{postfix.port}, STARTTLS + AUTH, 1 KiB, "
              f"fresh connection per message, {args.count} sends per client per round")
        ratios: dict[str, list[float]] = {"smtplib": [], "smtplib PLAIN": []}
        for round_number in range(1, args.rounds + 1):
            medians = {}
            print(f"round {round_number}:")
            for name, taken in latencies(clients, args.count).items():
                medians[name] = statistics.median(taken)
                print(f"  {name:<14} median {medians[name] * 1000:5.1f} ms "
                      f"(p90 {statistics.quantiles(taken, n=10)[-1] * 1000:.1f})")
            for name in ratios:
                ratios[name].append(medians[name] / medians["syncsmtp"])
            print("  " + ", ".join(f"{name}/syncsmtp {values[-1]:.2f}" for name, values in ratios.items()))
        worst = ", ".join(f"{name}/syncsmtp {min(values):.2f}" for name, values in ratios.items())
        print(f"worst round: {worst}")
    finally:
        postfix.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
