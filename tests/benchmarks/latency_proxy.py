"""A latency proxy: a TCP proxy on loopback that adds a round-trip time and counts round trips.

Used by ``bench_wan.py``; also runs on its own, in front of any local server::

    python tests/benchmarks/latency_proxy.py --target 127.0.0.1:2525 --rtt 50 [--port 0]

It prints the port it listens on, then one line per connection as it ends
(its flights and round trips), until Ctrl-C. From Python::

    with LatencyProxy(target_port=2525, rtt_ms=50) as proxy:   # runs in a child process
        before = proxy.tally()
        ...                                   # clients connect to proxy.host:proxy.port
        spent = proxy.wait_idle(5) - before   # a Tally: connections, flights, round_trips

Delays
------
Every chunk of bytes read from one side is written to the other side RTT/2
after it was read, in order (one queue and one writer per direction, so a
direction never reorders). The proxy accepts a client at once but opens its
own connection to the server only 1.5 RTT later, as a real server accepts a
connection only when the last ACK of TCP's handshake reaches it: the greeting
then reaches the client 2 RTT after ``connect()``, as over a real path. It
delays bytes, not segments: no bandwidth limit, no loss. Towards both ends it
writes with TCP_NODELAY and ACKs every read at once (TCP_QUICKACK), so its
loopback legs add no Nagle or delayed-ACK waits of their own; and it does not
reproduce the ones a real path would cause either (an end whose small write
waits, under Nagle's algorithm, for the ACK of its previous one would lose a
round trip there, not here).

Flights and round trips
-----------------------
A *flight* is a run of bytes in one direction that the other side could not
have reacted to. Concretely: client bytes arriving at the proxy start a new
client->server flight when server bytes were delivered to the client since the
current client flight started (the first client bytes of a connection start
one too); server->client flights are counted the same way, the other way
round. A client flight is *answered* when server bytes that the server sent
after the flight reached it are delivered to the client: a reply, not bytes
that crossed it (such as the server's TLS close_notify crossing the client's
on the way out). In a lock-step conversation every flight is answered but
perhaps the last: smtplib's QUIT is, a goodbye that gets no reply is not.

    round trips of a connection = 2 + answered client->server flights

where the 2 is opening it: TCP's handshake, then the greeting (see above).
For a client that speaks in lock-step with the server this is the time the
connection takes, in RTTs, when neither end takes any time. Examples, on a
fresh plaintext connection: smtplib (EHLO, MAIL, RCPT, DATA, the content, QUIT,
each waiting for its reply) counts 2 + 6 = 8; a client that pipelines MAIL,
RCPT and DATA, then sends QUIT right after the content's final dot, counts
2 + 3 = 5. A TLS 1.3 handshake adds one flight (the ClientHello; the client's
Finished goes with its next command), TLS 1.2 two. With several transactions
in flight on one connection, a flight can be answered by replies to an earlier
one: the count is then of the turns the conversation took, and msg/s is the
figure to read.

Bounded: only loopback addresses, on either side; the child process that
``LatencyProxy`` starts exits when its control pipe closes (when the program
that started it ends, however it ends), and ``stop()`` closes every socket.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import ipaddress
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

_READ_SIZE = 65536
#: (when to deliver, the bytes or None for end of stream, the client flight they belong to)
_Chunks = queue.SimpleQueue[tuple[float, bytes | None, int]]
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def _tune(sock: socket.socket) -> None:
    """No Nagle delay on what the proxy writes; ACK what it reads at once."""
    with contextlib.suppress(OSError):  # a peer gone already: its reader will see it
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _ack_now(sock)


def _ack_now(sock: socket.socket) -> None:
    # Linux leaves quick-ACK mode by itself: set again after every read.
    if _TCP_QUICKACK is not None:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


@dataclasses.dataclass(frozen=True)
class Tally:
    """What the proxy counted: totals since it started, or a difference of two totals."""

    connections: int = 0
    client_flights: int = 0
    answered_flights: int = 0
    server_flights: int = 0
    client_bytes: int = 0
    server_bytes: int = 0

    @property
    def round_trips(self) -> int:
        """2 per connection (TCP's handshake, the greeting) + answered client->server flights."""
        return 2 * self.connections + self.answered_flights

    def __sub__(self, other: Tally) -> Tally:
        return Tally(**{field.name: getattr(self, field.name) - getattr(other, field.name)
                        for field in dataclasses.fields(self)})

    def __add__(self, other: Tally) -> Tally:
        return Tally(**{field.name: getattr(self, field.name) + getattr(other, field.name)
                        for field in dataclasses.fields(self)})

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the latency proxy works on loopback only, not on {host!r}")


class _Link:
    """One proxied connection: its two sockets and its flight bookkeeping (under the relay's lock)."""

    def __init__(self, client: socket.socket, accepted: float) -> None:
        self.client = client
        self.server: socket.socket | None = None
        self.accepted = accepted
        self.tally = Tally(connections=1)
        # The first bytes each way start a flight.
        self.server_delivered_since_client_flight = True
        self.client_delivered_since_server_flight = True
        self.client_flight = 0  # the current one, numbered from 1
        self.client_flight_reached_server: float | None = None  # when its first byte was written there
        self.client_flight_answered = True
        self.writers_left = 2


class Relay:
    """The proxy itself, in this process: threads that read, delay and write.

    ``LatencyProxy`` runs one in a child process, so that the GIL of the
    process being measured never delays a delivery.
    """

    def __init__(self, target_port: int, rtt_ms: float, target_host: str = "127.0.0.1",
                 listen_host: str = "127.0.0.1", listen_port: int = 0,
                 on_close: Callable[[Tally], None] | None = None) -> None:
        _check_loopback(target_host)
        _check_loopback(listen_host)
        if rtt_ms < 0:
            raise ValueError(f"rtt_ms must not be negative, not {rtt_ms!r}")
        self.target = (target_host, target_port)
        self.half_rtt = rtt_ms / 2000.0
        self._listener = socket.create_server((listen_host, listen_port), backlog=1024)
        self.host, self.port = self._listener.getsockname()[:2]
        self._on_close = on_close
        self._lock = threading.Condition()
        self._total = Tally()
        self._links: set[_Link] = set()
        self._stopped = False

    def start(self) -> Relay:
        threading.Thread(target=self._accept, name="latency-proxy-accept", daemon=True).start()
        return self

    def tally(self) -> Tally:
        with self._lock:
            return self._total

    def wait_idle(self, seconds: float) -> tuple[bool, Tally]:
        """Wait until every connection has ended (both ways); whether they did, and the tally."""
        with self._lock:
            idle = self._lock.wait_for(lambda: not self._links, seconds)
            return idle, self._total

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            links = list(self._links)
        with contextlib.suppress(OSError):
            self._listener.close()
        for link in links:
            for sock in (link.client, link.server):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()

    # -- threads ----------------------------------------------------------------------

    def _accept(self) -> None:
        _tighten_timer_slack()  # for this thread and the ones it starts
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            _tune(client)
            link = _Link(client, time.monotonic())
            with self._lock:
                if self._stopped:
                    client.close()
                    return
                self._links.add(link)
                self._total = self._total + Tally(connections=1)
            upstream: _Chunks = queue.SimpleQueue()
            threading.Thread(target=self._read, args=(link, True, upstream), daemon=True,
                             name="latency-proxy-read-c2s").start()
            threading.Thread(target=self._connect_and_write_upstream, args=(link, upstream), daemon=True,
                             name="latency-proxy-write-c2s").start()

    def _connect_and_write_upstream(self, link: _Link,
                                    upstream: _Chunks) -> None:
        # A server accepts once the handshake's last ACK reached it: 1.5 RTT after the SYN left.
        self._sleep_until(link.accepted + 3 * self.half_rtt)
        try:
            server = socket.create_connection(self.target, timeout=10)
        except OSError:
            with contextlib.suppress(OSError):
                link.client.shutdown(socket.SHUT_RDWR)
            self._writer_done(link)
            self._writer_done(link)
            return
        server.settimeout(None)
        _tune(server)
        with self._lock:
            link.server = server
            stopped = self._stopped
        if stopped:
            server.close()
            self._writer_done(link)
            self._writer_done(link)
            return
        downstream: _Chunks = queue.SimpleQueue()
        threading.Thread(target=self._read, args=(link, False, downstream), daemon=True,
                         name="latency-proxy-read-s2c").start()
        threading.Thread(target=self._write, args=(link, False, downstream), daemon=True,
                         name="latency-proxy-write-s2c").start()
        self._write(link, True, upstream)

    def _read(self, link: _Link, from_client: bool,
              out: _Chunks) -> None:
        source = link.client if from_client else link.server
        assert source is not None
        while True:
            try:
                data = source.recv(_READ_SIZE)
                _ack_now(source)
            except OSError:
                data = b""
            now = time.monotonic()
            if not data:
                out.put((now + self.half_rtt, None, 0))
                return
            with self._lock:
                if from_client:
                    new_flight = link.server_delivered_since_client_flight
                    link.server_delivered_since_client_flight = False
                    if new_flight:
                        link.client_flight += 1
                        link.client_flight_reached_server = None
                        link.client_flight_answered = False
                    change = Tally(client_flights=int(new_flight), client_bytes=len(data))
                else:
                    new_flight = link.client_delivered_since_server_flight
                    link.client_delivered_since_server_flight = False
                    change = Tally(server_flights=int(new_flight), server_bytes=len(data))
                link.tally = link.tally + change
                self._total = self._total + change
            out.put((now + self.half_rtt, data, link.client_flight if from_client else 0))

    def _write(self, link: _Link, to_server: bool,
               items: _Chunks) -> None:
        target = link.server if to_server else link.client
        assert target is not None
        broken = False
        while True:
            due, data, flight = items.get()
            self._sleep_until(due)
            if data is None:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
                break
            if broken:
                continue
            # Marked before the write: a reply can be read (by the other direction's
            # thread) before sendall() returns here.
            with self._lock:
                if to_server:
                    link.client_delivered_since_server_flight = True
                    if flight == link.client_flight and link.client_flight_reached_server is None:
                        link.client_flight_reached_server = time.monotonic()
                else:
                    link.server_delivered_since_client_flight = True
                    sent = due - self.half_rtt  # when the server wrote these bytes (about)
                    reached = link.client_flight_reached_server
                    if not link.client_flight_answered and reached is not None and sent >= reached:
                        link.client_flight_answered = True
                        link.tally = link.tally + Tally(answered_flights=1)
                        self._total = self._total + Tally(answered_flights=1)
            try:
                target.sendall(data)
            except OSError:
                broken = True
        self._writer_done(link)

    def _writer_done(self, link: _Link) -> None:
        with self._lock:
            link.writers_left -= 1
            if link.writers_left:
                return
            self._links.discard(link)
            self._lock.notify_all()
        for sock in (link.client, link.server):
            if sock is not None:
                sock.close()
        if self._on_close is not None:
            self._on_close(link.tally)

    @staticmethod
    def _sleep_until(due: float) -> None:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _tighten_timer_slack() -> None:
    """Wake from sleep() within a few microseconds rather than Linux's default 50 (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, in nanoseconds


class LatencyProxy:
    """A ``Relay`` in a child process, driven over a pipe: the same ``tally``,
    ``wait_idle`` and ``stop``, and ``host``/``port`` to connect to."""

    def __init__(self, target_port: int, rtt_ms: float, target_host: str = "127.0.0.1",
                 listen_host: str = "127.0.0.1") -> None:
        _check_loopback(target_host)
        _check_loopback(listen_host)
        self.target_port = target_port
        self.target_host = target_host
        self.rtt_ms = rtt_ms
        self.host = listen_host
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self) -> LatencyProxy:
        command = [sys.executable, "-u", str(Path(__file__).resolve()), "--control",
                   "--target", f"{self.target_host}:{self.target_port}", "--rtt", str(self.rtt_ms),
                   "--listen", self.host]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        first = self._process.stdout.readline().split()
        if len(first) != 2 or first[0] != "port":
            self.stop()
            raise RuntimeError(f"the latency proxy did not start: {first!r}")
        self.port = int(first[1])
        return self

    def _ask(self, line: str) -> dict[str, int]:
        with self._lock:
            if self._process is None:
                raise RuntimeError("the latency proxy is not running")
            assert self._process.stdin is not None and self._process.stdout is not None
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()
            answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError("the latency proxy ended")
        found: dict[str, int] = json.loads(answer)
        return found

    def tally(self) -> Tally:
        """Totals since the proxy started."""
        return Tally(**self._ask("tally"))

    def wait_idle(self, seconds: float = 10.0) -> Tally:
        """Wait until every proxied connection has ended, then the totals; raises
        TimeoutError when some are still open after ``seconds``."""
        answer = self._ask(f"idle {seconds}")
        if not answer.pop("idle"):
            raise TimeoutError(f"proxied connections still open after {seconds} s")
        return Tally(**answer)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert process.stdin is not None
            process.stdin.close()  # the child's cue to stop
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def _serve_control(relay: Relay) -> None:
    """The child's side of ``LatencyProxy``: one request per line on stdin, one JSON line back."""
    print(f"port {relay.port}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "stop":
            break
        if words[0] == "idle":
            idle, tally = relay.wait_idle(float(words[1]))
            print(json.dumps({"idle": idle, **tally.as_dict()}), flush=True)
        else:
            print(json.dumps(relay.tally().as_dict()), flush=True)
    relay.stop()


def _print_connection(tally: Tally) -> None:
    print(f"connection closed: {tally.client_flights} client flights ({tally.answered_flights} answered), "
          f"{tally.server_flights} server flights, {tally.round_trips} round trips, "
          f"{tally.client_bytes} bytes up, {tally.server_bytes} bytes down", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the server (loopback)")
    parser.add_argument("--rtt", type=float, required=True, help="round-trip time to add, in ms")
    parser.add_argument("--listen", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free one)")
    parser.add_argument("--control", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    relay = Relay(int(port), args.rtt, target_host=host or "127.0.0.1", listen_host=args.listen,
                  listen_port=args.port, on_close=None if args.control else _print_connection).start()
    if args.control:
        _serve_control(relay)
        return
    print(f"listening on {relay.host}:{relay.port}, forwarding to {args.target} with {args.rtt:g} ms RTT; "
          "Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        total = relay.tally()
        print(f"\n{total.connections} connections, {total.round_trips} round trips")
    finally:
        relay.stop()


if __name__ == "__main__":
    main()
