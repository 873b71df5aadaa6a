"""SMTPTestServer's CHUNKING (RFC 3030 BDAT), driven over real sockets on 127.0.0.1.

smtplib has no BDAT, so most tests write exact bytes through a raw client:
the chunk octets, pipelined commands in one write, split writes. Every read
has a timeout and every reply a bound on its lines; every server comes from
the ``smtp_server_factory`` fixture, which stops it.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator

import pytest

from syncsmtp.testing import ReceivedMessage, SMTPTestServer
from syncsmtp.testing._chunking import ChunkingStream
from syncsmtp.testing._received import Envelope
from syncsmtp.testing._script import Fault

ServerFactory = Callable[..., SMTPTestServer]
_READ_TIMEOUT = 10.0  # seconds per read
_SILENCE = 0.5  # seconds a stalled server is given to prove it says nothing
_MAX_REPLY_LINES = 50
_MAX_LINE = 4096
_CHUNKING = ("PIPELINING", "CHUNKING", "8BITMIME")
_QUEUED = re.compile(rb"^250 2\.0\.0 Ok: queued as T\d+$")
_ENVELOPE = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
_NO_TRANSACTION = b"503 5.5.1 Bad sequence of commands: MAIL FROM and RCPT TO first"


class Client:
    """Writes exact bytes to the server and reads its replies (bounded in time and lines).

    It buffers what it reads itself (no ``makefile``), so that :meth:`silent`
    can wait on the socket with a short timeout and reading still works after.
    """

    def __init__(self, port: int, *, ca_file: str | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=_READ_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # split writes stay split
        if ca_file is not None:
            sock = ssl.create_default_context(cafile=ca_file).wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self._pending = b""
        assert self.reply().startswith(b"220 ")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        """The next line with its LF, or what is left (b"" at the end) when the server closes."""
        while b"\n" not in self._pending:
            if len(self._pending) > _MAX_LINE:
                raise AssertionError(f"a reply line longer than {_MAX_LINE} bytes")
            data = self.sock.recv(4096)
            if not data:
                line, self._pending = self._pending, b""
                return line
            self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return line + b"\n"

    def reply(self) -> bytes:
        """The last line of the next reply, CRLF removed (a multi-line reply read to its end)."""
        for _ in range(_MAX_REPLY_LINES):
            line = self.readline()
            if not line:
                raise AssertionError("the server closed the connection")
            if line[3:4] != b"-":
                return line.rstrip(b"\r\n")
        raise AssertionError(f"no end of reply within {_MAX_REPLY_LINES} lines")

    def replies(self, count: int) -> list[bytes]:
        return [self.reply() for _ in range(count)]

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def ehlo(self) -> list[bytes]:
        """The EHLO keywords."""
        self.send(b"EHLO client.example\r\n")
        lines = []
        for _ in range(_MAX_REPLY_LINES):
            line = self.readline()
            assert line.startswith(b"250"), line
            lines.append(line[4:].rstrip(b"\r\n"))
            if line[3:4] == b" ":
                return lines[1:]
        raise AssertionError(f"no end of the EHLO reply within {_MAX_REPLY_LINES} lines")

    def envelope(self) -> None:
        self.send(_ENVELOPE)
        assert self.replies(2) == [b"250 2.1.0 Sender OK", b"250 2.1.5 Recipient OK"]

    def silent(self) -> bool:
        """True when the server sends nothing for a while and keeps the connection open."""
        if self._pending:
            return False
        self.sock.settimeout(_SILENCE)
        try:
            self._pending = self.sock.recv(4096)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(_READ_TIMEOUT)
        return False  # a reply, or the end of the connection

    def closed(self) -> bool:
        """True when the server closes (or resets) the connection without a further reply."""
        try:
            return self.readline() == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    opened: list[Client] = []

    def open_client(server: SMTPTestServer, *, ehlo: bool = True) -> Client:
        client = Client(server.port, ca_file=server.ca_file if server.tls == "implicit" else None)
        opened.append(client)
        if ehlo:
            client.ehlo()
        return client

    yield open_client
    for client in opened:
        client.close()


@pytest.fixture
def server(smtp_server_factory: ServerFactory) -> SMTPTestServer:
    return smtp_server_factory(tls="none", extensions=_CHUNKING)


def bdat(octets: bytes, *, last: bool = False) -> bytes:
    """A BDAT command with its chunk, as one piece of the byte stream."""
    return b"BDAT %d%s\r\n" % (len(octets), b" LAST" if last else b"") + octets


def only_message(server: SMTPTestServer) -> ReceivedMessage:
    (received,) = server.wait_for(1)
    return received


# -- accepted messages ---------------------------------------------------------------------------


def test_chunking_is_announced_only_when_asked(
    smtp_server_factory: ServerFactory, connect: Callable[..., Client]
) -> None:
    chunking = smtp_server_factory(tls="none", extensions=_CHUNKING)
    assert b"CHUNKING" in connect(chunking, ehlo=False).ehlo()
    default = smtp_server_factory(tls="none")
    client = connect(default, ehlo=False)
    assert b"CHUNKING" not in client.ehlo()
    client.envelope()
    # Without CHUNKING, BDAT is an unknown command, as it always was.
    assert client.command(b"BDAT 0 LAST") == b"500 Command not implemented"


def test_one_chunk(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    body = b"From: a@example.com\r\nSubject: one\r\n\r\nHello.\r\n"
    client = connect(server)
    client.envelope()
    client.send(bdat(body, last=True))
    assert _QUEUED.match(client.reply())
    received = only_message(server)
    assert (received.sender, received.recipients) == ("a@example.com", ("b@example.com",))
    assert received.data == received.raw == body
    assert received.via == "BDAT" and received.chunks == (len(body),)
    assert received.message["Subject"] == "one"


def test_several_chunks_each_answered(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    parts = [b"Subject: three\r\n", b"\r\nfirst line\r\nsec", b"ond line\r\n"]
    client = connect(server)
    client.envelope()
    client.send(bdat(parts[0]))
    assert client.reply() == b"250 2.0.0 %d octets received" % len(parts[0])
    client.send(bdat(parts[1]))
    assert client.reply() == b"250 2.0.0 %d octets received" % len(parts[1])
    client.send(bdat(parts[2], last=True))
    assert _QUEUED.match(client.reply())
    received = only_message(server)
    assert received.raw == received.data == b"".join(parts)
    assert received.chunks == tuple(len(part) for part in parts)


def test_bdat_0_last(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    client = connect(server)
    client.envelope()
    assert _QUEUED.match(client.command(b"BDAT 0 LAST"))  # an empty message
    client.envelope()
    client.send(bdat(b"Subject: x\r\n\r\nbody\r\n") + b"BDAT 0 LAST\r\n")  # ended by an empty chunk
    replies = client.replies(2)
    assert replies[0] == b"250 2.0.0 20 octets received" and _QUEUED.match(replies[1])
    empty, ended = server.wait_for(2)
    assert (empty.data, empty.raw, empty.chunks) == (b"", b"", (0,))
    assert ended.data == b"Subject: x\r\n\r\nbody\r\n" and ended.chunks == (20, 0)


def test_octets_are_taken_as_they_are(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    # Lines starting with ".", a lone ".", bare CR and LF, NUL and 8-bit octets, text
    # that reads as commands, a chunk that ends inside a CRLF: no stuffing, no lines.
    body = (
        b"Subject: raw\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nbare\rCR bare\nLF\r\n"
        b"\x00\x01\xff\xfe\x80 8-bit \xc3\xa9\r\nQUIT\r\nRSET\r\nBDAT 5 LAST\r\n"
    )
    cut = body.index(b"\r\nQUIT") + 1
    client = connect(server)
    client.envelope()
    client.send(bdat(body[:cut]) + bdat(body[cut:], last=True))
    assert client.replies(2)[0] == b"250 2.0.0 %d octets received" % cut
    received = only_message(server)
    assert received.data == received.raw == body
    assert received.chunks == (cut, len(body) - cut)


def test_a_chunk_longer_than_any_line(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    # 2 MiB without a CRLF: as a line it would be refused (MAX_LENGTH is 1 MiB).
    body = bytes(range(256)).replace(b"\r", b"").replace(b"\n", b"") * (2 * 1024 * 1024 // 254)
    client = connect(server)
    client.envelope()
    client.send(bdat(body, last=True))
    assert _QUEUED.match(client.reply())
    assert only_message(server).data == body


def test_written_a_byte_at_a_time(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    body = b"Subject: slow\r\n\r\n.\r\nbyte by byte\r\n"
    client = connect(server)
    client.envelope()
    for index, octet in enumerate(bdat(body, last=True)):
        client.send(bytes([octet]))
        if index == 3:
            assert client.silent()  # no reply before the chunk is complete
    assert _QUEUED.match(client.reply())
    assert only_message(server).data == body


def test_pipelined_transactions_in_one_write(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    first = b"Subject: first\r\n\r\nMAIL FROM:<not@a.command>\r\n"
    second = b"Subject: second\r\n\r\n.\r\n"
    client = connect(server)
    client.send(
        b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n"
        + bdat(first[:10]) + bdat(first[10:], last=True)
        + b"MAIL FROM:<d@example.com>\r\nRCPT TO:<e@example.com>\r\n" + bdat(second, last=True)
        + b"NOOP\r\n"
    )
    replies = client.replies(9)
    assert replies[:4] == [
        b"250 2.1.0 Sender OK", b"250 2.1.5 Recipient OK", b"250 2.1.5 Recipient OK",
        b"250 2.0.0 10 octets received",
    ]
    assert _QUEUED.match(replies[4]) and _QUEUED.match(replies[7])
    assert replies[5:7] == [b"250 2.1.0 Sender OK", b"250 2.1.5 Recipient OK"]
    assert replies[8] == b"250 2.0.0 Ok"
    one, two = server.wait_for(2)
    assert (one.recipients, one.data, one.mail_options) == (
        ("b@example.com", "c@example.com"), first, ("BODY=8BITMIME",)
    )
    assert (two.sender, two.data, two.mail_options) == ("d@example.com", second, ())
    # Commands are recorded, chunk octets are not.
    assert server.commands == [[
        b"EHLO client.example", b"MAIL FROM:<a@example.com> BODY=8BITMIME", b"RCPT TO:<b@example.com>",
        b"RCPT TO:<c@example.com>", b"BDAT 10", b"BDAT %d LAST" % (len(first) - 10),
        b"MAIL FROM:<d@example.com>", b"RCPT TO:<e@example.com>", b"BDAT %d LAST" % len(second), b"NOOP",
    ]]


def test_data_and_bdat_in_one_session(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    client = connect(server)
    client.send(_ENVELOPE + b"DATA\r\n")
    assert client.replies(3)[2].startswith(b"354 ")
    client.send(b"Subject: by data\r\n\r\n..stuffed\r\n.\r\n" + _ENVELOPE + bdat(b"..kept\r\n", last=True))
    replies = client.replies(4)
    assert _QUEUED.match(replies[0]) and _QUEUED.match(replies[3])
    by_data, by_bdat = server.wait_for(2)
    assert (by_data.via, by_data.chunks) == ("DATA", ())
    assert by_data.data == b"Subject: by data\r\n\r\n.stuffed\r\n"
    assert (by_bdat.via, by_bdat.chunks, by_bdat.data) == ("BDAT", (8,), b"..kept\r\n")


def test_over_implicit_tls(smtp_server_factory: ServerFactory, connect: Callable[..., Client]) -> None:
    server = smtp_server_factory(tls="implicit", extensions=_CHUNKING)
    client = connect(server)
    client.envelope()
    client.send(bdat(b"Subject: tls\r\n") + bdat(b"\r\n\x00.\r\n", last=True) + b"NOOP\r\n")
    replies = client.replies(3)
    assert replies[0] == b"250 2.0.0 14 octets received" and _QUEUED.match(replies[1])
    received = only_message(server)
    assert received.tls and received.data == b"Subject: tls\r\n\r\n\x00.\r\n"


def test_smtplib_sees_chunking_and_can_send_a_chunk(server: SMTPTestServer) -> None:
    body = b"Subject: smtplib\r\n\r\n.not stuffed\r\n"
    with smtplib.SMTP("127.0.0.1", server.port, timeout=_READ_TIMEOUT) as client:
        client.ehlo()
        assert client.has_extn("chunking")
        assert client.mail("a@example.com")[0] == 250
        assert client.rcpt("b@example.com")[0] == 250
        # smtplib has no BDAT: the command and its octets by hand, the reply by smtplib.
        client.send(bdat(body, last=True))
        code, text = client.getreply()
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as T")
    assert only_message(server).data == body


# -- refusals ----------------------------------------------------------------------------------


def test_bdat_without_a_transaction_consumes_the_octets(
    server: SMTPTestServer, connect: Callable[..., Client]
) -> None:
    client = connect(server)
    # The octets hold commands: read as commands, they would be answered.
    client.send(
        bdat(b"QUIT\r\n", last=True) + b"MAIL FROM:<a@example.com>\r\n" + bdat(b"RSET\r\n") + b"NOOP\r\n"
    )
    assert client.replies(4) == [
        _NO_TRANSACTION, b"250 2.1.0 Sender OK", _NO_TRANSACTION, b"250 2.0.0 Ok",  # a sender is not enough
    ]
    assert server.outbox == []


@pytest.mark.parametrize(
    "arguments", [b"", b"x", b"-1", b"+5", b"5 NEXT", b"5 LAST more", b"\xd9\xa3", b"LAST"]
)
def test_bad_syntax_is_501(server: SMTPTestServer, connect: Callable[..., Client], arguments: bytes) -> None:
    client = connect(server)
    client.envelope()
    assert client.command(b"BDAT " + arguments) == b"501 5.5.4 Syntax: BDAT <size> [LAST]"
    # The transaction is untouched: a good BDAT still completes it.
    client.send(bdat(b"x\r\n", last=True))
    assert _QUEUED.match(client.reply())
    assert only_message(server).data == b"x\r\n"


def test_last_is_case_insensitive(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    client = connect(server)
    client.envelope()
    client.send(b"bdat 3 last\r\nx\r\n")
    assert _QUEUED.match(client.reply())


def test_bdat_after_last_is_503(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    client = connect(server)
    client.envelope()
    client.send(bdat(b"x\r\n", last=True) + bdat(b"y\r\n") + b"NOOP\r\n")
    replies = client.replies(3)
    assert _QUEUED.match(replies[0])
    assert replies[1:] == [_NO_TRANSACTION, b"250 2.0.0 Ok"]
    assert only_message(server).data == b"x\r\n"


def test_data_after_bdat_is_503_and_ends_the_transaction(
    server: SMTPTestServer, connect: Callable[..., Client]
) -> None:
    client = connect(server)
    client.envelope()
    client.send(bdat(b"part\r\n") + b"DATA\r\n" + bdat(b"more\r\n", last=True) + b"RSET\r\n")
    assert client.replies(4) == [
        b"250 2.0.0 6 octets received",
        b"503 5.5.1 Bad sequence of commands: DATA after BDAT",
        _NO_TRANSACTION,
        b"250 2.0.0 Ok",
    ]
    client.envelope()
    client.send(bdat(b"fresh\r\n", last=True))
    assert _QUEUED.match(client.reply())
    assert only_message(server).data == b"fresh\r\n"


def test_rcpt_after_bdat_is_503(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    client = connect(server)
    client.envelope()
    client.send(bdat(b"a") + b"RCPT TO:<late@example.com>\r\n" + bdat(b"b", last=True))
    replies = client.replies(3)
    assert replies[1] == b"503 5.5.1 Bad sequence of commands: RCPT TO after BDAT"
    assert _QUEUED.match(replies[2])
    received = only_message(server)
    assert received.recipients == ("b@example.com",) and received.data == b"ab"


@pytest.mark.parametrize("reset", [b"RSET", b"EHLO again.example"])
def test_reset_drops_the_chunks_so_far(
    server: SMTPTestServer, connect: Callable[..., Client], reset: bytes
) -> None:
    client = connect(server)
    client.envelope()
    client.send(bdat(b"old chunk\r\n"))
    assert client.reply() == b"250 2.0.0 11 octets received"
    assert client.command(reset).startswith(b"250")
    assert client.command(b"BDAT 0 LAST") == _NO_TRANSACTION
    client.envelope()
    client.send(bdat(b"new\r\n", last=True))
    assert _QUEUED.match(client.reply())
    assert only_message(server).data == b"new\r\n"


def test_over_the_size_limit_is_552_with_the_octets_consumed(
    smtp_server_factory: ServerFactory, connect: Callable[..., Client]
) -> None:
    server = smtp_server_factory(tls="none", extensions=(*_CHUNKING, "SIZE 100"))
    client = connect(server)
    client.envelope()
    # 60 + 60 > 100: the second chunk is refused, and so is every later one up to LAST.
    client.send(bdat(b"a" * 60) + bdat(b"QUIT\r\n" * 10) + bdat(b"c" * 10, last=True) + b"NOOP\r\n")
    assert client.replies(4) == [
        b"250 2.0.0 60 octets received",
        b"552 5.3.4 Message size exceeds fixed limit",
        b"552 5.3.4 Message size exceeds fixed limit",
        b"250 2.0.0 Ok",
    ]
    # LAST ended the failed transaction; exactly the limit is fine.
    client.envelope()
    client.send(bdat(b"d" * 40) + bdat(b"e" * 60, last=True))
    assert client.reply() == b"250 2.0.0 40 octets received" and _QUEUED.match(client.reply())
    assert only_message(server).data == b"d" * 40 + b"e" * 60


# -- scripted faults -----------------------------------------------------------------------------


def test_fail_data_refuses_each_chunk_of_the_message(
    server: SMTPTestServer, connect: Callable[..., Client]
) -> None:
    server.fail("data", 451, "4.3.0 Try again later", times=1)
    client = connect(server)
    client.envelope()
    client.send(bdat(b"NOOP\r\n") + bdat(b"NOOP\r\n") + bdat(b"x", last=True) + b"NOOP\r\n")
    assert client.replies(4) == [b"451 4.3.0 Try again later"] * 3 + [b"250 2.0.0 Ok"]
    assert server.outbox == []
    # times=1 counted one message: the next goes through.
    client.envelope()
    client.send(bdat(b"y", last=True))
    assert _QUEUED.match(client.reply())
    assert only_message(server).data == b"y"


def test_fail_end_of_data_answers_last(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    server.fail("end-of-data", 554, "5.7.1 Rejected")
    client = connect(server)
    client.envelope()
    client.send(bdat(b"first ") + bdat(b"last", last=True) + b"NOOP\r\n")
    assert client.replies(3) == [b"250 2.0.0 6 octets received", b"554 5.7.1 Rejected", b"250 2.0.0 Ok"]
    assert server.outbox == []
    assert client.command(b"BDAT 0 LAST").startswith(b"503 ")  # LAST ended the transaction


def test_drop_data_closes_at_the_bdat_command(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    server.drop("data")
    client = connect(server)
    client.envelope()
    client.send(bdat(b"x", last=True))
    assert client.closed()
    assert server.outbox == []


def test_drop_end_of_data_records_the_message_first(
    server: SMTPTestServer, connect: Callable[..., Client]
) -> None:
    server.drop("end-of-data")
    client = connect(server)
    client.envelope()
    client.send(bdat(b"one "))
    # Read before the drop: the reset that aborts the connection discards unread replies.
    assert client.reply() == b"250 2.0.0 4 octets received"
    client.send(bdat(b"two", last=True))
    assert client.closed()
    received = only_message(server)
    assert received.data == b"one two" and received.chunks == (4, 3)


def test_stall_data_never_answers_the_bdat(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    server.stall("data")
    client = connect(server)
    client.envelope()
    client.send(bdat(b"x", last=True) + b"NOOP\r\n")
    assert client.silent()
    assert server.outbox == []


def test_stall_end_of_data_records_then_never_answers(
    server: SMTPTestServer, connect: Callable[..., Client]
) -> None:
    server.stall("end-of-data")
    client = connect(server)
    client.envelope()
    client.send(bdat(b"stalled", last=True) + b"NOOP\r\n")
    assert only_message(server).data == b"stalled"
    assert client.silent()


def test_a_refused_greeting_still_hangs_up(smtp_server_factory: ServerFactory) -> None:
    # The stream that reads BDAT reads everything: what happens before any line still holds.
    server = smtp_server_factory(tls="none", extensions=_CHUNKING)
    server.fail("greeting", 554, "5.3.2 Not now")
    with socket.create_connection(("127.0.0.1", server.port), timeout=_READ_TIMEOUT) as sock:
        reader = sock.makefile("rb")
        assert reader.readline(_MAX_LINE) == b"554 5.3.2 Not now\r\n"
        assert reader.readline(_MAX_LINE) == b""
        reader.close()


def test_lines_after_quit_are_not_read(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    client = connect(server)
    client.send(b"QUIT\r\nNOOP\r\n")
    assert client.reply() == b"221 2.0.0 Bye"
    assert client.closed()
    assert server.commands == [[b"EHLO client.example", b"QUIT"]]


def test_an_overlong_line_is_still_refused(server: SMTPTestServer, connect: Callable[..., Client]) -> None:
    # How many 500s follow depends on how the read is split (see the stream tests below).
    client = connect(server)
    client.send(b"NOOP " + b"x" * (1024 * 1024) + b"\r\n")
    assert client.reply() == b"500 Line too long"


# -- the stream's splitting, without sockets (where TCP would decide how reads are cut) -------------


class _Session:
    """A stand-in for the session: records what the stream hands on, runs BDAT commands."""

    MAX_LENGTH = 16

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []
        self.current: Envelope | None = Envelope("a@example.com", ("b@example.com",), (), key=object())
        self.stream = ChunkingStream(self)

    def lineReceived(self, line: bytes) -> None:
        self.events.append(("line", line))
        if line.startswith(b"BDAT "):
            self.stream.command(line[5:])

    def lineLengthExceeded(self, line: bytes) -> None:
        self.events.append(("too long", line))

    def resetTimeout(self) -> None:
        return None

    def sendCode(self, code: int, message: bytes = b"") -> None:
        self.events.append((code, message))

    def listening(self) -> bool:
        return True

    def envelope(self) -> Envelope | None:
        return self.current

    def end_envelope(self) -> None:
        self.current = None

    def take_fault(self, stage: str) -> Fault | None:
        return None

    def enact(self, fault: Fault) -> None:
        raise AssertionError("no fault is scripted here")

    def size_limit(self) -> int:
        return 0

    def accept(self, envelope: Envelope, data: bytes, raw: bytes, chunks: tuple[int, ...] | None) -> None:
        self.events.append(("accept", data, chunks))


def test_stream_splits_the_same_whatever_the_reads() -> None:
    script = (
        b"NOOP\r\nBDAT 5\r\n" + b"\r\n.\r\n" + b"BDAT 3 LAST\r\n" + b"ab\n"
        + b"NOOP\r\nBDAT 0\r\nRSET\r\n"
    )
    expected = [
        ("line", b"NOOP"), ("line", b"BDAT 5"), (250, b"2.0.0 5 octets received"),
        ("line", b"BDAT 3 LAST"), ("accept", b"\r\n.\r\nab\n", (5, 3)),
        ("line", b"NOOP"), ("line", b"BDAT 0"),
        (503, _NO_TRANSACTION[4:]),  # LAST ended the transaction
        ("line", b"RSET"),
    ]
    whole = _Session()
    whole.stream.received(script)
    assert whole.events == expected
    for cut in range(1, len(script)):
        split = _Session()
        split.stream.received(script[:cut])
        split.stream.received(script[cut:])
        assert split.events == expected, cut
    byte_by_byte = _Session()
    for octet in script:
        byte_by_byte.stream.received(bytes([octet]))
    assert byte_by_byte.events == expected


def test_stream_overlong_lines_as_line_only_receiver() -> None:
    session = _Session()
    # A line over MAX_LENGTH: refused, and the read's other complete lines go with it.
    session.stream.received(b"x" * 17 + b"\r\nNOOP\r\npart")
    session.stream.received(b"ial\r\n")
    assert session.events == [("too long", b"x" * 17), ("line", b"partial")]
    # An unfinished line over MAX_LENGTH: refused as it grows, and kept.
    session.events.clear()
    session.stream.received(b"y" * 17)
    assert session.events == [("too long", b"y" * 17)]
    # A chunk is no line: any length.
    session = _Session()
    session.stream.received(b"BDAT 40 LAST\r\n" + b"z" * 40)
    assert session.events == [("line", b"BDAT 40 LAST"), ("accept", b"z" * 40, (40,))]
