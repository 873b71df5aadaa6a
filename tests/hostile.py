"""A hostile SMTP server for fuzzing syncsmtp's client, and the cases it plays.

:class:`HostileServer` listens on 127.0.0.1 (an ephemeral port) with plain
sockets and threads, no Twisted, so that it shares nothing with the client's
reactor. Each connection plays a :class:`Script`: for each stage of the
conversation (greeting, EHLO, AUTH, MAIL, RCPT, DATA, the reply after the final
dot, QUIT) an :class:`Action` says what to write, how (whole, or dripped a
byte at a time), and what to do next (go on, stall, hang up, reset). Stages
without an action get a well-behaved reply, so ``HostileServer()`` with no
script is an ordinary server.

The server records what it received, and per transaction whether the final
dot arrived and what it wrote after it: the oracle for ``maybe_delivered``.

Every loop is bounded: a connection lives at most ``lifetime`` seconds, socket
operations time out every 50 ms to look at the stop flag, and :meth:`stop`
closes every socket and joins every thread with a deadline, even when the
client has stopped reading.

:func:`make_case` builds the seeded cases (a stage x misbehaviour matrix with
random parameters); :func:`run_send_case` and :func:`run_mailer_case` play
one against the client and return what happened. ``tests/test_fuzz.py``
judges them; ``tests/benchmarks/bench_hostile_memory.py`` runs them for
memory figures.
"""

from __future__ import annotations

import contextlib
import email.message
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import syncsmtp

LOOPBACK = "127.0.0.1"
#: The distinctive password every case logs in with; it must appear in no output.
PASSWORD = "Pw-Hostile-Fuzz-7Qz!x9"
USERNAME = "fuzzuser"

SETUP_STAGES = ("greeting", "ehlo", "auth")
TRANSACTION_STAGES = ("mail", "rcpt", "data", "eod", "rset")
#: The stages a case's misbehaviour is put at (``eod``: the reply after the final dot).
STAGES = ("greeting", "ehlo", "auth", "mail", "rcpt", "data", "eod", "quit")
_COMMANDS = {
    b"EHLO": "ehlo", b"HELO": "ehlo", b"AUTH": "auth", b"MAIL": "mail", b"RCPT": "rcpt",
    b"DATA": "data", b"RSET": "rset", b"QUIT": "quit", b"NOOP": "noop",
}
#: The code a well-behaved server answers each stage with, and codes that refuse it.
OK_CODES = {"greeting": 220, "ehlo": 250, "auth": 235, "mail": 250, "rcpt": 250, "data": 354,
            "eod": 250, "quit": 221, "rset": 250, "noop": 250}
REFUSE_CODES = (421, 450, 451, 452, 454, 500, 501, 503, 535, 550, 551, 552, 553, 554)

_TICK = 0.05  # how often blocked socket calls look at the stop flag
_RECEIVE_CAP = 1 << 16  # bytes of what the client sent kept per connection
_AFTER_DOT_CAP = 2 << 20  # bytes written after the dot kept per transaction
_BUFFER_CAP = 8 << 20  # a client line longer than this ends the connection
_WRITE_BLOCK = 1 << 16


def default_reply(stage: str, *, pipelining: bool = False, tag: str = "FUZZ") -> bytes:
    """What a well-behaved server answers at ``stage``."""
    if stage == "ehlo":
        lines = [b"250-hostile.fuzz greets you", b"250-AUTH PLAIN LOGIN"]
        if pipelining:
            lines.append(b"250-PIPELINING")
        lines += [b"250-8BITMIME", b"250 SIZE 10485760"]
        return b"\r\n".join(lines) + b"\r\n"
    replies = {
        "greeting": b"220 hostile.fuzz ESMTP ready",
        "auth": b"235 2.7.0 Authentication successful",
        "mail": b"250 2.1.0 Sender ok",
        "rcpt": b"250 2.1.5 Recipient ok",
        "data": b"354 End data with <CR><LF>.<CR><LF>",
        "eod": b"250 2.0.0 Ok: queued as " + tag.encode("ascii"),
        "quit": b"221 2.0.0 Bye",
        "rset": b"250 2.0.0 Reset ok",
        "noop": b"250 2.0.0 Ok",
        "auth-cont": b"535 5.7.8 Authentication credentials invalid",
        "unknown": b"500 5.5.2 Syntax error, command unrecognized",
    }
    return replies[stage] + b"\r\n"


# -- scripts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repeat:
    """``unit`` written ``count`` times (a megabyte line, 100,000 lines) without
    keeping the whole of it in memory."""

    unit: bytes
    count: int

    def __len__(self) -> int:
        return len(self.unit) * self.count

    def blocks(self) -> Iterator[bytes]:
        per_block = max(1, _WRITE_BLOCK // max(1, len(self.unit)))
        left = self.count
        while left > 0:
            n = min(per_block, left)
            yield self.unit * n
            left -= n


Chunk = bytes | Repeat
Then = Literal["continue", "stall", "hangup", "reset"]


@dataclass(frozen=True)
class Action:
    """What the server does at one stage: ``writes`` in order (``gap`` seconds
    between them; with ``drip``, one byte at a time with ``drip`` seconds
    between bytes), then ``then``: go on, stall (read on, never answer
    again), hang up (close), or reset (close with RST)."""

    writes: tuple[Chunk, ...] = ()
    gap: float = 0.0
    drip: float | None = None
    then: Then = "continue"
    label: str = ""

    def describe(self, limit: int = 160) -> str:
        parts = []
        for chunk in self.writes:
            if isinstance(chunk, Repeat):
                parts.append(f"{chunk.unit[:40]!r} x {chunk.count}")
            elif len(chunk) > limit:
                parts.append(f"{chunk[:limit]!r}...(+{len(chunk) - limit} bytes)")
            else:
                parts.append(repr(chunk))
        how = []
        if self.drip is not None:
            how.append(f"dripped {self.drip * 1000:g} ms/byte")
        if self.gap:
            how.append(f"{self.gap * 1000:g} ms between writes")
        writes = " + ".join(parts) if parts else "(nothing)"
        extra = f" ({', '.join(how)})" if how else ""
        return f"{writes}{extra}, then {self.then}"


@dataclass(frozen=True)
class Script:
    """What a server plays. ``actions`` maps a stage to its :class:`Action`;
    transaction stages (mail, rcpt, data, eod, rset) apply to transaction
    number ``transaction`` of a connection (a key ``"stage@N"`` names the
    transaction itself), rcpt to its first recipient. Only the first
    ``hostile_connections`` connections play the actions; later ones behave."""

    actions: Mapping[str, Action] = field(default_factory=dict)
    transaction: int = 1
    pipelining: bool = False
    hostile_connections: int = 1

    def describe(self) -> str:
        lines = [f"{stage}: {action.describe()}" for stage, action in self.actions.items()]
        extras = [f"PIPELINING={'yes' if self.pipelining else 'no'}"]
        if self.transaction != 1:
            extras.append(f"hostile transaction {self.transaction}")
        return "; ".join(lines) + f" [{', '.join(extras)}]"


# -- what the server saw -----------------------------------------------------------------------


@dataclass
class Transaction:
    """One MAIL..(dot) exchange as the server saw it."""

    number: int
    sender: bytes
    started_at: float
    #: Lines of message data the server read after its reply to DATA.
    data_lines: int = 0
    #: The final dot came after message data (a bare "." ending an empty DATA,
    #: as RFC 2920 has a client do when every recipient was refused, is not a message).
    dot: bool = False
    empty_dot: bool = False
    dot_at: float | None = None
    #: Everything the server wrote after it read the final dot (capped).
    after_dot: bytearray = field(default_factory=bytearray)
    #: When the reply to the dot was written in full (None: never).
    reply_done_at: float | None = None


@dataclass
class Connection:
    """One connection as the server saw it."""

    number: int
    opened_at: float
    hostile: bool
    received: bytearray = field(default_factory=bytearray)
    transactions: list[Transaction] = field(default_factory=list)
    closed_at: float | None = None
    closed_by: str = ""
    last_activity: float = 0.0
    #: Writes that came after a pause behind a stage's reply (when each was written, what):
    #: the client may read one as the answer to a command it sent meanwhile, and
    #: cannot tell; the oracle accepts an outcome one of them explains.
    late_writes: list[tuple[float, bytes]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def snapshot(self) -> Connection:
        copy = Connection(self.number, self.opened_at, self.hostile, bytearray(self.received),
                          [Transaction(t.number, t.sender, t.started_at, t.data_lines, t.dot,
                                       t.empty_dot, t.dot_at, bytearray(t.after_dot), t.reply_done_at)
                           for t in self.transactions],
                          self.closed_at, self.closed_by, self.last_activity, list(self.late_writes))
        if self.done.is_set():
            copy.done.set()
        return copy


class _Gone(Exception):
    """The connection is over (closed by either side, or the server stops)."""


class _Player:
    """Plays a script on one accepted connection (its own thread)."""

    def __init__(self, server: HostileServer, sock: socket.socket, record: Connection,
                 script: Script) -> None:
        self._server = server
        self._sock = sock
        self._record = record
        self._script = script
        self._end = record.opened_at + server.lifetime
        self._buffer = bytearray()
        self._in_data = False
        self._stalled = False
        self._closed = False
        self._last_stage = ""
        self._transactions = 0
        self._recipients = 0
        self._after_dot: Transaction | None = None

    # -- socket ------------------------------------------------------------------------

    def _alive(self) -> bool:
        return not self._closed and not self._server.stopping and time.monotonic() < self._end

    def _sleep(self, seconds: float) -> None:
        end = min(time.monotonic() + seconds, self._end)
        while True:
            left = end - time.monotonic()
            if left <= 0 or self._server.stopping:
                break
            self._server.stop_event.wait(min(left, _TICK))
        if not self._alive():
            raise _Gone()

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if not self._alive():
                raise _Gone()
            try:
                sent = self._sock.send(view)
            except TimeoutError:
                continue  # the client is not reading: try again until the deadline
            except OSError as exc:
                raise _Gone() from exc
            self._note_sent(view[:sent])
            view = view[sent:]
        self._record.last_activity = time.monotonic()

    def _note_sent(self, data: memoryview) -> None:
        target = self._after_dot
        if target is not None and len(target.after_dot) < _AFTER_DOT_CAP:
            target.after_dot += data[: _AFTER_DOT_CAP - len(target.after_dot)]

    def _write(self, chunk: Chunk, drip: float | None) -> None:
        blocks = chunk.blocks() if isinstance(chunk, Repeat) else iter((chunk,))
        for block in blocks:
            if drip is None:
                self._send(block)
                continue
            for i in range(len(block)):
                self._send(block[i : i + 1])
                self._sleep(drip)

    def _close(self, reset: bool) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            if reset:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()

    # -- the conversation -----------------------------------------------------------------

    def run(self) -> None:
        record = self._record
        try:
            self._sock.settimeout(_TICK)
            self._act("greeting")
            while self._alive():
                try:
                    data = self._sock.recv(_WRITE_BLOCK)
                except TimeoutError:
                    continue
                except OSError:
                    record.closed_by = record.closed_by or "client (reset)"
                    break
                if not data:
                    record.closed_by = record.closed_by or "client"
                    break
                if not self._take(data):
                    record.closed_by = "server (client line too long)"
                    break
        except _Gone:
            pass
        finally:
            if not record.closed_by:
                record.closed_by = "server" if self._closed else "server (stopped or lifetime)"
            self._close(reset=False)
            record.closed_at = time.monotonic()
            record.done.set()

    def _take(self, data: bytes) -> bool:
        record = self._record
        record.last_activity = time.monotonic()
        if len(record.received) < _RECEIVE_CAP:
            record.received += data[: _RECEIVE_CAP - len(record.received)]
        self._buffer += data
        if len(self._buffer) > _BUFFER_CAP:
            return False
        self._lines()
        return True

    def _drain(self) -> None:
        """Before hanging up: read (never answer) what the client already sent,
        so that the record knows whether the final dot came."""
        self._stalled = True
        with contextlib.suppress(OSError):
            self._sock.setblocking(False)
            for _ in range(256):
                data = self._sock.recv(_WRITE_BLOCK)
                if not data or not self._take(data):
                    break

    def _lines(self) -> None:
        # Each line leaves the buffer before it is handled: handling may read more (_drain).
        while self._alive():
            end = self._buffer.find(b"\r\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            self._line(line)

    def _line(self, line: bytes) -> None:
        if self._in_data:
            transaction = self._transaction()
            if line == b".":
                self._in_data = False
                if transaction is not None:
                    if transaction.data_lines:
                        transaction.dot = True
                    else:
                        transaction.empty_dot = True
                    transaction.dot_at = time.monotonic()
                    self._after_dot = transaction
                self._act("eod")
                return
            if line[:4].upper() not in _COMMANDS:
                if transaction is not None:
                    transaction.data_lines += 1
                return  # message data
            self._in_data = False  # the client gave up on DATA and sent a command
        stage = _COMMANDS.get(line[:4].upper())
        if stage is None:
            stage = "auth-cont" if self._last_stage in ("auth", "auth-cont") else "unknown"
        self._last_stage = stage
        if stage == "mail":
            self._transactions += 1
            self._recipients = 0
            self._after_dot = None
            sender = line[10:].split(b">", 1)[0].lstrip(b"<") if line[:10].upper() == b"MAIL FROM:" \
                else line
            self._record.transactions.append(Transaction(self._transactions, sender, time.monotonic()))
        elif stage == "rcpt":
            self._recipients += 1
        self._act(stage)
        if stage == "data":
            self._in_data = True
        if stage == "quit" and not self._stalled:
            self._close(reset=False)
            self._record.closed_by = self._record.closed_by or "server (after QUIT)"

    def _transaction(self) -> Transaction | None:
        return self._record.transactions[-1] if self._record.transactions else None

    def _action(self, stage: str) -> Action:
        script = self._script
        if self._record.hostile:
            if stage in TRANSACTION_STAGES:
                number = self._transactions + (1 if stage == "rset" else 0)
                explicit = script.actions.get(f"{stage}@{number}")
                first_rcpt = stage != "rcpt" or self._recipients == 1
                if explicit is not None and first_rcpt:
                    return explicit
                if number == script.transaction and stage in script.actions and first_rcpt:
                    return script.actions[stage]
            elif stage in script.actions:
                return script.actions[stage]
        tag = f"FUZZ-C{self._record.number}T{self._transactions}"
        return Action(writes=(default_reply(stage, pipelining=script.pipelining, tag=tag),))

    def _act(self, stage: str) -> None:
        if self._stalled or self._closed:
            return
        action = self._action(stage)
        for i, chunk in enumerate(action.writes):
            if i and action.gap:
                self._sleep(action.gap)
                if isinstance(chunk, bytes):
                    self._record.late_writes.append((time.monotonic(), chunk))
            self._write(chunk, action.drip)
        if stage == "eod":
            transaction = self._transaction()
            if transaction is not None and transaction.reply_done_at is None:
                transaction.reply_done_at = time.monotonic()
        if action.then == "stall":
            self._stalled = True
        elif action.then in ("hangup", "reset"):
            self._record.closed_by = f"server ({action.then} at {stage})"
            self._drain()
            self._close(reset=action.then == "reset")
            raise _Gone()


class HostileServer:
    """A scripted SMTP server on 127.0.0.1 (plain sockets and threads).

    Use as a context manager, or :meth:`start` and :meth:`stop`. Without a
    script it behaves (a normal server). ``lifetime`` bounds how long any one
    connection is served; ``max_connections`` how many are accepted.
    """

    def __init__(self, script: Script | None = None, *, lifetime: float = 30.0,
                 max_connections: int = 64, keep_records: bool = True) -> None:
        self.script = script or Script()
        self.lifetime = lifetime
        self.max_connections = max_connections
        self.keep_records = keep_records
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._connections: list[Connection] = []
        self._accepted = 0
        self.port = 0

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def start(self) -> HostileServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, 0))
        listener.listen(64)
        listener.settimeout(_TICK)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"hostile-accept-{self.port}",
                                          daemon=True)
        self._acceptor.start()
        return self

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self.stopping:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            with self._lock:
                self._accepted += 1
                number = self._accepted
                if number > self.max_connections or self.stopping:
                    sock.close()
                    continue
                now = time.monotonic()
                record = Connection(number, now, number <= self.script.hostile_connections,
                                    last_activity=now)
                if self.keep_records:
                    self._connections.append(record)
                player = _Player(self, sock, record, self.script)
                thread = threading.Thread(target=player.run, name=f"hostile-{self.port}-{number}",
                                          daemon=True)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    @property
    def connections(self) -> list[Connection]:
        """Snapshots of the connections so far."""
        with self._lock:
            return [record.snapshot() for record in self._connections]

    @property
    def live_connections(self) -> int:
        with self._lock:
            return sum(1 for t in self._threads if t.is_alive())

    def settle(self, quiet: float = 0.25, timeout: float = 2.0) -> None:
        """Wait until every connection has ended, or none has seen traffic for
        ``quiet`` seconds (at most ``timeout``): what the client wrote before
        it returned has then been read."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                records = list(self._connections)
            now = time.monotonic()
            if all(r.done.is_set() or now - r.last_activity >= quiet for r in records):
                return
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; join every thread (bounded)."""
        self.stop_event.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        end = time.monotonic() + timeout
        if self._acceptor is not None:
            self._acceptor.join(max(0.0, end - time.monotonic()))
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- reply parsing for the oracle ------------------------------------------------------------

_REPLY_LINE = re.compile(rb"([0-9]{3})(?:([ -])(.*))?", re.S)


@dataclass(frozen=True)
class ParsedReply:
    """The first reply in some bytes the server wrote, read two ways.

    ``complete``: a line whose 4th byte is not "-" ended with CRLF (what a
    lenient client takes as the end of a reply); ``code``: the first three
    bytes of that final line when they are digits. ``well_formed``: RFC 5321
    grammar (``NNN-text`` lines, a ``NNN text`` or ``NNN`` final line, one
    code in 200-599 throughout); the text may hold any byte but CR LF.
    """

    complete: bool
    well_formed: bool
    code: int | None
    last_text: bytes
    lines: int


def first_reply(data: bytes) -> ParsedReply:
    well_formed = True
    codes: set[bytes] = set()
    count = 0
    start = 0
    while True:
        end = data.find(b"\r\n", start)
        if end < 0:
            return ParsedReply(False, False, None, b"", count)
        line = data[start:end]
        start = end + 2
        count += 1
        match = _REPLY_LINE.fullmatch(line)
        if match is None:
            well_formed = False
        else:
            codes.add(match.group(1))
        if line[3:4] == b"-":
            continue
        digits = line[:3]
        code = int(digits) if len(digits) == 3 and digits.isdigit() else None
        well_formed = well_formed and len(codes) == 1 and code is not None and 200 <= code < 600
        text = (match.group(3) or b"") if match is not None else line[4:]
        return ParsedReply(True, well_formed, code, text, count)


# -- cases ---------------------------------------------------------------------------------------

WEIRD_CODES = (b"650", b"999", b"000", b"100", b"150", b"199", b"334", b"354", b"600", b"2x0", b"-25",
               b" 25", b"2_5", b"+25", b"25", b"2", b"0", b"", b"2500", b"220", b"235", b"221", b"25O")
BARE = (b"2", b"25", b"150", b"2x0 fuzz", b"250", b"550", b"5", b"55", b"999", b"0", b"334", b"452")
EXTRAS = (b"250 2.0.0 extra\r\n", b"550 5.0.0 extra\r\n", b"354 go on\r\n", b"334 VXNlcm5hbWU6\r\n",
          b"221 2.0.0 bye\r\n", b"421 4.3.2 shutting down\r\n", b"250-a\r\n250 b\r\n", b"junk\r\n")
_INTERESTING = b"\r\n -0123456789\x00\xff.x"


def mutate(rng: random.Random, data: bytes, ops: int, keep_end: bool) -> bytes:
    """``data`` with ``ops`` random byte flips, insertions and deletions
    (``keep_end``: none in the final CRLF)."""
    buf = bytearray(data)
    for _ in range(ops):
        limit = max(0, len(buf) - 2) if keep_end and len(buf) > 2 else len(buf)
        op = rng.choice(("flip", "insert", "delete")) if limit else "insert"
        value = rng.choice(_INTERESTING) if rng.random() < 0.6 else rng.randrange(256)
        if op == "insert":
            buf.insert(rng.randrange(limit + 1), value)
        elif op == "flip":
            buf[rng.randrange(limit)] = value
        else:
            del buf[rng.randrange(limit)]
    return bytes(buf)


def _code(stage: str) -> bytes:
    return b"%d" % OK_CODES[stage]


def _multiline(stage: str, reply: bytes) -> bytes:
    if reply.count(b"\r\n") > 1:
        return reply
    code = reply[:3]
    return code + b"-first line\r\n" + code + b"-second line\r\n" + reply


def _refusal(rng: random.Random) -> bytes:
    code = b"%d" % rng.choice(REFUSE_CODES)
    enhanced = b" %c.7.1" % code[0] if rng.random() < 0.5 else b""
    if rng.random() < 0.3:
        return code + b"-" + enhanced.strip() + b" refused\r\n" + code + enhanced + b" by fuzz\r\n"
    return code + enhanced + b" refused by fuzz\r\n"


def _kind_actions(kind: str, stage: str, rng: random.Random, reply: bytes) -> dict[str, Action]:
    """The actions of one misbehaviour ``kind`` at ``stage`` (``reply``: the
    well-behaved answer there)."""
    code = _code(stage)
    keep_end = rng.random() < 0.75
    single = {
        "refuse": lambda: Action((_refusal(rng),)),
        "mutate-1": lambda: Action((mutate(rng, reply, 1, keep_end),)),
        "mutate-n": lambda: Action((mutate(rng, reply, rng.randint(2, 5), keep_end),)),
        "mutate-multiline": lambda: Action(
            (mutate(rng, _multiline(stage, reply), rng.randint(1, 3), keep_end),)),
        "bad-code": lambda: Action((rng.choice(WEIRD_CODES) + b" fuzz\r\n",)),
        "bare-digits": lambda: Action((rng.choice(BARE) + b"\r\n",)),
        "junk-middle": lambda: Action((code + b"-repro\r\nnot a reply line\r\n" + code + b" 8BITMIME\r\n",)),
        "mixed-codes": lambda: Action((code + b"-first\r\n"
                                       + rng.choice((b"550", b"250", b"451", b"354")) + b" second\r\n",)),
        "drip": lambda: Action((reply,), drip=rng.uniform(0.001, 0.008)),
        "slow-drip": lambda: Action((reply,), drip=rng.uniform(0.05, 0.15)),
        "drip-mutated": lambda: Action((mutate(rng, reply, rng.randint(1, 3), keep_end),),
                                       drip=rng.uniform(0.001, 0.008)),
        "stall": lambda: Action((), then="stall"),
        "hangup": lambda: Action((reply[: rng.randrange(len(reply))],) if rng.random() < 0.5 else (),
                                 then="hangup"),
        "reset": lambda: Action((reply[: rng.randrange(len(reply))],) if rng.random() < 0.3 else (),
                                then="reset"),
        "huge-line": lambda: Action((code + rng.choice((b" ", b"-")), Repeat(b"x" * 65536, 16)),
                                    then=rng.choice(("stall", "hangup"))),
        "flood": lambda: Action((Repeat(code + b"-x\r\n", 100_000),
                                 *((code + b" flood over\r\n",) if rng.random() < 0.7 else ())),
                                then="continue"),
        "extra-same-write": lambda: Action((reply + rng.choice(EXTRAS),)),
        "extra-late": lambda: Action((reply, rng.choice(EXTRAS)), gap=rng.uniform(0.01, 0.08)),
        "line-endings": lambda: Action(
            (reply.replace(b"\r\n", rng.choice((b"\n", b"\r", b"\r\r\n", b"\n\r"))),),
            then=rng.choice(("continue", "hangup"))),
        "overlong": lambda: Action((code + b" " + b"y" * rng.choice((1000, 16_390, 20_000)) + b"\r\n",)),
        "odd-text": lambda: Action((code + rng.choice((b" \x00\xff\x1b[31m ok", b"", b" \xc3\xa9t\xc3\xa9",
                                                        b" " + b"\t" * 5)) + b"\r\n",)),
        "late-421-hangup": lambda: Action((reply, b"421 4.4.2 idle timeout\r\n"), gap=rng.uniform(0.01, 0.1),
                                          then="hangup"),
    }
    if kind == "reply-then-early-final":
        # Replies after this stage's come in the same write, then a refusal after the dot:
        # the client must not take the early one as the answer to the message.
        early = rng.choice((b"250 2.0.0 early\r\n", b"250 2.0.0 early\r\n354 go\r\n250 2.0.0 early\r\n"))
        return {stage: Action((reply + early,)), "eod": Action((b"554 5.7.1 rejected after the dot\r\n",))}
    return {stage: single[kind]()}


KINDS = ("refuse", "mutate-1", "mutate-n", "mutate-multiline", "bad-code", "bare-digits", "junk-middle",
         "mixed-codes", "drip", "slow-drip", "drip-mutated", "stall", "hangup", "reset", "huge-line",
         "flood", "extra-same-write", "extra-late", "line-endings", "overlong", "odd-text",
         "late-421-hangup", "reply-then-early-final")


@dataclass(frozen=True)
class Case:
    """One seeded fuzz case: a misbehaviour (``kind``) at a ``stage``, in a script."""

    seed: str
    index: int
    kind: str
    stage: str
    script: Script
    recipients: int

    @property
    def name(self) -> str:
        return f"seed={self.seed} index={self.index} ({self.kind} at {self.stage})"

    def describe(self) -> str:
        return f"{self.name}: {self.script.describe()}, {self.recipients} recipient(s)"


def make_case(seed: str, index: int, *, mailer: bool = False) -> Case:
    """Case ``index`` of ``seed``: the first len(STAGES) * len(KINDS) indices
    cover every (stage, kind) once; the random parameters come from the seed."""
    rng = random.Random(f"{seed}:{'mailer' if mailer else 'send'}:{index}")
    stage = STAGES[index % len(STAGES)]
    kind = KINDS[(index // len(STAGES)) % len(KINDS)]
    pipelining = rng.random() < 0.5
    reply = default_reply(stage, pipelining=pipelining, tag="FUZZ-HOSTILE")
    actions = _kind_actions(kind, stage, rng, reply)
    transaction = rng.choice((1, 2)) if mailer else 1
    recipients = 2 if rng.random() < 0.25 else 1
    return Case(seed, index, kind, stage, Script(actions, transaction, pipelining), recipients)


# -- playing a case against the client -------------------------------------------------------------


def policy_for(port: int) -> syncsmtp.Policy:
    return syncsmtp.Policy(host=LOOPBACK, port=port, tls="none", username=USERNAME, password=PASSWORD,
                           allow_plaintext_auth=True, auth_mechanisms=("PLAIN",),
                           local_hostname="fuzz.client")


def make_message(number: int, recipients: int) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = sender_of(number)
    message["To"] = ", ".join(f"rcpt{i}@fuzz.example" for i in range(recipients))
    message["Subject"] = f"fuzz message {number}"
    message.set_content("fuzz body line one\nfuzz body line two\n")
    return message


def sender_of(number: int) -> str:
    return f"m{number}@sender.fuzz"


@dataclass
class Outcome:
    """What one send returned or raised, and how long it took."""

    number: int
    value: object
    started: float
    elapsed: float


@dataclass
class CaseRun:
    case: Case
    timeout: float
    outcomes: list[Outcome]
    connections: list[Connection]
    started: float
    finished: float
    notes: list[str] = field(default_factory=list)


def _timed(number: int, call: Callable[[], object]) -> Outcome:
    started = time.monotonic()
    try:
        value = call()
    except Exception as exc:
        value = exc
    return Outcome(number, value, started, time.monotonic() - started)


def run_send_case(case: Case, timeout: float) -> CaseRun:
    """Play ``case`` against ``syncsmtp.send()``."""
    started = time.monotonic()
    with HostileServer(case.script, lifetime=timeout + 20) as server:
        policy = policy_for(server.port)
        message = make_message(1, case.recipients)
        outcome = _timed(1, lambda: syncsmtp.send(message, policy, timeout=timeout))
        server.settle()
        connections = server.connections
    return CaseRun(case, timeout, [outcome], connections, started, time.monotonic())


#: How long ``Mailer.close()`` may take in a case.
MAILER_CLOSE_SECONDS = 1.0


def run_mailer_case(case: Case, timeout: float, messages: int = 3) -> CaseRun:
    """Play ``case`` against ``syncsmtp.Mailer(policy).send()``, ``messages`` in a row."""
    started = time.monotonic()
    notes: list[str] = []
    with HostileServer(case.script, lifetime=timeout * messages + 20) as server:
        policy = policy_for(server.port)
        mailer = syncsmtp.Mailer(policy)
        outcomes = []
        try:
            for number in range(1, messages + 1):
                message = make_message(number, case.recipients)
                outcomes.append(_timed(number, lambda m=message: mailer.send(m, timeout=timeout)))
        finally:
            closing = time.monotonic()
            try:
                mailer.close(timeout=MAILER_CLOSE_SECONDS)
            except Exception as exc:
                notes.append(f"Mailer.close() raised {exc!r}")
            took = time.monotonic() - closing
            if took > MAILER_CLOSE_SECONDS + 1.0:
                notes.append(f"Mailer.close(timeout={MAILER_CLOSE_SECONDS}) took {took:.2f} s")
        server.settle()
        connections = server.connections
    return CaseRun(case, timeout, outcomes, connections, started, time.monotonic(), notes)
