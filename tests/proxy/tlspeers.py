"""TLS for the tests: a test CA that issues certificates (``cryptography``), and small SIP peers
over TLS on loopback: a caller (`TlsCaller`) and a gateway (`TlsGateway`) that answers calls."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import itertools
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_ids = itertools.count(1)


@dataclass
class SigningCa:
    """A CA of its own: what it signs is trusted only by a context that loads ``cert_file``."""

    directory: Path
    name: str = "sipdispatch test CA"
    key: ec.EllipticCurvePrivateKey = field(init=False)
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @property
    def cert_file(self) -> Path:
        return self.directory / f"{self.name.replace(' ', '-')}.crt"

    def issue(
        self, common_name: str, *, names: tuple[str, ...] = ("127.0.0.1",), days: int = 1
    ) -> tuple[bytes, bytes, int]:
        """A leaf certificate for ``names`` (IP addresses or DNS names): PEM certificate,
        PEM key, serial number."""
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        now = datetime.datetime.now(datetime.UTC)
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem, serial

    def issue_files(self, common_name: str, **options: object) -> tuple[Path, Path, int]:
        cert, key, serial = self.issue(common_name, **options)  # type: ignore[arg-type]
        cert_file = self.directory / f"{common_name}.crt"
        key_file = self.directory / f"{common_name}.key"
        cert_file.write_bytes(cert)
        key_file.write_bytes(key)
        return cert_file, key_file, serial


def client_context(ca: SigningCa | None) -> ssl.SSLContext:
    """A context that trusts ``ca`` only (None: trusts anything)."""
    if ca is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(ca.cert_file))


# ---------------------------------------------------------------------- SIP over a stream


async def read_message(reader: asyncio.StreamReader) -> str:
    """One SIP message from a stream (framed by Content-Length)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    match = re.search(r"^(?:Content-Length|l)\s*:\s*(\d+)", head, re.I | re.M)
    length = int(match.group(1)) if match else 0
    body = (await reader.readexactly(length)).decode() if length else ""
    return head + body


def header(message: str, name: str) -> str:
    for line in message.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def headers(message: str, name: str) -> list[str]:
    values = []
    for line in message.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            values.extend(v.strip() for v in value.split(","))
    return values


def status_of(message: str) -> int:
    return int(message.split(" ", 2)[1]) if message.startswith("SIP/2.0 ") else 0


def reply(request: str, status: int, reason: str, extra: str = "", to_tag: str = "") -> str:
    copied = "".join(
        f"{line}\r\n"
        for line in request.split("\r\n")[1:]
        if line.split(":", 1)[0].strip().lower()
        in ("via", "from", "call-id", "cseq", "record-route")
    )
    to = header(request, "To")
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    return f"SIP/2.0 {status} {reason}\r\n{copied}To: {to}\r\n{extra}Content-Length: 0\r\n\r\n"


class TlsCaller:
    """A SIP caller over one TLS connection to the proxy: INVITE, ACK, BYE, and it answers a
    BYE the other side sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        host, port = writer.get_extra_info("sockname")[:2]
        self.local = f"{host}:{port}"
        self.proxy = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        self.peer_cert: dict[str, object] = writer.get_extra_info("peercert") or {}
        self.peer_der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        self.received: list[str] = []

    @classmethod
    async def connect(cls, host: str, port: int, ca: SigningCa) -> TlsCaller:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=client_context(ca), server_hostname=host
        )
        return cls(reader, writer)

    @property
    def serial(self) -> int:
        return x509.load_der_x509_certificate(self.peer_der).serial_number

    async def request(self, text: str) -> None:
        self.writer.write(text.encode())
        await self.writer.drain()

    async def next(self, wait: float = 5.0) -> str:
        message = await asyncio.wait_for(read_message(self.reader), wait)
        self.received.append(message)
        return message

    async def final(self, wait: float = 5.0) -> str:
        while True:
            message = await self.next(wait)
            if status_of(message) >= 200:
                return message

    def build(
        self, method: str, uri: str, *, call_id: str, cseq: int, from_tag: str, to: str, route: str
    ) -> str:
        branch = f"z9hG4bK-tls-{next(_ids)}"
        routes = f"Route: {route}\r\n" if route else ""
        return (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {self.local};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n{routes}"
            f"From: <sip:caller@{self.local}>;tag={from_tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:caller@{self.local};transport=tls>\r\n"
            f"Content-Length: 0\r\n\r\n"
        )

    async def call(self, uri: str, call_id: str) -> Dialog:
        """INVITE ``uri`` and ACK its 200; the dialog (raises if the answer is not 200)."""
        from_tag = f"caller-{next(_ids)}"
        invite = self.build(
            "INVITE", uri, call_id=call_id, cseq=1, from_tag=from_tag, to=f"<{uri}>", route=""
        )
        await self.request(invite)
        answer = await self.final()
        if status_of(answer) != 200:
            raise AssertionError(f"INVITE answered {answer.splitlines()[0]}")
        contact = re.search(r"<([^>]+)>", header(answer, "Contact"))
        assert contact is not None, answer
        dialog = Dialog(
            call_id,
            from_tag,
            header(answer, "To"),
            contact.group(1),
            headers(answer, "Record-Route"),
        )
        await self.request(self._ack(dialog))
        return dialog

    def _ack(self, dialog: Dialog) -> str:
        return self.build(
            "ACK",
            dialog.remote_target,
            call_id=dialog.call_id,
            cseq=1,
            from_tag=dialog.from_tag,
            to=dialog.to,
            route=", ".join(dialog.route_set),
        )

    async def bye(self, dialog: Dialog) -> int:
        await self.request(
            self.build(
                "BYE",
                dialog.remote_target,
                call_id=dialog.call_id,
                cseq=2,
                from_tag=dialog.from_tag,
                to=dialog.to,
                route=", ".join(dialog.route_set),
            )
        )
        return status_of(await self.final())

    async def answer_bye(self, wait: float = 10.0) -> str:
        """Wait for a BYE from the other side and answer it 200; the BYE."""
        while True:
            message = await self.next(wait)
            if message.startswith("BYE "):
                await self.request(reply(message, 200, "OK"))
                return message

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@dataclass
class Dialog:
    call_id: str
    from_tag: str
    to: str
    remote_target: str
    route_set: list[str]


class TlsGateway:
    """A SIP gateway over TLS: answers OPTIONS, INVITE (200), ACK (nothing) and BYE (200);
    keeps what it received, and the TLS details of each connection."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.received: list[str] = []
        self.server_names: list[str | None] = []
        self.context.sni_callback = self._sni
        self.server: asyncio.Server | None = None
        self.port = 0

    def _sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def start(self) -> TlsGateway:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def uri(self, scheme: str = "sip") -> str:
        suffix = ";transport=tls" if scheme == "sip" else ""
        return f"{scheme}:127.0.0.1:{self.port}{suffix}"

    def requests(self, method: str) -> list[str]:
        return [m for m in self.received if m.startswith(f"{method} ")]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                message = await read_message(reader)
                self.received.append(message)
                method = message.split(" ", 1)[0]
                if method == "ACK":
                    continue
                contact = f"Contact: <sip:gw@127.0.0.1:{self.port};transport=tls>\r\n"
                writer.write(reply(message, 200, "OK", contact, to_tag="gw").encode())
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
