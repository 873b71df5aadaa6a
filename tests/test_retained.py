"""What sending leaves behind in the caller's objects: every object the cycle
collector tracks is one it walks again at each pass, and a report of many
results, or the caller's own messages, can hold thousands of them."""

from __future__ import annotations

import email.message
import gc
import sys
from collections import Counter
from collections.abc import Callable

import pytest

import syncsmtp
from syncsmtp.message import prepare_message
from syncsmtp.testing import SMTPTestServer

ServerFactory = Callable[..., SMTPTestServer]
MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"


def _own_tracked(result: syncsmtp.SendResult, holders: Counter[int]) -> list[str]:
    """The names of the tracked objects only ``result`` refers to (``holders``:
    how many results refer to each object)."""
    return [type(item).__name__ for item in gc.get_referents(result)
            if gc.is_tracked(item) and holders[id(item)] == 1]


def test_a_result_holds_no_tracked_object_but_its_reply(smtp_server_factory: ServerFactory) -> None:
    server = smtp_server_factory(tls="none")  # a TLSInfo is shared by a connection's results only
    with syncsmtp.Mailer(server.policy(), connections=2) as mailer:
        report = mailer.send_many([(MESSAGE, "a@example.com", ["b@example.com"])] * 20, timeout=10)
    assert report.sent == 20
    results = [outcome for outcome in report.results if isinstance(outcome, syncsmtp.SendResult)]
    assert len(results) == 20
    gc.collect()  # tuples of strings are untracked by the first pass that sees them
    holders = Counter(id(item) for result in results for item in gc.get_referents(result))
    for result in results:
        assert not result.refused
        assert _own_tracked(result, holders) == ["Reply"]
    # The refused mapping of a result that refused nobody is shared, and read-only.
    assert len({id(result.refused) for result in results}) == 1
    with pytest.raises(TypeError):
        results[0].refused["x@example.com"] = results[0].reply  # type: ignore[index]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="instances always have a dict before 3.11")
def test_preparing_a_message_gives_it_no_instance_dict() -> None:
    message = email.message.EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message.set_content("body")

    def has_own_dict() -> bool:
        return any(isinstance(item, dict) and "_headers" in item for item in gc.get_referents(message))

    assert not has_own_dict()
    prepare_message(message)
    assert not has_own_dict()


def _held(matches: Callable[[object], bool]) -> int:
    """How many objects the cycle collector tracks that ``matches`` accepts,
    after a full collection."""
    gc.collect()
    return sum(1 for item in gc.get_objects() if matches(item))


def _send_thirty(mailer: syncsmtp.Mailer) -> None:
    """Ten messages one by one, then twenty through ``send_many``."""
    for number in range(10):
        mailer.send(MESSAGE + b"%d\r\n" % number, timeout=10, sender="a@example.com",
                    recipients=["b@example.com"])
    report = mailer.send_many([(MESSAGE, "a@example.com", ["b@example.com"])] * 20, timeout=10)
    assert report.sent == 20


def test_a_mailer_keeps_no_message_that_has_its_outcome(smtp_server: SMTPTestServer) -> None:
    """Sent messages are let go as soon as their outcome is known, while the
    Mailer stays open (its deadline watch keeps finished requests for a
    while, but not what they were sending)."""
    from syncsmtp.message import Envelope

    def envelopes() -> int:
        # type(), not isinstance(): the latter asks lazy objects (Django's
        # settings, in the same test process) for their __class__.
        return _held(lambda item: type(item) is Envelope)

    with syncsmtp.Mailer(smtp_server.policy(), connections=2) as mailer:
        before = envelopes()
        _send_thirty(mailer)
        assert envelopes() == before


def test_an_open_mailer_keeps_no_transcript_lines_of_messages_that_have_their_outcome(
        smtp_server: SMTPTestServer) -> None:
    """A connection lives as long as its Mailer: the lines it noted for each
    message (and its own, from set-up) are let go once no message needs them."""

    def transcripts() -> int:
        return _held(lambda item: type(item) is list and bool(item) and type(item[0]) is bytes
                     and item[0].startswith((b"S: ", b"C: ")))

    before = transcripts()  # another test's session, if one is still open
    with syncsmtp.Mailer(smtp_server.policy(), connections=1) as mailer:
        mailer.open(timeout=10)
        assert transcripts() == before + 1  # set-up's, kept for the first message
        _send_thirty(mailer)
        assert transcripts() == before
