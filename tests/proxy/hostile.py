"""Inputs that once raised out of the proxy core, each as an edit of an ordinary request.

Every one used to end in a traceback and no answer (and a closed connection over TCP); each
must now get a 400. The bare ``z9hG4bKsd`` branch (the proxy's own branch prefix with nothing
after it) is a response: it must be dropped, and counted.
"""

from __future__ import annotations

from collections.abc import Callable

SQUARED = "\u00b2".encode()  # superscript two: str.isdigit() says yes, int() says no


def request(host: str, port: int, call_id: str, transport: str = "UDP") -> bytes:
    """An ordinary INVITE to the proxy at ``host:port``, from 127.0.0.1:5999."""
    return (
        f"INVITE sip:svc@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;branch=z9hG4bK-{call_id}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag=a-{call_id}\r\n"
        "To: <sip:svc@example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:alice@127.0.0.1:5999>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _add(line: bytes) -> Callable[[bytes], bytes]:
    return lambda message: message.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + line)


#: name -> how to make the ordinary request hostile; every one must be answered 400
HOSTILE_REQUESTS: dict[str, Callable[[bytes], bytes]] = {
    "unicode-content-length": lambda m: m.replace(
        b"Content-Length: 0", b"Content-Length: " + SQUARED
    ),
    "unicode-max-forwards": lambda m: m.replace(b"Max-Forwards: 70", b"Max-Forwards: " + SQUARED),
    "unicode-expires": _add(b"Expires: " + SQUARED + b"\r\n"),
    "unicode-port": lambda m: m.replace(b"127.0.0.1:5999;", b"127.0.0.1:5" + SQUARED + b";"),
    # in a dialog (To tag), where the Route is read only when the request is routed
    "empty-route-element": lambda m: _add(b"Route: ,<sip:127.0.0.1;lr>\r\n")(
        m.replace(b"To: <sip:svc@example.com>", b"To: <sip:svc@example.com>;tag=b1")
    ),
    "control-char-max-forwards": lambda m: m.replace(b"Max-Forwards: 70", b"Max-Forwards: 70\x1d"),
}


def bare_branch_response(call_id: str, transport: str = "UDP") -> bytes:
    """A response whose top Via carries the proxy's branch prefix and nothing after it."""
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5060;branch=z9hG4bKsd\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        "To: <sip:svc@example.com>;tag=b1\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
