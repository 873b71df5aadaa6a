"""The client against a server that answers wrongly at one point of a real
conversation: what the caller is told, and that nothing runs on after a fatal
error. The server is a scripted socket server on 127.0.0.1 (no Twisted)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest
from loopback import LineReader, serving
from twisted.logger import globalLogPublisher

import syncsmtp

_DEADLINE = 10.0
PASSWORD = "fault-Secret-2718"


@dataclass
class Script:
    """Replies by command: ``ehlo`` is written in one piece after EHLO,
    ``after_data`` after the final dot; ``received`` is every line the client wrote."""

    ehlo: bytes = b"250-fault\r\n250 8BITMIME\r\n"
    after_data: bytes = b"250 queued\r\n"
    received: list[bytes] = field(default_factory=list)
    got_final_dot: bool = False


def _serve(connection: socket.socket, script: Script) -> None:
    connection.settimeout(_DEADLINE)
    reader = LineReader(connection)
    in_data = False
    connection.sendall(b"220 fault ESMTP\r\n")
    for _ in range(200):  # a few commands and data lines
        line = reader.line()
        if line is None:
            return
        script.received.append(line)
        if in_data:
            if line == b".":
                in_data = False
                script.got_final_dot = True
                connection.sendall(script.after_data)
            continue
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            connection.sendall(script.ehlo)
        elif verb == b"DATA":
            in_data = True
            connection.sendall(b"354 go\r\n")
        elif verb == b"QUIT":
            connection.sendall(b"221 bye\r\n")
            return
        else:
            connection.sendall(b"250 ok\r\n")


@contextmanager
def scripted(script: Script, connections: int = 1,
             serve: Callable[[socket.socket, Script], None] = _serve) -> Iterator[int]:
    with serving(lambda connection: serve(connection, script), connections) as port:
        yield port


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg["Subject"] = "fault"
    msg.set_content("body")
    return msg


def policy(port: int) -> syncsmtp.Policy:
    return syncsmtp.Policy(host="127.0.0.1", port=port, tls="none")


@contextmanager
def twisted_log() -> Iterator[list[dict[str, object]]]:
    events: list[dict[str, object]] = []
    observer = events.append
    globalLogPublisher.addObserver(observer)  # type: ignore[arg-type]
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)  # type: ignore[arg-type]


# -- after the final dot ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [b"2x0 fuzz\r\n", b"650 what\r\n", b"999 what\r\n", b"334 more?\r\n", b"2\r\n", b"25\r\n",
     b"150 hm\r\n", b"0 zero\r\n", b"25O ok\r\n", b"x250 ok\r\n", b"250-first\r\n451 second\r\n",
     b"451-first\r\n250 second\r\n"],
    ids=["2x0", "650", "999", "334", "bare-2", "bare-25", "150", "0", "25O", "x250", "250-451", "451-250"],
)
def test_a_malformed_answer_to_the_data_means_maybe_delivered(answer: bytes) -> None:
    script = Script(after_data=answer)
    with scripted(script) as port, pytest.raises(syncsmtp.SMTPError) as caught:
        syncsmtp.send(message(), policy(port), timeout=5)
    assert script.got_final_dot
    assert isinstance(caught.value, syncsmtp.ProtocolError), caught.value
    assert caught.value.maybe_delivered, caught.value


@pytest.mark.parametrize("answer", [b"451 4.3.0 try later\r\n", b"554 5.7.1 spam\r\n"])
def test_a_well_formed_refusal_of_the_data_means_not_delivered(answer: bytes) -> None:
    script = Script(after_data=answer)
    with scripted(script) as port, pytest.raises(syncsmtp.MessageRefused) as caught:
        syncsmtp.send(message(), policy(port), timeout=5)
    assert not caught.value.maybe_delivered
    assert caught.value.reply is not None and caught.value.reply.code == int(answer[:3])


def test_a_reply_in_the_same_write_as_the_354_is_not_taken_for_the_answer() -> None:
    script = Script(after_data=b"250 queued\r\n")
    original = _serve

    def serve_with_extra(connection: socket.socket, script: Script) -> None:
        original(_ExtraAfter354(connection), script)

    with scripted(script, serve=serve_with_extra) as port, \
            pytest.raises(syncsmtp.ProtocolError, match="after its 354") as caught:
        syncsmtp.send(message(), policy(port), timeout=5)
    assert not caught.value.maybe_delivered and not script.got_final_dot


class _ExtraAfter354:
    """A socket whose 354 reply carries a premature "250" in the same write."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection

    def sendall(self, data: bytes) -> None:
        if data.startswith(b"354"):
            data += b"250-a\r\n250 b\r\n"
        self._connection.sendall(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._connection, name)


def test_a_reply_that_is_not_utf8_is_shown_with_replacement_characters() -> None:
    """Each line of the transcript decodes by itself: a broken sequence at a
    line's end takes nothing from the next line."""
    script = Script(after_data=b"250-queued \xff\xe2\x82\r\n250 r\xc3\xa9ussi \xe2\x82\r\n")
    with scripted(script) as port:
        result = syncsmtp.send(message(), policy(port), timeout=10)
    assert result.transcript[-2:] == ("S: 250-queued \ufffd\ufffd", "S: 250 r\u00e9ussi \ufffd")


def test_no_answer_to_the_data_means_maybe_delivered() -> None:
    script = Script(after_data=b"")  # then silence until the deadline
    started = time.monotonic()
    with scripted(script) as port, pytest.raises(syncsmtp.SendTimeout) as caught:
        syncsmtp.send(message(), policy(port), timeout=1.5)
    assert time.monotonic() - started < 2.5
    assert caught.value.maybe_delivered


def test_mailer_applies_the_same_rule_per_message() -> None:
    script = Script(after_data=b"650 what\r\n")
    with scripted(script) as port, syncsmtp.Mailer(policy(port)) as mailer, \
            pytest.raises(syncsmtp.ProtocolError) as caught:
        mailer.send(message(), timeout=5)
    assert caught.value.maybe_delivered


def test_a_malformed_line_before_the_data_is_not_delivered() -> None:
    script = Script(ehlo=b"250-fault\r\n25O 8BITMIME\r\n")
    with scripted(script) as port, pytest.raises(syncsmtp.ProtocolError) as caught:
        syncsmtp.send(message(), policy(port), timeout=5)
    assert not caught.value.maybe_delivered
    assert not script.got_final_dot


# -- nothing after a fatal error -------------------------------------------------------------------------


@pytest.mark.parametrize("last", [b"250 8BITMIME", b"250 AUTH PLAIN"])
def test_no_line_is_read_and_nothing_written_after_a_fatal_error(last: bytes) -> None:
    # One write: a junk line in the middle of the EHLO reply, then the rest of it.
    script = Script(ehlo=b"250-repro\r\nnot a reply line\r\n" + last + b"\r\n")
    with twisted_log() as events, scripted(script) as port, \
            pytest.raises(syncsmtp.ProtocolError) as caught:
        syncsmtp.send(message(), policy(port).with_options(
            username="me", password=PASSWORD, allow_plaintext_auth=True, require_auth=False,
        ), timeout=5)
    time.sleep(0.2)  # anything the reactor would still do after the error
    assert "not a reply line" in str(caught.value)
    assert [line.split(b" ")[0] for line in script.received] == [b"EHLO"]  # no AUTH, no MAIL
    assert not any(event.get("isError") or event.get("log_failure") for event in events), events
    assert PASSWORD not in str(caught.value) + "".join(caught.value.transcript)


# -- limits --------------------------------------------------------------------------------------------


def test_a_line_longer_than_the_limit_is_a_protocol_error() -> None:
    script = Script(ehlo=b"250-" + b"x" * 1_000_000)  # and no line end
    with scripted(script) as port, pytest.raises(syncsmtp.ProtocolError, match="longer than 8192"):
        syncsmtp.send(message(), policy(port), timeout=5)


def test_a_reply_of_too_many_lines_is_a_protocol_error() -> None:
    script = Script(ehlo=b"250-x\r\n" * 100_000 + b"250 8BITMIME\r\n")
    with scripted(script) as port, pytest.raises(syncsmtp.ProtocolError, match="more than 512 lines"):
        syncsmtp.send(message(), policy(port), timeout=5)


@pytest.mark.parametrize("lines, refused", [(512, False), (513, True)])
def test_the_reply_line_limit_is_exact(lines: int, refused: bool) -> None:
    script = Script(ehlo=b"250-x\r\n" * (lines - 1) + b"250 8BITMIME\r\n")
    _send_expecting(script, "more than 512 lines" if refused else None)


@pytest.mark.parametrize("last_line_bytes, refused", [(96, False), (97, True)])
def test_the_reply_size_limit_counts_the_last_line_too(last_line_bytes: int, refused: bool) -> None:
    # 16 continuation lines of 4,090 bytes (CRLF not counted), then a last
    # line: 65,536 bytes in all when it has 96.
    continuation = b"250-" + b"x" * 4086 + b"\r\n"
    last = b"250 " + b"y" * (last_line_bytes - 4) + b"\r\n"
    assert 16 * (len(continuation) - 2) + len(last) - 2 == 65536 + last_line_bytes - 96
    _send_expecting(Script(ehlo=continuation * 16 + last), "65536 bytes" if refused else None)


def _send_expecting(script: Script, refusal: str | None) -> None:
    """Send through ``script``: refused with a ProtocolError matching
    ``refusal``, or (None) delivered."""
    with scripted(script) as port:
        if refusal is None:
            assert syncsmtp.send(message(), policy(port), timeout=5).accepted == ("b@example.com",)
            return
        with pytest.raises(syncsmtp.ProtocolError, match=refusal):
            syncsmtp.send(message(), policy(port), timeout=5)


def test_a_long_but_reasonable_ehlo_reply_is_read() -> None:
    lines = b"".join(b"250-X-EXTENSION-%d %s\r\n" % (n, b"p" * 100) for n in range(200))
    script = Script(ehlo=b"250-fault\r\n" + lines + b"250 8BITMIME\r\n")
    with scripted(script) as port:
        assert syncsmtp.send(message(), policy(port), timeout=5).accepted == ("b@example.com",)
