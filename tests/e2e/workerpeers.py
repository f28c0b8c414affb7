"""Plain-socket SIP ends for the ``--workers`` tests: a gateway answering on loopback in a
thread, and callers placing whole calls (INVITE, ACK, BYE from either end) from ports of
their own, so that the kernel's SO_REUSEPORT hash spreads them over the workers."""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field

TIMEOUT = 3.0


def headers(text: str) -> list[tuple[str, str]]:
    lines = text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    return [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(":") for line in lines)]


def header(text: str, name: str) -> str:
    return next((v for n, v in headers(text) if n == name), "")


def route_set(text: str) -> list[str]:
    """The Record-Route entries of a message, in order (one header each or comma-joined)."""
    found = []
    for name, value in headers(text):
        if name == "record-route":
            found.extend(part.strip() for part in value.split(","))
    return found


def address_of(entry: str) -> tuple[str, int]:
    """host and port of a ``<sip:host:port;...>`` entry or a Via sent-by."""
    found = re.search(r"(?:sip:|UDP )(?:[^@;>\s]*@)?([\d.]+):(\d+)", entry)
    assert found, entry
    return found.group(1), int(found.group(2))


def reply(request: str, status: str, extra: str = "") -> bytes:
    copied = "".join(
        f"{n}: {v}\r\n" for n, v in headers(request) if n in ("via", "from", "call-id", "cseq")
    )
    to = header(request, "to")
    to += "" if "tag=" in to or status.startswith("100") else ";tag=gw"
    return f"SIP/2.0 {status}\r\n{copied}To: {to}\r\n{extra}Content-Length: 0\r\n\r\n".encode()


@dataclass
class Gateway:
    """Answers OPTIONS and BYE with 200, INVITE with 100 and 200 (Record-Route copied);
    replies go to the top Via's sent-by, as RFC 3261 18.2.2 says."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(type=socket.SOCK_DGRAM))
    invites: dict[str, str] = field(default_factory=dict)  # Call-ID -> the INVITE
    acks: set[str] = field(default_factory=set)
    byes: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode()
            method = text.split(" ", 1)[0]
            via = address_of(header(text, "via"))
            call_id = header(text, "call-id")
            if method == "INVITE":
                self.invites[call_id] = text
                rr = "".join(f"Record-Route: {r}\r\n" for r in route_set(text))
                contact = f"Contact: <sip:gw@127.0.0.1:{self.port}>\r\n"
                self.sock.sendto(reply(text, "100 Trying"), via)
                self.sock.sendto(reply(text, "200 OK", rr + contact), via)
            elif method == "ACK":
                self.acks.add(call_id)
            elif method in ("BYE", "OPTIONS"):
                self.byes.add(call_id) if method == "BYE" else None
                self.sock.sendto(reply(text, "200 OK"), via)

    def hang_up(self, call_id: str) -> socket.socket:
        """Send the BYE of a call this gateway answered, from a fresh port, through the
        proxy (its Record-Route); returns the socket the 200 comes back to."""
        invite = self.invites[call_id]
        routes = route_set(invite)
        sock = socket.socket(type=socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(TIMEOUT)
        port = sock.getsockname()[1]
        target = re.search(r"<([^>]+)>", header(invite, "contact"))
        assert target
        bye = (
            f"BYE {target.group(1)} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-gwbye-{call_id}\r\n"
            "Max-Forwards: 70\r\n"
            + "".join(f"Route: {r}\r\n" for r in routes)
            + f"From: {header(invite, 'to')};tag=gw\r\nTo: {header(invite, 'from')}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(bye.encode(), address_of(routes[0]))
        return sock

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def receive(sock: socket.socket, want: str, source: tuple[str, int] | None = None) -> str:
    """The next message on ``sock`` whose first line starts with ``want`` (others skipped);
    ``source`` given: it must come from there."""
    while True:
        data, sender = sock.recvfrom(65535)
        text = data.decode()
        if text.startswith(want):
            assert source is None or sender == source, f"{want} from {sender}, not {source}"
            return text


def place_call(proxy_port: int, index: int, gateway_hangs_up: dict[str, Gateway] | None) -> str:
    """One whole call from a port of its own: INVITE, 200, ACK, then a BYE from the caller,
    or (``gateway_hangs_up`` given: the gateways by port) from the gateway that answered;
    returns the Call-ID. Raises on anything missing (TimeoutError: a lost message)."""
    with socket.socket(type=socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(TIMEOUT)
        port = sock.getsockname()[1]
        call_id = f"call-{index}-{port}"
        dialog = (
            f"From: <sip:caller@127.0.0.1>;tag=c{index}\r\nCall-ID: {call_id}\r\n"
            "Max-Forwards: 70\r\n"
        )
        proxy = ("127.0.0.1", proxy_port)
        sock.sendto(
            (
                f"INVITE sip:service@127.0.0.1:{proxy_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-inv-{call_id}\r\n"
                f"{dialog}To: <sip:service@127.0.0.1>\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:caller@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            proxy,
        )
        ok = receive(sock, "SIP/2.0 200", proxy)  # from the port sent to (RFC 3581)
        routes = list(reversed(route_set(ok)))
        target = re.search(r"<([^>]+)>", header(ok, "contact"))
        assert target, ok
        assert routes, ok
        in_dialog = f"{dialog}To: {header(ok, 'to')}\r\n" + "".join(
            f"Route: {r}\r\n" for r in routes
        )
        for method, cseq in (("ACK", "1 ACK"), ("BYE", "2 BYE")):
            if method == "BYE" and gateway_hangs_up is not None:
                break
            sock.sendto(
                (
                    f"{method} {target.group(1)} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{method}-{call_id}\r\n"
                    f"{in_dialog}CSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                address_of(routes[0]),
            )
        if gateway_hangs_up is None:
            receive(sock, "SIP/2.0 200", proxy)
            return call_id
        gateway = gateway_hangs_up[address_of(target.group(1))[1]]
        with gateway.hang_up(call_id) as hanging_up:
            bye = receive(sock, "BYE ")
            sock.sendto(reply(bye, "200 OK"), address_of(header(bye, "via")))
            receive(hanging_up, "SIP/2.0 200")
        return call_id
