"""Over a WAN: syncsmtp, smtplib and aiosmtplib through a latency proxy, msg/s and round trips.

Run by hand as root, with the Debian packages postfix and dovecot-core (not
part of the test suite; ``pip install aiosmtplib`` for its column, which is
skipped with a note when aiosmtplib cannot be imported)::

    python tests/benchmarks/bench_wan.py [--rtt 10,50] [--count 20] [--clients syncsmtp,smtplib,aiosmtplib]

Each client talks to the servers through ``latency_proxy.LatencyProxy`` (a
proxy on 127.0.0.1 in a child process that delays each direction by RTT/2 and
counts flights; its docstring defines a round trip), 1 KiB messages, in these
scenarios:

1. fresh connection per message, plaintext, to Postfix's ``smtp-sink`` (which
   offers PIPELINING, and has no CHUNKING/BDAT to offer);
2. fresh connection per message, STARTTLS (verified against the test CA) and
   AUTH PLAIN, to the suite's Postfix (``tests/postfix.py``: PIPELINING,
   CHUNKING, AUTH through Dovecot);
3. one reused connection, sequential blocking sends, to smtp-sink
   (``Mailer(policy).send`` in a loop; one ``smtplib.SMTP``; one aiosmtplib client);
4. N messages over 8 connections, to smtp-sink (``Mailer(policy,
   connections=8).send_many``; 8 smtplib threads; 8 concurrent aiosmtplib clients);
5. and 6. as 3. and 4., to the suite's Postfix over STARTTLS + AUTH PLAIN,
   where CHUNKING lets syncsmtp send messages back to back without waiting.

For each RTT it prints a table, the clients side by side: msg/s, and round
trips per message (every round trip the proxy counted in the scenario,
connection set-up and QUIT included, over its messages), then the ratio
syncsmtp/aiosmtplib of msg/s for the 8-connection rows. ``--count`` messages
per client go into each fresh-connection row at 10 ms, 5x that into the
reused rows, 50x into the 8-connection row to smtp-sink and 10x into the one
to Postfix (which delivers each message); at an RTT above 10 ms the
counts shrink by sqrt(10 / RTT). All clients name themselves ``bench.example``
in EHLO (smtplib would otherwise look up its FQDN for every connection).
AUTH is PLAIN for all three (the server also offers LOGIN and CRAM-MD5):
``auth_mechanisms=("PLAIN",)``, smtplib's ``esmtp_features["auth"]``, and
an aiosmtplib ``SMTP`` whose ``AUTH_METHODS`` is ``("plain",)``.

The defaults take three to four minutes. Round trips per message are exact
for a client that speaks in lock-step; msg/s also holds the time each end
and the proxy take (the proxy's own share is a fraction of a millisecond per
round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import email.message
import functools
import gc
import math
import platform
import queue
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import twisted
from latency_proxy import LatencyProxy, Tally
from postfix import PostfixInstance, SmtpSink, binaries_missing

import syncsmtp

CLIENTS = ("syncsmtp", "smtplib", "aiosmtplib")
LOCAL_NAME = "bench.example"
CONNECTIONS = 8
TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a client connects: plaintext (smtp-sink) or STARTTLS + AUTH PLAIN (Postfix)."""

    host: str
    port: int
    recipient: str
    secure: bool = False
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None

    def via(self, proxy: LatencyProxy) -> Target:
        # "localhost" is the name in Postfix's certificate; it is 127.0.0.1, where the proxy listens.
        return dataclasses.replace(self, host="localhost" if self.secure else proxy.host, port=proxy.port)

    def context(self) -> ssl.SSLContext:
        return tls_context(self.ca_file)


@functools.cache
def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """One verifying context per CA file, as an application would keep it."""
    return ssl.create_default_context(cafile=ca_file)


@dataclasses.dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    secure: bool
    weight: int  # messages, in multiples of --count


SCENARIOS = (
    Scenario("fresh", "fresh connection, plaintext, PIPELINING", False, 1),
    Scenario("fresh", "fresh connection, STARTTLS + AUTH PLAIN", True, 1),
    Scenario("reused", "one reused connection, sequential", False, 5),
    Scenario("spread", f"N messages over {CONNECTIONS} connections", False, 50),
    # Postfix offers CHUNKING: BDAT lets messages follow each other on a
    # connection without waiting for a 354.
    Scenario("reused", "one reused connection, sequential, STARTTLS + AUTH", True, 5),
    Scenario("spread", f"N messages over {CONNECTIONS} connections, STARTTLS + AUTH", True, 10),
)


def one_kib_message(number: int, recipient: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "bench@example.com"
    message["To"] = recipient
    message["Subject"] = f"benchmark {number}"
    message.set_content(("0123456789abcdef" * 4 + "\n") * 16)
    return message


# -- syncsmtp ---------------------------------------------------------------------------


def syncsmtp_policy(target: Target) -> syncsmtp.Policy:
    if target.secure:
        return syncsmtp.Policy(host=target.host, port=target.port, tls="starttls", ca_file=target.ca_file,
                               username=target.username, password=target.password,
                               auth_mechanisms=("PLAIN",), local_hostname=LOCAL_NAME)
    return syncsmtp.Policy(host=target.host, port=target.port, tls="none", local_hostname=LOCAL_NAME)


def run_syncsmtp(scenario: str, target: Target, messages: list[email.message.EmailMessage]) -> None:
    policy = syncsmtp_policy(target)
    if scenario == "fresh":
        for message in messages:
            syncsmtp.send(message, policy, timeout=TIMEOUT)
    elif scenario == "reused":
        with syncsmtp.Mailer(policy) as mailer:
            for message in messages:
                mailer.send(message, timeout=TIMEOUT)
    else:
        with syncsmtp.Mailer(policy, connections=CONNECTIONS) as mailer:
            report = mailer.send_many(messages, timeout=TIMEOUT)
        if report.sent != len(messages):
            raise RuntimeError(f"send_many sent {report.sent} of {len(messages)}: {report.failed[:1]}")


# -- smtplib ----------------------------------------------------------------------------


def smtplib_connect(target: Target) -> smtplib.SMTP:
    client = smtplib.SMTP(target.host, target.port, local_hostname=LOCAL_NAME, timeout=TIMEOUT)
    if target.secure:
        assert target.username is not None and target.password is not None
        client.starttls(context=target.context())
        client.ehlo()
        client.esmtp_features["auth"] = "PLAIN"  # the server offers CRAM-MD5 too
        client.login(target.username, target.password)
    return client


def run_smtplib(scenario: str, target: Target, messages: list[email.message.EmailMessage]) -> None:
    if scenario == "fresh":
        for message in messages:
            with smtplib_connect(target) as client:
                client.send_message(message)
    elif scenario == "reused":
        with smtplib_connect(target) as client:
            for message in messages:
                client.send_message(message)
    else:
        work: queue.SimpleQueue[email.message.EmailMessage] = queue.SimpleQueue()
        for message in messages:
            work.put(message)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                with smtplib_connect(target) as client:
                    while True:
                        try:
                            message = work.get_nowait()
                        except queue.Empty:
                            return
                        client.send_message(message)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]


# -- aiosmtplib -------------------------------------------------------------------------


@functools.cache
def plain_only_smtp() -> Any:
    """aiosmtplib's SMTP client, with AUTH PLAIN as its only mechanism."""
    import aiosmtplib

    class PlainOnly(aiosmtplib.SMTP):
        AUTH_METHODS = ("plain",)  # the server offers CRAM-MD5 too, aiosmtplib's first choice

    return PlainOnly


def aiosmtplib_client(target: Target) -> Any:
    PlainOnly = plain_only_smtp()  # noqa: N806 - a class
    if target.secure:
        return PlainOnly(hostname=target.host, port=target.port, local_hostname=LOCAL_NAME, timeout=TIMEOUT,
                         start_tls=True, tls_context=target.context(), username=target.username,
                         password=target.password)
    return PlainOnly(hostname=target.host, port=target.port, local_hostname=LOCAL_NAME, timeout=TIMEOUT,
                     start_tls=False)


def run_aiosmtplib(scenario: str, target: Target, messages: list[email.message.EmailMessage]) -> None:
    async def fresh() -> None:
        for message in messages:
            async with aiosmtplib_client(target) as client:
                await client.send_message(message)

    async def reused() -> None:
        async with aiosmtplib_client(target) as client:
            for message in messages:
                await client.send_message(message)

    async def spread() -> None:
        work: asyncio.Queue[email.message.EmailMessage] = asyncio.Queue()
        for message in messages:
            work.put_nowait(message)

        async def worker() -> None:
            async with aiosmtplib_client(target) as client:
                while not work.empty():
                    await client.send_message(work.get_nowait())

        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))

    asyncio.run({"fresh": fresh, "reused": reused, "spread": spread}[scenario]())


RUNNERS: dict[str, Callable[[str, Target, list[email.message.EmailMessage]], None]] = {
    "syncsmtp": run_syncsmtp, "smtplib": run_smtplib, "aiosmtplib": run_aiosmtplib,
}


# -- measuring --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    messages: int
    seconds: float = 0.0
    tally: Tally = dataclasses.field(default_factory=Tally)
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def round_trips(self) -> float:
        return self.tally.round_trips / self.messages


def measure(client: str, scenario: Scenario, target: Target, proxy: LatencyProxy, count: int) -> Cell:
    messages = [one_kib_message(number, target.recipient) for number in range(count)]
    gc.collect()
    before = settled(proxy)
    try:
        started = time.perf_counter()
        RUNNERS[client](scenario.key, target.via(proxy), messages)
        seconds = time.perf_counter() - started
    except Exception as error:
        settled(proxy)
        return Cell(count, error=f"{type(error).__name__}: {error}")
    return Cell(count, seconds, proxy.wait_idle(30) - before)


def settled(proxy: LatencyProxy) -> Tally:
    """The proxy's totals once the connections of the cell before have ended (or 30 s passed)."""
    try:
        return proxy.wait_idle(30)
    except TimeoutError:
        return proxy.tally()


def counts_at(rtt: float, count: int) -> dict[Scenario, int]:
    scale = min(1.0, math.sqrt(10.0 / rtt)) if rtt > 0 else 1.0
    return {scenario: max(2, round(count * scenario.weight * scale)) for scenario in SCENARIOS}


def ehlo_keywords(target: Target) -> str:
    with smtplib.SMTP(target.host, target.port, local_hostname=LOCAL_NAME, timeout=30) as client:
        if target.secure:
            client.starttls(context=target.context())
        client.ehlo()
        return " ".join(sorted(keyword.upper() for keyword in client.esmtp_features))


def row_title(scenario: Scenario) -> str:
    return f"{scenario.title} ({'Postfix' if scenario.secure else 'smtp-sink'})"


def print_table(rtt: float, clients: Sequence[str], rows: list[tuple[Scenario, dict[str, Cell]]],
                skipped: dict[Scenario, str]) -> None:
    width = max(len(row_title(scenario)) for scenario in SCENARIOS)
    print(f"\nRTT {rtt:g} ms: msg/s and round trips per message (rt/msg)")
    print(f"{'scenario':<{width}} {'msgs':>5}" + "".join(f"   {name:>18}" for name in clients))
    print(f"{'':<{width}} {'':>5}" + "".join(f"   {'msg/s':>9} {'rt/msg':>8}" for _ in clients))
    errors: list[str] = []
    for scenario, cells in rows:
        title = row_title(scenario)
        if scenario in skipped:
            print(f"{title:<{width}}   skipped: {skipped[scenario]}")
            continue
        line = f"{title:<{width}} {next(iter(cells.values())).messages:>5}"
        for name in clients:
            cell = cells[name]
            if cell.error is not None:
                errors.append(f"{name}, {scenario.title}: {cell.error}")
                line += f"   {'error [' + str(len(errors)) + ']':>18}"
            else:
                line += f"   {cell.rate:9.1f} {cell.round_trips:8.2f}"
        print(line)
    for number, error in enumerate(errors, 1):
        print(f"  [{number}] {error[:300]}")
    for scenario, spread in rows:
        if scenario.key != "spread" or "aiosmtplib" not in spread or "syncsmtp" not in spread:
            continue
        ours, theirs = spread["syncsmtp"], spread["aiosmtplib"]
        if ours.error is None and theirs.error is None:
            print(f"ratio syncsmtp/aiosmtplib, {row_title(scenario)}: {ours.rate / theirs.rate:.2f} "
                  f"({ours.rate:.1f} / {theirs.rate:.1f} msg/s)")


def start_postfix(folder: Path) -> tuple[PostfixInstance | None, Target | None, str]:
    """The suite's Postfix and how to reach it, or why there is none."""
    missing = binaries_missing()
    if missing:
        return None, None, f"missing {', '.join(missing)}"
    try:
        postfix = PostfixInstance(folder).start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        return None, None, f"Postfix did not start: {error}"
    return postfix, Target("localhost", postfix.port, "user@example.com", secure=True,
                           ca_file=str(postfix.ca_file), username=postfix.username,
                           password=postfix.password), ""


def warm_up(clients: Sequence[str], targets: Sequence[Target]) -> None:
    """Imports, the reactor thread, TLS contexts: paid here, outside the figures."""
    for name in clients:
        for target in targets:
            try:
                RUNNERS[name]("fresh", target, [one_kib_message(0, target.recipient)])
            except Exception as error:
                print(f"warm-up: {name} to port {target.port} failed: {type(error).__name__}: {error}")


def run_rtt(rtt: float, count: int, clients: Sequence[str], plain: Target, secure: Target | None,
            skipped: dict[Scenario, str], spread: int | None = None
            ) -> list[tuple[Scenario, dict[str, Cell]]]:
    counts = counts_at(rtt, count)
    if spread is not None:
        counts.update({scenario: spread for scenario in SCENARIOS if scenario.key == "spread"})
    rows: list[tuple[Scenario, dict[str, Cell]]] = []
    with contextlib.ExitStack() as stack:
        proxies = {False: stack.enter_context(LatencyProxy(plain.port, rtt))}
        if secure is not None:
            proxies[True] = stack.enter_context(LatencyProxy(secure.port, rtt))
        for scenario in SCENARIOS:
            cells: dict[str, Cell] = {}
            target = secure if scenario.secure else plain
            if scenario not in skipped and target is not None:
                for name in clients:
                    cells[name] = measure(name, scenario, target, proxies[scenario.secure], counts[scenario])
            rows.append((scenario, cells))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", default="10,50",
                        help="round-trip times in ms, comma-separated (default 10,50)")
    parser.add_argument("--count", type=int, default=20,
                        help="messages per client in a fresh-connection row at 10 ms (default 20)")
    parser.add_argument("--clients", default=",".join(CLIENTS),
                        help="comma-separated subset of: " + ", ".join(CLIENTS))
    parser.add_argument("--spread", type=int, default=None,
                        help=f"messages in each row over {CONNECTIONS} connections, at every RTT "
                             "(default: scaled from --count)")
    parser.add_argument("--rows", default=None,
                        help="comma-separated row numbers (1-6, as in this docstring) to run; default all")
    args = parser.parse_args()
    rows = {int(n) for n in args.rows.split(",")} if args.rows else set(range(1, len(SCENARIOS) + 1))
    if (args.spread is not None and args.spread < 1) or not rows <= set(range(1, len(SCENARIOS) + 1)):
        parser.error("--spread is positive; --rows takes numbers from 1 to 6")
    rtts = [float(value) for value in args.rtt.split(",") if value.strip()]
    clients = [name.strip() for name in args.clients.split(",") if name.strip()]
    if any(name not in CLIENTS for name in clients) or not rtts or min(rtts) <= 0 or args.count < 1:
        parser.error("--clients takes names of syncsmtp, smtplib, aiosmtplib; --rtt and --count are positive")
    print(f"command: python {' '.join(sys.argv)}")
    versions = (f"python {platform.python_version()}, twisted {twisted.__version__}, "
                f"syncsmtp {syncsmtp.__version__}")
    if "aiosmtplib" in clients:
        try:
            import aiosmtplib
        except ImportError as error:
            clients.remove("aiosmtplib")
            print(f"aiosmtplib cannot be imported ({error}; pip install aiosmtplib): its column, and the "
                  "ratio syncsmtp/aiosmtplib, are skipped")
        else:
            versions += f", aiosmtplib {aiosmtplib.__version__}"
    print(versions)

    folder = Path(tempfile.mkdtemp(prefix="syncsmtp-bench-wan-"))
    postfix: PostfixInstance | None = None
    try:
        with SmtpSink(backlog=256) as sink:
            plain = Target(sink.host, sink.port, "sink@example.com")
            postfix, secure, reason = start_postfix(folder)
            print(f"smtp-sink on 127.0.0.1:{sink.port} offers: {ehlo_keywords(plain)}")
            skipped: dict[Scenario, str] = {
                scenario: "not asked for (--rows)"
                for number, scenario in enumerate(SCENARIOS, 1) if number not in rows
            }
            if secure is not None:
                print(f"Postfix on 127.0.0.1:{secure.port} offers after STARTTLS: {ehlo_keywords(secure)}")
            else:
                skipped.update({scenario: reason for scenario in SCENARIOS if scenario.secure})
                print(f"Postfix rows skipped: {reason}")
            warm_up(clients, [plain] + ([secure] if secure is not None else []))
            for rtt in rtts:
                rows_measured = run_rtt(rtt, args.count, clients, plain, secure, skipped, args.spread)
                print_table(rtt, clients, rows_measured, skipped)
                sys.stdout.flush()
    finally:
        if postfix is not None:
            postfix.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
