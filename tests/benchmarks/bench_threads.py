"""Many threads sharing one Mailer, against a server that takes its time over
each message: how many connections the Mailer uses, and the rate.

Run by hand (not part of the test suite)::

    python tests/benchmarks/bench_threads.py [--threads 16] [--messages 30] [--connections 4]
        [--delay-ms 5] [--rounds 3]

The server is a small asyncio SMTP server on 127.0.0.1 in this process (its
own thread): it offers PIPELINING (and CHUNKING, unless ``--no-chunking``)
and answers each message's data ``--delay-ms`` after it has it, one message
at a time per connection, as an MTA that writes each message to disk does.
Every thread sends ``--messages`` 1 KiB messages with ``Mailer.send``, one
after the other. Prints, per round, the rate and the connections the server
saw with the messages each carried.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import threading
import time
from collections import Counter

import twisted

import syncsmtp

MESSAGE = b"Subject: bench\r\n\r\n" + (b"0123456789abcdef" * 4 + b"\r\n") * 16


class SlowServer:
    """SMTP on 127.0.0.1 that answers each message's data after a delay."""

    def __init__(self, delay: float, chunking: bool) -> None:
        self.delay = delay
        self.chunking = chunking
        self.per_connection: Counter[int] = Counter()
        self._connections = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                                        daemon=True)

    def __enter__(self) -> SlowServer:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        async with server:
            await self._stop.wait()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        number = self._connections
        extensions = b"250-PIPELINING\r\n" + (b"250-CHUNKING\r\n" if self.chunking else b"")
        writer.write(b"220 slow sink\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-slow sink\r\n" + extensions + b"250 8BITMIME\r\n")
                elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    writer.write(b"250 ok\r\n")
                elif verb in (b"DATA", b"BDAT"):
                    if verb == b"DATA":
                        writer.write(b"354 go ahead\r\n")
                        await writer.drain()
                        while await reader.readline() not in (b".\r\n", b""):
                            pass
                    else:
                        await reader.readexactly(int(line.split()[1]))
                    await asyncio.sleep(self.delay)
                    self.per_connection[number] += 1
                    writer.write(b"250 queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"502 not here\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()


def one_round(args: argparse.Namespace) -> tuple[float, list[int]]:
    with SlowServer(args.delay_ms / 1000, not args.no_chunking) as server:
        policy = syncsmtp.Policy(host="127.0.0.1", port=server.port, tls="none")
        errors: list[BaseException] = []
        with syncsmtp.Mailer(policy, connections=args.connections) as mailer:

            def sender() -> None:
                try:
                    for _ in range(args.messages):
                        mailer.send(MESSAGE, sender="bench@example.com", recipients=["sink@example.com"],
                                    timeout=60)
                except syncsmtp.SMTPError as error:
                    errors.append(error)

            threads = [threading.Thread(target=sender) for _ in range(args.threads)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            elapsed = time.perf_counter() - started
        if errors:
            raise SystemExit(f"{len(errors)} sends failed, the first: {errors[0]!r}")
        return args.threads * args.messages / elapsed, sorted(server.per_connection.values(), reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--messages", type=int, default=30, help="messages a thread")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--delay-ms", type=float, default=5.0, help="the server's time a message")
    parser.add_argument("--no-chunking", action="store_true", help="offer PIPELINING only (DATA)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"python {platform.python_version()}, twisted {twisted.__version__}, "
          f"syncsmtp {syncsmtp.__version__}")
    rates = []
    for number in range(1, args.rounds + 1):
        rate, carried = one_round(args)
        rates.append(rate)
        print(f"round {number}: {rate:7.1f} msg/s over {len(carried)} connections, messages each: {carried}")
    print(f"median {statistics.median(rates):.1f} msg/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
