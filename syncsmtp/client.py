"""The blocking face: ``send()`` (plain Python in, a result or a typed error
out) and ``check()`` (what a server offers, without sending).

The reactor side is imported on the first send, not with ``import syncsmtp``,
so applications that never send (or not yet) pay nothing for Twisted.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import _dial, _messages, _reactor
from .dsn import DSN, check_options, with_options
from .errors import ConnectionLostError, SendTimeout, SMTPError
from .message import MessageInput, prepare_message
from .policy import Policy
from .result import CheckResult, SendResult

if TYPE_CHECKING:
    from ._engine import Progress

__all__ = ["DEFAULT_TIMEOUT", "check", "send"]

#: The deadline of a send when none is given, in seconds.
DEFAULT_TIMEOUT = 60.0
# The reactor enforces the deadline itself; the caller's own wait is a
# backstop for a reactor that cannot run, so it allows a little more.
_BACKSTOP_MARGIN = 2.0


def check_timeout(value: float, name: str = "timeout", where: str = "") -> float:
    """``value`` as a float, when it is a positive, finite number of seconds;
    otherwise a TypeError or ValueError that names the parameter ``name`` of
    ``where`` (such as ``"Mailer"``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(_messages.must_be(where, name, "a number of seconds", value))
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(_messages.seconds(where, name, value))
    return float(value)


def check_policy(policy: object, where: str) -> None:
    """TypeError naming ``policy`` when it is not a :class:`Policy`."""
    if not isinstance(policy, Policy):
        raise TypeError(_messages.policy_type(where, policy))


def send(
    message: MessageInput,
    policy: Policy,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    sender: str | None = None,
    recipients: Iterable[str] | str | None = None,
    dsn: DSN | None = None,
    require_tls: bool = False,
) -> SendResult:
    """Send one message and block until the server has answered it.

    ``message`` is an :class:`email.message.EmailMessage` (its headers give the
    envelope: From, To, Cc, Bcc; Bcc is not sent), or ``bytes``/``str`` with
    ``sender=`` and ``recipients=``. Those keywords also override the envelope
    of an EmailMessage.

    ``timeout`` is one deadline for the whole send, from connecting to the
    server's answer to the message; when it passes, the connection is dropped
    and :class:`~syncsmtp.SendTimeout` is raised. Ctrl-C (KeyboardInterrupt)
    cancels the send the same way.

    ``dsn`` asks for delivery status notifications (a :class:`~syncsmtp.DSN`,
    RFC 3461); ``require_tls=True`` sends the message with REQUIRETLS (RFC
    8689), which needs TLS with a verified certificate and a server that
    offers it. See :doc:`delivery-options`.

    Returns a :class:`~syncsmtp.SendResult` (some recipients may be in its
    ``refused``); raises a :class:`~syncsmtp.SMTPError` subclass on failure,
    :class:`~syncsmtp.MessageError` before connecting when the input is bad.
    """
    check_policy(policy, "send()")
    deadline = check_timeout(timeout, "timeout", "send()")
    check_options("send()", dsn, require_tls)
    envelope = prepare_message(message, sender=sender, recipients=recipients, dkim=policy.dkim)
    envelope = with_options(envelope, message, dsn, require_tls)

    _reactor.check_caller()
    from ._engine import Progress, deliver

    progress = Progress()
    dialled, time_left = _dial_first(policy, deadline)
    try:
        result: SendResult = wait_for_outcome(
            policy, progress, deadline, deliver, policy, envelope, time_left, progress, dialled,
            hand_over=True,  # it QUITs and closes after the answer
        )
    except BaseException:
        if dialled is not None:
            dialled.close()  # not adopted (a reactor that stopped): nothing is left open
        raise
    return result


def _dial_first(policy: Policy, deadline: float) -> tuple[socket.socket | None, float]:
    """The connection made in this thread when the policy's server has a
    known address (:mod:`syncsmtp._dial`), and what is left of ``deadline``;
    the deadline passing is the same error as when the reactor connects."""
    from ._engine import connect_timeout, dial_address

    address = dial_address(policy, time.time())
    if address is None:
        return None, deadline
    started = time.monotonic()
    try:
        dialled = _dial.dial(address, policy.effective_port, deadline)
    except TimeoutError:
        raise connect_timeout(policy, deadline) from None
    return dialled, max(deadline - (time.monotonic() - started), 0.001)


def check(policy: Policy, timeout: float = DEFAULT_TIMEOUT) -> CheckResult:
    """Connect to the policy's server and set up a session as a send would,
    then QUIT without sending anything; block until then, and return what
    was learnt as a :class:`~syncsmtp.CheckResult`.

    The session goes as far as the policy asks: greeting, EHLO (read before
    and after STARTTLS), TLS with certificate verification, and AUTH when the
    policy has credentials. When the certificate does not verify, a second
    session without verification and without AUTH shows what it is.

    A failure is not raised: it is the result's ``error`` (``result.ok`` is
    False), beside everything learnt before it. ``timeout`` bounds the whole
    check; only when the reactor thread itself does not answer within it is
    :class:`~syncsmtp.SendTimeout` raised. A bad ``policy`` or ``timeout`` is
    a TypeError or ValueError.
    """
    check_policy(policy, "check()")
    deadline = check_timeout(timeout, "timeout", "check()")
    _reactor.check_caller()
    from ._engine import Progress
    from ._probe import probe

    result: CheckResult = wait_for_outcome(policy, Progress(), deadline, probe, policy, deadline)
    return result


def wait_for_outcome(
    policy: Policy, progress: Progress, deadline: float, function: Callable[..., Any], *args: Any,
    hand_over: bool = False,
) -> Any:
    """Run ``function(reactor, *args)`` in the reactor thread and wait for the
    work it starts (a send, a connection, a probe), returning what it fires
    with; every failure comes out as an :class:`SMTPError`. ``hand_over``:
    as ``_reactor.run`` takes it."""
    try:
        result = _reactor.run(function, *args, timeout=deadline + _BACKSTOP_MARGIN, hand_over=hand_over)
    except SMTPError:
        raise
    except _reactor.WaitTimedOut:
        raise SendTimeout(
            f"no answer from {policy.address} within {deadline:g} s (stage {progress.stage!r})",
            host=policy.host,
            stage=progress.stage,
            maybe_delivered=progress.maybe_delivered,
        ) from None
    except _reactor.ReactorUnavailable:
        raise ConnectionLostError(
            "the reactor thread has stopped (the interpreter is exiting); nothing more can be sent",
            host=policy.host,
            stage=progress.stage,
            maybe_delivered=progress.maybe_delivered,
        ) from None
    except Exception as exc:
        # Never let a Twisted or crochet type reach the caller.
        raise SMTPError(
            f"unexpected failure while sending to {policy.address}: {exc!r}",
            host=policy.host,
            stage=progress.stage,
            maybe_delivered=progress.maybe_delivered,
        ) from exc
    return result
