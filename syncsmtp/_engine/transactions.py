"""Transactions on a set-up session: one queue of outstanding commands.

Every command written pushes what its reply will mean; replies are matched
in order. Without PIPELINING the queue holds one command at a time; with it,
MAIL, every RCPT and DATA (or, with CHUNKING, ``BDAT <n> LAST`` and the
message itself) go in one write, and a one-shot send's QUIT follows the
message. The rule no shortcut breaks: ``maybe_delivered`` is True once a
message's content was completely written, until a well-formed 4xx or 5xx
reply to it says otherwise.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

from twisted.python.failure import Failure

from .. import _replies
from .._wire import CHUNK_SIZE, iter_bdat, iter_encoded
from ..errors import SMTPError
from ..message import Envelope
from ..result import Reply, SendResult
from . import failures
from .capabilities import size_limit
from .producer import DataProducer
from .progress import Progress
from .queue import CommandQueue, Handler
from .transcript import Lines

__all__ = ["Outcome", "Transaction", "Transactions"]


class Outcome(Protocol):
    """Where a message's outcome goes, once: a Deferred (a one-shot send's),
    or an object as small with the same three names (a pool's)."""

    @property
    def called(self) -> bool: ...
    def callback(self, result: SendResult) -> None: ...
    def errback(self, fail: Failure) -> None: ...


class Transaction:
    """One message: its envelope, where it stands and what the server said."""

    __slots__ = (
        "accepted",
        "done",
        "envelope",
        "mail_reply",
        "progress",
        "quit_after",
        "refusal",
        "refused",
        "refused_after_data",
        "started",
        "transcript",
    )

    def __init__(self, envelope: Envelope, progress: Progress, done: Outcome,
                 quit_after: bool, started: float, transcript: Lines) -> None:
        self.envelope = envelope
        self.progress = progress
        self.done = done
        self.quit_after = quit_after
        self.started = started
        #: Its lines of the session's transcript (see Transcript.open).
        self.transcript = transcript
        self.accepted: list[str] = []
        self.refused: dict[str, Reply] = {}
        self.mail_reply: tuple[int, bytes] | None = None
        # A refusal of a chunk before the last (BDAT): the message's error.
        self.refusal: SMTPError | None = None
        # A well-formed 4xx/5xx answered the content: not delivered.
        self.refused_after_data = False

    def stage(self, stage: str) -> None:
        self.progress.stage = stage


class Transactions(CommandQueue):
    """Messages on one session, through its command queue."""

    # -- a transaction ------------------------------------------------------------------------

    def refusal(self, envelope: Envelope) -> SMTPError | None:
        """Why this server cannot take the message, known before anything is sent."""
        session = self._session
        caps, policy = session.capabilities, session.policy
        # policy.address is formatted only for an error: this runs for every message.
        if envelope.international and b"SMTPUTF8" not in caps:
            return failures.smtputf8_missing(policy.address)
        if envelope.require_tls:
            if session.tls is None or not policy.verify:
                return failures.requiretls_without_tls(policy.address, session.tls is not None)
            if b"REQUIRETLS" not in caps:
                return failures.requiretls_missing(policy.address)
        if envelope.dsn is not None and envelope.dsn.required and b"DSN" not in caps:
            return failures.dsn_missing(policy.address)
        limit = size_limit(caps)
        if limit is not None and limit < envelope.size:
            return failures.too_big(policy.address, envelope.size, limit)
        return None

    def start(self, tx: Transaction, auth: tuple[bytes, Callable[[int, bytes], bool]] | None = None,
              follows: bool = False) -> None:
        """Send ``tx``. With ``auth`` (PIPELINING only: the AUTH command with its
        initial response, and what judges its reply), AUTH goes first in the
        same write; the content leaves only once AUTH has succeeded.
        ``follows``: a message ahead of it on this connection has no outcome yet."""
        caps, envelope = self._session.capabilities, tx.envelope
        tx.stage("mail")
        error = self.refusal(envelope)
        if error is not None:
            self._over(tx, error)
            return
        params = b""
        if b"SIZE" in caps:
            params += b" SIZE=%d" % envelope.size
        if envelope.eight_bit and b"8BITMIME" in caps:
            params += b" BODY=8BITMIME"
        if envelope.international:
            params += b" SMTPUTF8"
        dsn = envelope.dsn if b"DSN" in caps else None
        if dsn is not None:
            params += dsn.mail_parameters()
        if envelope.require_tls:
            params += b" REQUIRETLS"
        encoding = "utf-8" if envelope.international else "ascii"
        mail = b"MAIL FROM:<" + envelope.sender.encode(encoding) + b">" + params
        rcpts = [b"RCPT TO:<" + r.encode(encoding) + b">" + (dsn.rcpt_parameters(r) if dsn else b"")
                 for r in envelope.recipients]
        # Behind a message sent by BDAT whose outcome is unknown, RSET first: RFC
        # 3030 does not say what a refused BDAT leaves open (RFC 1830 before it
        # called that state indeterminate). The end of DATA ends the transaction
        # whatever the reply (RFC 5321 4.1.1.4).
        rset = [b"RSET"] if self.needs_rset or (follows and self._chunking) else []
        self.needs_rset = False
        if b"PIPELINING" not in caps:
            assert auth is None
            if rset:
                self._send(rset, [lambda code, text: self._lock_step(tx, mail, rcpts)
                                  if 200 <= code < 300 else self._on_rset(tx, code, text)],
                           owner=tx.transcript)
            else:
                self._lock_step(tx, mail, rcpts)
            return
        handlers: list[Handler] = [lambda code, text: self._on_rset(tx, code, text)] if rset else []
        secret = b""
        if auth is not None:
            secret, judge = auth

            def on_auth(code: int, text: bytes) -> None:
                if judge(code, text) and self._chunking:
                    self._write_content(tx)

            handlers.append(on_auth)
        handlers.append(lambda code, text: self._on_mail(tx, code, text, None))
        handlers += [self._on_rcpt_handler(tx, r, None) for r in envelope.recipients]
        if self._chunking:
            # BDAT may follow at once (after AUTH's 235, when AUTH is in this
            # write): the server reads the chunk whatever it thought of MAIL and
            # RCPT, and refuses it when nothing is to be delivered.
            self._send([*rset, mail, *rcpts], handlers, secret=secret, owner=tx.transcript)
            tx.stage("rcpt")
            if auth is None:
                self._write_content(tx)
        else:
            self._send([*rset, mail, *rcpts, b"DATA"],
                       [*handlers, lambda code, text: self._on_data_pipelined(tx, code, text)],
                       secret=secret, owner=tx.transcript)
            tx.stage("rcpt")

    @property
    def _chunking(self) -> bool:
        return b"CHUNKING" in self._session.capabilities and self._session.policy.chunking

    def _on_rset(self, tx: Transaction, code: int, text: bytes) -> None:
        if not 200 <= code < 300:
            reply = Reply.parse(code, text)
            self._fatal(tx, failures.rset_refused(self._session.policy.address, reply))

    # Lock-step: one command, one reply.

    def _lock_step(self, tx: Transaction, mail: bytes, rcpts: list[bytes]) -> None:
        pending = deque(zip(tx.envelope.recipients, rcpts, strict=True))
        after_mail = functools.partial(self._first_rcpt, tx, pending)
        self._send([mail], [lambda code, text: self._on_mail(tx, code, text, after_mail)],
                   owner=tx.transcript)

    def _first_rcpt(self, tx: Transaction, pending: deque[tuple[str, bytes]]) -> None:
        tx.stage("rcpt")
        self._next_rcpt(tx, pending)

    def _next_rcpt(self, tx: Transaction, pending: deque[tuple[str, bytes]]) -> None:
        # A method, not a closure that calls itself: that would be a reference
        # cycle, left for the cycle collector.
        if pending:
            address, line = pending.popleft()
            then = functools.partial(self._next_rcpt, tx, pending)
            self._send([line], [self._on_rcpt_handler(tx, address, then)], owner=tx.transcript)
            return
        if not tx.accepted:
            self._over(tx, failures.recipients_refused(self._session.policy.address, tx.refused))
            return
        if self._chunking:
            self._write_content(tx)
            return
        tx.stage("data")
        self._send([b"DATA"], [lambda code, text: self._on_data(tx, code, text)], owner=tx.transcript)

    def _on_mail(self, tx: Transaction, code: int, text: bytes, then: Callable[[], None] | None) -> None:
        tx.mail_reply = (code, text)  # parsed only when it is a refusal
        if then is None:  # pipelined: judged with the last reply
            return
        if 200 <= code < 300:
            then()
        else:
            self._over(tx, self._sender_error(tx))

    def _on_rcpt_handler(self, tx: Transaction, address: str, then: Callable[[], None] | None) -> Handler:
        def on_rcpt(code: int, text: bytes) -> None:
            if 200 <= code < 300:
                tx.accepted.append(address)
            else:
                tx.refused[address] = Reply.parse(code, text)
            if then is not None:
                then()
        return on_rcpt

    def _sender_error(self, tx: Transaction) -> SMTPError:
        assert tx.mail_reply is not None
        reply = Reply.parse(*tx.mail_reply)
        error = failures.sender_refused(self._session.policy.address, tx.envelope.sender, reply)
        error.stage = "mail"
        return error

    def _envelope_error(self, tx: Transaction) -> SMTPError | None:
        """Why nothing can be delivered, judged from MAIL's and the RCPTs' replies."""
        assert tx.mail_reply is not None
        if not 200 <= tx.mail_reply[0] < 300:
            return self._sender_error(tx)
        if not tx.accepted:
            error = failures.recipients_refused(self._session.policy.address, tx.refused)
            error.stage = "rcpt"
            return error
        return None

    # DATA

    def _on_data_pipelined(self, tx: Transaction, code: int, text: bytes) -> None:
        error = self._envelope_error(tx)
        if error is None:
            self._on_data(tx, code, text)
        elif code == 354:
            # DATA was taken with nothing to deliver: end it empty (RFC 2920 section 3.1).
            self._send([b"."], [lambda _code, _text: self._over(tx, error)], owner=tx.transcript)
        else:
            self._over(tx, error)

    def _on_data(self, tx: Transaction, code: int, text: bytes) -> None:
        policy = self._session.policy
        if code != 354:
            self._over(tx, failures.data_refused(policy.address, "DATA", Reply.parse(code, text)))
        elif self._session.authenticated_with is None and policy.auth_required:
            # AUTH went in the same write and did not succeed: the data must not follow.
            self._fatal(tx, failures.auth_not_confirmed(policy.address))
        elif self._session.more_to_read():
            # Sent before the server could see any data; read after the dot it
            # would pass for the message's answer.
            self._fatal(tx, failures.early_reply(policy.address, "354"))
        else:
            self._write_content(tx)

    # The content, after DATA's 354 or as BDAT chunks.

    def _write_content(self, tx: Transaction) -> None:
        session = self._session
        tx.stage("message")
        how = b" in BDAT chunks" if self._chunking else b""
        session.conversation.note(b"C: <%d bytes of message data%s>" % (tx.envelope.size, how), tx.transcript)
        trailer = b""
        chunks: Iterator[bytes]
        if tx.quit_after and b"PIPELINING" in session.capabilities:
            # QUIT may follow the message in the same write (RFC 2920).
            trailer, self.quit_sent = b"QUIT\r\n", True
        if self._chunking:
            chunks = iter_bdat(tx.envelope.parts, trailer=trailer)

            def writing(last: bool) -> None:
                self._expect(lambda code, text: self._on_chunk(tx, code, text, last), tx.transcript)
        else:
            chunks = iter_encoded(tx.envelope.parts, trailer=trailer)
            self._expect(lambda code, text: self._on_final(tx, code, text), tx.transcript)

            def writing(last: bool) -> None:
                pass

        if tx.envelope.size <= CHUNK_SIZE:
            # Small: written now rather than through a producer's extra loop turn.
            # Dot-stuffing can make it one chunk more (the terminator's).
            pieces = list(chunks)
            for number in range(len(pieces)):
                writing(number == len(pieces) - 1)
            session.write(b"".join(pieces))
            self._content_written(tx)
            return
        session.flush_held()  # the producer writes to the transport itself
        self._producer = DataProducer(session.transport, chunks, writing,
                                      lambda: self._content_written(tx), moved=session.data_moved)
        self._producer.start()

    def _content_written(self, tx: Transaction) -> None:
        self._producer = None
        if not self._chunking:
            self._session.conversation.note(b"C: .", tx.transcript)
        if self.quit_sent:
            self._session.conversation.note(b"C: QUIT")
        tx.stage("end-of-data")
        self._session.content_written()

    def _on_chunk(self, tx: Transaction, code: int, text: bytes, last: bool) -> None:
        if not last:
            if not 200 <= code < 300 and tx.refusal is None:
                tx.refusal = failures.data_refused(self._session.policy.address, "BDAT",
                                                   Reply.parse(code, text))
            return
        error = self._envelope_error(tx) or tx.refusal
        if error is None:
            self._on_final(tx, code, text)
            return
        tx.refused_after_data = _replies.is_refusal(code)
        self._over(tx, error)

    def _on_final(self, tx: Transaction, code: int, text: bytes) -> None:
        session = self._session
        reply = Reply.parse(code, text)
        if 200 <= code < 300:
            result = SendResult(
                accepted=tuple(tx.accepted),
                refused=tx.refused,
                reply=reply,
                message_id=tx.envelope.message_id,
                elapsed=session.now() - tx.started,
                tls=session.tls,
                auth_mechanism=session.authenticated_with,
                host=session.policy.host,
                port=session.policy.effective_port,
                transcript=session.conversation.lines(tx.transcript),
            )
            session.transaction_over(tx, result, fatal=False)
        elif _replies.is_refusal(code):
            tx.refused_after_data = True
            self._over(tx, failures.message_refused(session.policy.address, reply))
        else:
            self._fatal(tx, failures.neither_answer(session.policy.address, reply))

    # Outcomes

    def _over(self, tx: Transaction, error: SMTPError) -> None:
        self.needs_rset = True
        self._session.transaction_over(tx, error, fatal=False)

    def _fatal(self, tx: Transaction, error: SMTPError) -> None:
        self._session.transaction_over(tx, error, fatal=True)
