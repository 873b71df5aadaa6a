"""Where syncsmtp relies on Twisted's internals, in one place, and why.

Each function here reaches past Twisted's public API. ``tests/test_twisted_internals.py``
checks every one against the installed Twisted, so that an upgrade that moves
them fails a test instead of silently changing behaviour.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import tcp
from twisted.mail import smtp

__all__ = [
    "ESMTPClient",
    "acknowledge_reads_at_once",
    "discard_unread",
    "expect",
    "forget_reply_handlers",
    "mark_tls_started",
    "on_refusal",
    "release_transport",
    "start_client_tls",
    "tcp_socket",
    "tls_reader",
    "tls_started",
    "tls_writes_at_once",
    "unread",
    "write_at_once",
]

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


#: Names of ``twisted.mail.smtp.ESMTPClient``'s namespace that :data:`ESMTPClient` leaves out.
DROPPED_FROM_ESMTP_CLIENT = frozenset({"__getattr__", "__setattr__", "__dict__", "__weakref__"})

#: ``twisted.mail.smtp.ESMTPClient`` without its ``__getattr__`` and ``__setattr__``:
#: a class of its own, on the same base (``SMTPClient``), holding every other
#: name of ESMTPClient's namespace (the same functions).
#:
#: Why: those two methods only warn about ``tlsMode``, deprecated since Twisted
#: 13.0, but a class with a Python ``__getattr__`` gets CPython's generic
#: attribute hook, and the interpreter never specializes a read of an
#: attribute of its instances (so in CPython 3.11): every ``self.x`` in
#: every method of a session, Twisted's and syncsmtp's, took the slow path.
#: ESMTPClient's methods call their bases by name, never through ``super()``,
#: so they work unchanged on this class; ``tests/test_twisted_internals.py``
#: checks that this still holds.
if TYPE_CHECKING:  # to a type checker it is ESMTPClient itself
    ESMTPClient = smtp.ESMTPClient
else:
    ESMTPClient = type(
        "ESMTPClient",
        smtp.ESMTPClient.__bases__,
        {name: value for name, value in vars(smtp.ESMTPClient).items()
         if name not in DROPPED_FROM_ESMTP_CLIENT},
    )


def tls_reader(transport: Any) -> Any:
    """The ``TLSMemoryBIOProtocol`` that reads the TCP connection under a TLS session.

    After ``transport.startTLS()`` (STARTTLS), Twisted's TCP transport has
    swapped its ``protocol`` for one (``twisted.internet._newtls``); with
    implicit TLS, the application protocol's transport is one, over TCP.
    """
    if getattr(transport, "TLS", False) and hasattr(transport, "socket"):
        return transport.protocol
    return transport


def tcp_socket(transport: Any) -> socket.socket | None:
    """The socket under ``transport`` (TCP, or TLS over TCP); None when there is none."""
    for layer in (transport, getattr(transport, "transport", None)):
        handle = getattr(layer, "socket", None)
        if isinstance(handle, socket.socket):
            return handle
    return None


def acknowledge_reads_at_once(transport: Any) -> Callable[[], None]:
    """Acknowledge every TCP read at once (TCP_QUICKACK) until the returned
    function is called.

    Why: right after a TLS 1.3 handshake the server sends its session
    tickets, then its next reply. The client has just written (Finished and
    EHLO), so Linux delays its ACK of the tickets (up to 40 ms), and a server
    with Nagle's algorithm on (Postfix) holds its reply until that ACK comes.
    Reads happen in the TLS layer (tickets carry no application data), so the
    hook is on the layer that reads the socket. Elsewhere than Linux, or
    without a socket, this does nothing.
    """
    handle = tcp_socket(transport)
    reader = tls_reader(transport)
    if _QUICKACK is None or handle is None or reader is None:
        return lambda: None
    read = reader.dataReceived

    def read_and_acknowledge(data: bytes) -> None:
        read(data)
        with contextlib.suppress(OSError):  # closed meanwhile
            handle.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    reader.dataReceived = read_and_acknowledge

    def stop() -> None:
        if reader.__dict__.get("dataReceived") is read_and_acknowledge:
            del reader.dataReceived

    return stop


def start_client_tls(transport: Any, context: Any) -> None:
    """Start TLS on ``transport`` in the client's role (STARTTLS).

    Why: a connection the reactor adopted (``adoptStreamConnection``, see
    :mod:`syncsmtp._dial`) is a ``tcp.Server``, whose ``startTLS`` would take
    the server's side of the handshake. Its ``normal`` argument (not part of
    ``ITLSTransport``) says whether TLS goes the transport's way; False on a
    server makes it the TLS client.
    """
    adopted = isinstance(transport, tcp.Server)
    start: Callable[..., None] = transport.startTLS
    if adopted:
        start(context, normal=False)
    else:
        start(context)


def release_transport(transport: Any) -> None:
    """Break the reference cycles Twisted leaves around a closed connection
    (``transport``: TCP, or under implicit TLS the TLS layer over TCP), so
    that it is freed by reference counting, not by the cycle collector.

    Why, cycle by cycle:

    - a connection Twisted made points at its connector, which points back
      (``tcp.BaseClient.connector``, ``BaseConnector.transport``);
    - ``twisted.internet._newtls.startTLS`` puts the TLS layer's bound
      ``getHandle`` and ``getPeerCertificate`` on the TCP transport, and the
      TLS layer points back at it;
    - the TLS layer of Twisted 24.7 aggregates small writes: its instance
      ``write`` is the bound method of an aggregator (``_aggregator``) that
      holds the layer's own write.

    Called once the connection is gone (a connector is never reconnected
    here, nothing is written any more); what is not there is left alone.
    """
    tls_layer: Any = None
    tcp_layer: Any = transport
    if not isinstance(transport, tcp.Connection):
        tls_layer, tcp_layer = transport, getattr(transport, "transport", None)
    if not isinstance(tcp_layer, tcp.Connection):
        return
    connector: Any = getattr(tcp_layer, "connector", None)
    if connector is not None and getattr(connector, "transport", None) is tcp_layer:
        connector.transport = None
    attributes: dict[str, Any] = vars(tcp_layer)
    for name in ("getHandle", "getPeerCertificate"):
        owner = getattr(attributes.get(name), "__self__", None)
        if owner is not None and owner is not tcp_layer:
            tls_layer = owner
            del attributes[name]
    if tls_layer is not None and hasattr(tls_layer, "__dict__"):
        layer_attributes: dict[str, Any] = vars(tls_layer)
        aggregator = layer_attributes.pop("_aggregator", None)
        if aggregator is not None and getattr(layer_attributes.get("write"), "__self__", None) is aggregator:
            del layer_attributes["write"]


def write_at_once(transport: Any, data: bytes) -> None:
    """Write ``data`` to a plain TCP connection's socket now when nothing is
    queued before it, and queue only what the socket did not take.

    Why: ``FileDescriptor.write`` never writes at once. It queues the bytes and
    registers the socket for writability (``epoll_ctl``); the next loop
    iteration writes them and unregisters it (``epoll_ctl`` again). For a
    command or a small message that is two system calls and one pass of the
    reactor loop more than the write itself, on every message. The buffer
    attributes read here are ``FileDescriptor``'s own (``dataBuffer``,
    ``offset``, ``_tempDataBuffer``); a TLS connection, or anything that is
    not a TCP transport with an idle buffer, takes Twisted's path unchanged.
    """
    # Exactly a TCP connection: TLS wrappers proxy attributes such as
    # ``socket`` to the connection under them.
    if not isinstance(transport, tcp.Connection) or transport.TLS:
        transport.write(data)
        return
    _send_when_idle(transport, data, transport.write)


def tls_writes_at_once(transport: Any) -> Callable[[], None]:
    """Make the TLS layer under ``transport`` write its records the way
    :func:`write_at_once` writes plain bytes, until the returned function is
    called (the hook holds the layer's own ``write``: left on, the layer
    would sit in a reference cycle after its connection is gone).

    Why: Twisted's TLS layer (``TLSMemoryBIOProtocol``) hands each record it
    produces to the connection under it with ``write``, which queues it for
    the next loop iteration: a STARTTLS + AUTH send to Postfix made 18
    ``epoll_ctl`` and 15 ``epoll_wait`` calls, and 10 and 12 with this
    (strace over 20 sends).
    Under STARTTLS that connection is ``twisted.internet._newtls._BypassTLS``
    (its ``_connection`` the TCP connection); under implicit TLS it is the TCP
    connection itself. Either way the layer's ``write`` becomes an instance
    attribute that sends at once when the connection is idle and otherwise
    calls the original. Anything else is left alone.
    """
    layer: Any = getattr(tls_reader(transport), "transport", None)
    connection = getattr(layer, "_connection", layer)
    if not isinstance(connection, tcp.Connection) or "write" in vars(layer):
        return lambda: None
    queue: Callable[[bytes], None] = layer.write

    def write(data: bytes) -> None:
        _send_when_idle(connection, data, queue)

    layer.write = write

    def stop() -> None:
        if vars(layer).get("write") is write:
            del layer.write

    return stop


def _send_when_idle(connection: Any, data: bytes, queue: Callable[[bytes], None]) -> None:
    """Send ``data`` on the TCP ``connection``'s socket when nothing waits in its
    buffer; ``queue`` (Twisted's own write) takes the rest, or all of it."""
    if (
        not connection.connected
        or connection.disconnecting
        or connection._writeDisconnected
        or connection._tempDataBuffer
        or len(connection.dataBuffer) > connection.offset
    ):
        queue(data)
        return
    try:
        sent = connection.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        # Twisted's own write meets the same error and closes the connection
        # the usual way (connectionLost with the reason).
        queue(data)
        return
    if sent < len(data):
        queue(data[sent:])


# -- twisted.mail.smtp.SMTPClient / ESMTPClient state ------------------------------------------------
#
# Session set-up (greeting, EHLO, STARTTLS, AUTH) runs on ESMTPClient's own
# state machine, which has no public way to say "the next reply goes to this
# method": each step assigns the private attributes below, as ESMTPClient's
# own methods do.


def expect(client: Any, codes: Any, ok: Callable[[int, bytes], Any],
           failed: Callable[[int, bytes], Any] | None = None) -> None:
    """The next reply goes to ``ok`` when its code is in ``codes``, else to ``failed``."""
    client._expected = codes
    client._okresponse = ok
    if failed is not None:
        client._failresponse = failed


def unread(client: Any) -> bytes:
    """What the line reader has received but not yet handed over (LineReceiver._buffer)."""
    data: bytes = client._buffer
    return data


def discard_unread(client: Any) -> None:
    client._buffer = b""


def tls_started(client: Any) -> bool:
    """Whether ESMTPClient considers the session encrypted (``_tlsMode``)."""
    return bool(client._tlsMode)


def mark_tls_started(client: Any) -> None:
    client._tlsMode = True


def forget_reply_handlers(client: Any) -> None:
    """Drop the handlers of the next reply (``_okresponse``, ``_failresponse``):
    methods bound to ``client``, held by ``client``, they keep it in a
    reference cycle after its connection is gone."""
    client._okresponse = client._failresponse = None


def on_refusal(client: Any, failed: Callable[[int, bytes], Any]) -> None:
    """A refusal of the command just sent goes to ``failed`` (``_failresponse``)."""
    client._failresponse = failed
