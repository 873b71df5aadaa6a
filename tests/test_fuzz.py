"""Seeded fuzz of the client against a hostile scripted server (tests/hostile.py).

Each case puts one misbehaviour (a mutated, dripped, stalled, truncated,
flooded or doubled reply, a hang-up...) at one stage of the conversation and
plays it against ``syncsmtp.send()`` (or three messages through a ``Mailer``).
For every message the test asks:

- the outcome is a ``SendResult`` or an ``SMTPError`` subclass, nothing else;
- the call returned within its deadline + 1 s (a stall hits the deadline);
- ``maybe_delivered``: the server knows whether it read the final dot (after
  message data). Without it, a ``SendResult`` is impossible and an error must
  say False (unless the server hung up first: the client may then have
  written the dot into the closing connection, and cannot know). After it,
  only a well-formed 4xx/5xx reply means "not delivered"; every other outcome
  (malformed reply, out-of-range code, 334, bare digits, lost connection,
  time-out) must say True, and a ``SendResult`` must come from a 2xx the
  server sent after the dot. A reply the server wrote unasked after a pause
  may pass for the answer to the command the client sent meanwhile; an
  outcome such a reply explains is accepted (no client can tell);
- the password appears nowhere: str/repr/transcript of the error or result,
  Twisted's log, Python's log;
- Twisted logs no "Unhandled Error", CRITICAL or AlreadyCalledError;
- a normal send to a well-behaved server works after the case;
- per batch: no thread or file descriptor is left behind.

Run: ``pytest -n 2 tests/test_fuzz.py``. More cases or another seed:
``--fuzz-cases 3000 --fuzz-seed 7`` (or SYNCSMTP_FUZZ_CASES / SYNCSMTP_FUZZ_SEED);
one case alone: ``--fuzz-only 133 --fuzz-seed syncsmtp``. A failure names the
seed and index of each case, the server's bytes and what the client did.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hostile import (
    KINDS,
    PASSWORD,
    STAGES,
    USERNAME,
    Action,
    CaseRun,
    HostileServer,
    Outcome,
    Repeat,
    Script,
    first_reply,
    make_case,
    make_message,
    policy_for,
    run_mailer_case,
    run_send_case,
    sender_of,
)
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

import syncsmtp

T = TypeVar("T")

SECRETS = (
    PASSWORD,
    base64.b64encode(f"\0{USERNAME}\0{PASSWORD}".encode()).decode(),
    base64.b64encode(PASSWORD.encode()).decode(),
)
BAD_LOG_WORDS = ("Unhandled Error", "Unhandled error in Deferred", "AlreadyCalledError")
#: A deadline may be overrun by this much.
DEADLINE_SLACK = 1.0
#: A refusal finished this close to the deadline may or may not have been read in time.
GRAY_ZONE = 0.25
BATCH_SIZE = 25


def _setting(config: pytest.Config, option: str, env: str, default: T, convert: Callable[[str], T]) -> T:
    value = config.getoption(option, default=None)
    if value is not None:
        return convert(str(value)) if not isinstance(value, type(default)) else value
    if os.environ.get(env):
        return convert(os.environ[env])
    return default


@dataclass(frozen=True)
class Settings:
    seed: str
    cases: int
    only: tuple[int, ...]
    timeout: float
    parallel: int

    @classmethod
    def of(cls, config: pytest.Config) -> Settings:
        only = _setting(config, "fuzz_only", "SYNCSMTP_FUZZ_ONLY", "", str)
        return cls(
            seed=_setting(config, "fuzz_seed", "SYNCSMTP_FUZZ_SEED", "syncsmtp", str),
            cases=_setting(config, "fuzz_cases", "SYNCSMTP_FUZZ_CASES", 300, int),
            only=tuple(int(i) for i in only.split(",") if i.strip()),
            timeout=_setting(config, "fuzz_timeout", "SYNCSMTP_FUZZ_TIMEOUT", 2.0, float),
            parallel=max(1, _setting(config, "fuzz_parallel", "SYNCSMTP_FUZZ_PARALLEL", 4, int)),
        )

    def batches(self, mailer: bool) -> list[tuple[int, ...]]:
        if self.only:
            return [self.only]
        count = max(1, self.cases // 3) if mailer else self.cases
        return [tuple(range(start, min(start + BATCH_SIZE, count))) for start in range(0, count, BATCH_SIZE)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, mailer in (("send_batch", False), ("mailer_batch", True)):
        if name in metafunc.fixturenames:
            batches = Settings.of(metafunc.config).batches(mailer)
            metafunc.parametrize(name, batches, ids=[f"cases{b[0]}-{b[-1]}" for b in batches])


# -- what the client did, judged ------------------------------------------------------------------


def _outcome_text(value: object) -> str:
    if isinstance(value, BaseException):
        name = type(value).__name__
        if isinstance(value, syncsmtp.SMTPError):
            return (f"{name}(maybe_delivered={value.maybe_delivered}, stage={value.stage!r}, "
                    f"reply={value.reply}): {value}")
        return f"{name}: {value!r}"
    if isinstance(value, syncsmtp.SendResult):
        return f"SendResult(reply={value.reply}, accepted={value.accepted})"
    return repr(value)


def _texts_of(value: object) -> list[str]:
    """Every text a caller could print or log from an outcome."""
    texts = [repr(value), str(value)]
    if isinstance(value, BaseException):
        texts.append("".join(traceback.format_exception(value)))
    transcript = getattr(value, "transcript", ())
    if isinstance(transcript, tuple):
        texts.extend(str(line) for line in transcript)
    if isinstance(value, syncsmtp.SendResult):
        texts.append(value._repr_html_())
    return texts


def _leaks(texts: list[str]) -> list[str]:
    return [secret for secret in SECRETS if any(secret in text for text in texts)]


def _describe_after_dot(data: bytes) -> str:
    shown = data[:200]
    more = f"...(+{len(data) - 200} bytes)" if len(data) > 200 else ""
    return f"{shown!r}{more}" if data else "nothing"


def _same_reply_text(client_text: str, server_text: bytes) -> bool:
    last = client_text.split("\n")[-1].strip()
    return last in server_text.decode("utf-8", "replace")


def _hostile_message(run: CaseRun, outcome: Outcome, mailer: bool) -> bool:
    """Whether this message is the one a stall in the script must time out."""
    case = run.case
    if case.kind != "stall" or case.stage == "quit":
        return False
    return not mailer or (outcome.number == 1 and (case.stage in ("greeting", "ehlo", "auth")
                                                    or case.script.transaction == 1))


def _explained_by_late_write(run: CaseRun, value: object) -> bool:
    """Whether the client's reply is one the server wrote after a pause, unasked
    (``extra-late``, ``late-421-hangup``): arriving after the client sent its
    next command, it looks like that command's answer, and no client can tell."""
    reply = getattr(value, "reply", None)
    if not isinstance(reply, syncsmtp.Reply):
        return False
    for connection in run.connections:
        for _, data in connection.late_writes:
            parsed = first_reply(data)
            if parsed.complete and parsed.code == reply.code \
                    and _same_reply_text(reply.text, parsed.last_text):
                return True
    return False


def judge(run: CaseRun, outcome: Outcome, mailer: bool) -> list[str]:
    """What is wrong with one message's outcome (nothing: an empty list)."""
    problems: list[str] = []
    value, timeout = outcome.value, run.timeout
    if not isinstance(value, syncsmtp.SendResult | syncsmtp.SMTPError):
        problems.append(f"the outcome is neither a SendResult nor an SMTPError: {value!r}")
    elif type(value) is syncsmtp.SMTPError and "unexpected failure" in str(value):
        problems.append("an internal exception reached the caller, wrapped in a bare SMTPError")
    if outcome.elapsed > timeout + DEADLINE_SLACK:
        problems.append(f"returned after {outcome.elapsed:.2f} s; the deadline was {timeout:g} s")
    if isinstance(value, syncsmtp.SendTimeout) and outcome.elapsed < timeout - 0.05:
        problems.append(f"SendTimeout after only {outcome.elapsed:.2f} s of a {timeout:g} s deadline")
    if _hostile_message(run, outcome, mailer) and not isinstance(value, syncsmtp.SendTimeout):
        problems.append("the server stalled, but the send did not end with SendTimeout")
    leaked = _leaks(_texts_of(value))
    if leaked:
        problems.append(f"the password (or its base64) is in the outcome's text: {leaked}")
    if isinstance(value, syncsmtp.SMTPError) and not (
        isinstance(value.transcript, tuple) and all(isinstance(line, str) for line in value.transcript)
    ):
        problems.append(f"error.transcript is not a tuple of str: {value.transcript!r}")

    sender = sender_of(outcome.number).encode()
    transactions = [t for c in run.connections for t in c.transactions if t.sender == sender]
    dotted = [t for t in transactions if t.dot]
    if len(dotted) > 1:
        problems.append(f"the message reached the server {len(dotted)} times (final dot on each)")
    if isinstance(value, syncsmtp.SendResult):
        if not dotted:
            problems.append("SendResult, but the server never received the final dot")
        else:
            after = bytes(dotted[-1].after_dot)
            reply = first_reply(after)
            if not (reply.complete and reply.code is not None and 200 <= reply.code < 300):
                problems.append(f"SendResult, but what the server wrote after the dot was "
                                f"{_describe_after_dot(after)}")
            elif (value.reply.code != reply.code or not _same_reply_text(value.reply.text, reply.last_text)) \
                    and not _explained_by_late_write(run, value):
                problems.append(f"SendResult from a reply the server sent before it had the dot (client "
                                f"took {value.reply}; after the dot the server wrote "
                                f"{_describe_after_dot(after)})")
    elif isinstance(value, syncsmtp.SMTPError):
        if not dotted:
            # When the server hung up first, the client may have written the dot into a
            # closing connection: it cannot know, and True is right. Otherwise it dropped
            # the connection itself with the dot still unsent, and can know.
            hung_up = any(c.closed_by.startswith(("server (hangup", "server (reset")) for c in run.connections
                          if any(t.sender == sender for t in c.transactions))
            if value.maybe_delivered and not hung_up:
                problems.append("maybe_delivered=True, but the server never received the final dot (the "
                                "client closed the connection with it unsent)")
        else:
            transaction = dotted[-1]
            after = bytes(transaction.after_dot)
            reply = first_reply(after)
            refused = reply.well_formed and reply.code is not None and reply.code >= 400
            done = transaction.reply_done_at
            in_time = done is not None and done <= outcome.started + timeout - GRAY_ZONE
            if refused and in_time:
                if value.maybe_delivered:
                    problems.append(f"maybe_delivered=True after a well-formed {reply.code} reply to the "
                                    f"dot ({_describe_after_dot(after)})")
            elif refused and done is not None:
                pass  # finished at the deadline: either answer is right
            elif not value.maybe_delivered and not _explained_by_late_write(run, value):
                problems.append(f"maybe_delivered=False after the server read the final dot; it wrote "
                                f"{_describe_after_dot(after)}")
    return problems


# -- logs ------------------------------------------------------------------------------------------------


@dataclass
class LogWatch:
    """Twisted's log events (all threads), with the monotonic time each was emitted."""

    events: list[tuple[float, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        try:
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text += "\n" + failure.getTraceback()
        except Exception as exc:  # a log observer must never raise
            text = f"(unformattable event {exc!r})"
        with self._lock:
            if len(self.events) < 10_000:
                self.events.append((time.monotonic(), getattr(level, "name", str(level)), text))

    @contextlib.contextmanager
    def watching(self) -> Iterator[LogWatch]:
        globalLogPublisher.addObserver(self)
        try:
            yield self
        finally:
            globalLogPublisher.removeObserver(self)

    def problems(self, runs: list[CaseRun]) -> list[str]:
        found = []
        for when, level, text in list(self.events):
            bad = [word for word in BAD_LOG_WORDS if word in text]
            if level == LogLevel.critical.name:
                bad.append("level critical")
            if _leaks([text]):
                bad.append("the password")
            if bad:
                found.append(f"Twisted logged {', '.join(bad)} during {_cases_at(when, runs)}:\n"
                             f"    {_shorten(text)}")
        return found


def _shorten(text: str, head: int = 600, tail: int = 900) -> str:
    return text if len(text) <= head + tail else f"{text[:head]}\n    [...]\n{text[-tail:]}"


def _cases_at(when: float, runs: list[CaseRun]) -> str:
    """The cases that were being played at ``when``, with what each did."""
    found = [run for run in runs if run.started - 0.05 <= when <= run.finished + 0.5]
    if not found:
        return "no case (between cases, or at the batch's end)"
    return "one of:\n" + "\n".join(_report(run, []) for run in found)


def _python_log_problems(records: list[logging.LogRecord], runs: list[CaseRun], offset: float) -> list[str]:
    found = []
    for record in records:
        try:
            text = record.getMessage()
        except Exception as exc:
            text = f"(unformattable {record.msg!r}: {exc!r})"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + "".join(traceback.format_exception(record.exc_info[1]))
        if record.exc_text:
            text += "\n" + record.exc_text
        bad = [word for word in BAD_LOG_WORDS if word in text]
        if record.levelno >= logging.CRITICAL:
            bad.append("level CRITICAL")
        if _leaks([text]):
            bad.append("the password")
        if bad:
            found.append(f"Python logging ({record.name}, {record.levelname}) had {', '.join(bad)} during "
                         f"{_cases_at(record.created - offset, runs)}:\n    {_shorten(text)}")
    return found


# -- resources --------------------------------------------------------------------------------------------


def _fds() -> dict[str, str]:
    found = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found[name] = os.readlink(f"/proc/self/fd/{name}")
    return found


def _resources_back(fds: dict[str, str], threads: int, seconds: float = 5.0) -> list[str]:
    """Wait up to ``seconds`` for the counts to come back; what is still extra."""
    end = time.monotonic() + seconds
    while True:
        now_fds, now_threads = _fds(), threading.active_count()
        if (len(now_fds) <= len(fds) and now_threads <= threads) or time.monotonic() > end:
            break
        time.sleep(0.05)
    problems = []
    if len(now_fds) > len(fds):
        extra = sorted(set(now_fds.items()) - set(fds.items()))
        problems.append(f"{len(now_fds) - len(fds)} file descriptor(s) more than before the batch: "
                        f"{extra[:20]}")
    if now_threads > threads:
        names = sorted(t.name for t in threading.enumerate())
        problems.append(f"{now_threads - threads} thread(s) more than before the batch: {names}")
    return problems


# -- batches ------------------------------------------------------------------------------------------------


def _normal_send(policy: syncsmtp.Policy) -> Outcome:
    started = time.monotonic()
    try:
        value: object = syncsmtp.send(make_message(0, 1), policy, timeout=10)
    except Exception as exc:
        value = exc
    return Outcome(0, value, started, time.monotonic() - started)


def _report(run: CaseRun, problems: list[str]) -> str:
    lines = [f"{run.case.describe()}"]
    for outcome in run.outcomes:
        lines.append(f"  message {outcome.number}: {_outcome_text(outcome.value)} "
                     f"({outcome.elapsed:.2f} s)")
    for connection in run.connections:
        for transaction in connection.transactions:
            lines.append(f"  server, connection {connection.number} transaction {transaction.number} "
                         f"({transaction.sender.decode('ascii', 'replace')}): dot={transaction.dot}, after "
                         f"the dot: {_describe_after_dot(bytes(transaction.after_dot))}")
    lines += [f"  PROBLEM: {problem}" for problem in problems]
    return "\n".join(lines)


def run_batch(indices: tuple[int, ...], settings: Settings, mailer: bool,
              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    offset = time.time() - time.monotonic()
    failures: list[str] = []
    logs = LogWatch()
    with logs.watching(), HostileServer(lifetime=120, max_connections=100_000) as good:
        good_policy = policy_for(good.port)
        warm_up = _normal_send(good_policy)  # starts the reactor thread, before counting
        assert isinstance(warm_up.value, syncsmtp.SendResult), _outcome_text(warm_up.value)
        _wait_for(lambda: good.live_connections == 0)
        fds, threads = _fds(), threading.active_count()

        def play(index: int) -> tuple[CaseRun, Outcome]:
            case = make_case(settings.seed, index, mailer=mailer)
            run = run_mailer_case(case, settings.timeout) if mailer else run_send_case(case, settings.timeout)
            return run, _normal_send(good_policy)

        with ThreadPoolExecutor(settings.parallel, thread_name_prefix="fuzz-case") as pool:
            played = list(pool.map(play, indices))
        runs = [run for run, _ in played]
        for run, normal in played:
            problems = [problem for outcome in run.outcomes for problem in judge(run, outcome, mailer)]
            problems += run.notes
            if not isinstance(normal.value, syncsmtp.SendResult):
                problems.append(f"a normal send to a well-behaved server after the case failed: "
                                f"{_outcome_text(normal.value)}")
            if problems:
                failures.append(_report(run, problems))
        gc.collect()  # Deferreds that die with an unhandled failure log it now
        time.sleep(0.3)  # crochet hands Twisted's events to Python logging in a thread of its own
        _wait_for(lambda: good.live_connections == 0)
        failures += _resources_back(fds, threads)
    failures += logs.problems(runs)
    failures += _python_log_problems(list(caplog.records), runs, offset)
    if failures:
        kinds = sorted({(run.case.kind, run.case.stage) for run in runs})
        pytest.fail(f"{len(failures)} problem(s) in {len(indices)} cases (seed {settings.seed!r}, "
                    f"timeout {settings.timeout:g} s, {len(kinds)} kind/stage pairs):\n\n"
                    + "\n\n".join(failures), pytrace=False)


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)


def test_hostile_send(send_batch: tuple[int, ...], request: pytest.FixtureRequest,
                      caplog: pytest.LogCaptureFixture) -> None:
    run_batch(send_batch, Settings.of(request.config), False, caplog)


def test_hostile_mailer(mailer_batch: tuple[int, ...], request: pytest.FixtureRequest,
                        caplog: pytest.LogCaptureFixture) -> None:
    run_batch(mailer_batch, Settings.of(request.config), True, caplog)


# -- the harness itself ---------------------------------------------------------------------------


def test_matrix_covers_every_stage_and_kind() -> None:
    pairs = {(make_case("x", i).stage, make_case("x", i).kind) for i in range(len(STAGES) * len(KINDS))}
    assert len(pairs) == len(STAGES) * len(KINDS)
    assert make_case("x", 5).describe() == make_case("x", 5).describe(), "cases are reproducible"


def test_reply_oracle() -> None:
    assert first_reply(b"550 5.7.1 no\r\n").well_formed
    assert first_reply(b"250-a\r\n250 b\r\n221 bye\r\n").well_formed
    assert first_reply(b"452\r\n").well_formed
    assert first_reply(b"250 \x00\xff odd text\r\n").well_formed
    assert first_reply(b"334 VXNlcm5hbWU6\r\n").code == 334, "well-formed, but no refusal"
    for malformed in (b"250-repro\r\nnot a reply line\r\n250 8BITMIME\r\n", b"250-x\r\n550 no\r\n",
                      b"650 fuzz\r\n", b"999 x\r\n", b"2\r\n", b"25\r\n",
                      b"150\r\n", b"2x0 fuzz\r\n", b"550x\r\n", b"550 no", b" 550 no\r\n"):
        assert not first_reply(malformed).well_formed, malformed
    assert not first_reply(b"550 no").complete


def test_server_stops_when_the_client_does_not_read() -> None:
    """The server's loops are bounded: a client that never reads a flood or a
    megabyte line does not keep it (or its threads) alive past stop()."""
    import socket

    threads = threading.active_count()
    greeting = Action((Repeat(b"220-x\r\n", 100_000), b"220 " + b"y" * (1 << 20)), then="stall")
    server = HostileServer(Script({"greeting": greeting})).start()
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.recv(10)
        time.sleep(0.3)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3.0
    _wait_for(lambda: threading.active_count() <= threads)
    assert threading.active_count() <= threads


def test_server_behaves_without_a_script() -> None:
    import smtplib

    with HostileServer() as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
            client.sendmail("a@b.example", ["c@d.example"], b"Subject: x\r\n\r\n.dot\r\nhi\r\n")
        server.settle()
        (connection,) = server.connections
    (transaction,) = connection.transactions
    assert transaction.dot and transaction.sender == b"a@b.example"
    assert bytes(transaction.after_dot).startswith(b"250 ")
