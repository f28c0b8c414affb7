"""TLS: SIP over TCP with a TLS layer (RFC 3261 26.2), and the certificates it needs.

`TlsTransport` is `TcpTransport` with an ``ssl`` context on both ends: framing, limits, the
registry of connections and the sweep are TCP's. Inbound connections get the server context of
the listeners' certificate; outbound ones a client context per destination (`TlsClients`): the
set's verification (`TlsVerification`: on by default, a CA bundle, a server name) and SNI.

The certificate and key are files (a cert-manager Secret mounted in the pod): `CertificateWatch`
reads them again every few seconds and loads a changed pair into the same server context, so
new connections present the new certificate and connections already up keep theirs. A pair
that does not load (a half-written file, a key of another certificate) is checked on a scratch
context first: it is logged and the previous pair keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.dispatch.tlsverify import TlsVerification, from_attrs
from sipdispatch.dispatch.uris import parse_sip_uri
from sipdispatch.proxy.core import Address
from sipdispatch.proxy.transport.tcp import TcpTransport

__all__ = [
    "POLL_INTERVAL",
    "CertificateError",
    "CertificateWatch",
    "TlsClients",
    "TlsTransport",
    "load_pair",
    "server_context",
]

log = logging.getLogger(__name__)

#: how often the certificate and key files are read again, in seconds
POLL_INTERVAL = 2.0
#: seconds a TLS handshake may take, either way
HANDSHAKE_TIMEOUT = 10.0
_DEFAULT = TlsVerification()


class CertificateError(Exception):
    """A certificate and key that cannot serve; the text names the files and why."""


def load_pair(context: ssl.SSLContext, cert: bytes, key: bytes, origin: str) -> float:
    """Load a PEM certificate (chain) and key into ``context``; return the certificate's
    expiry (Unix seconds). The pair is tried on a scratch context first, so that a bad one
    leaves ``context`` as it was. Raises `CertificateError`."""
    try:
        expiry = x509.load_pem_x509_certificate(cert).not_valid_after_utc.timestamp()
    except ValueError as exc:
        raise CertificateError(f"{origin}: not a PEM certificate: {exc}") from None
    # load_cert_chain reads files only: the bytes read once go to a private directory, so the
    # pair checked is the pair loaded even while the mounted files are being replaced.
    with tempfile.TemporaryDirectory(prefix="sipdispatch-tls-") as scratch:
        cert_path, key_path = Path(scratch, "tls.crt"), Path(scratch, "tls.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, OSError) as exc:
            raise CertificateError(f"{origin}: certificate and key do not load: {exc}") from None
        context.load_cert_chain(cert_path, key_path)
    return expiry


def _read_pair(cert: Path, key: Path) -> tuple[bytes, bytes]:
    try:
        return cert.read_bytes(), key.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {exc.filename}: {exc.strerror}") from None


def server_context(cert: Path, key: Path) -> tuple[ssl.SSLContext, float]:
    """The server context of the listeners, with the pair in ``cert`` and ``key`` loaded, and
    the certificate's expiry. Raises `CertificateError`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert_data, key_data = _read_pair(cert, key)
    return context, load_pair(context, cert_data, key_data, f"{cert} / {key}")


class CertificateWatch:
    """Reads the certificate and key files every `POLL_INTERVAL` and loads a changed pair.

    Polled and compared by content, like the route keys' file: the kubelet updates a mounted
    Secret by swapping a symlink, which a watch on the file itself misses.
    """

    def __init__(
        self,
        cert: Path,
        key: Path,
        context: ssl.SSLContext,
        *,
        interval: float = POLL_INTERVAL,
        on_load: Callable[[float], None] | None = None,
    ) -> None:
        self.cert = cert
        self.key = key
        self.context = context
        self.interval = interval
        #: told the expiry (Unix seconds) of each certificate loaded (the metrics)
        self.on_load = on_load
        self._loaded: tuple[bytes, bytes] | None = None
        self._failed: tuple[bytes, bytes] | None = None
        self._unreadable = False  # said once, not every poll
        with contextlib.suppress(CertificateError):  # else the first check loads them again
            self._loaded = _read_pair(cert, key)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    def check(self) -> bool:
        """Read the files once; True when a new pair now serves."""
        try:
            pair = _read_pair(self.cert, self.key)
        except CertificateError as exc:
            if not self._unreadable:
                log.error("TLS certificate not reloaded, the previous one keeps serving: %s", exc)
            self._unreadable = True
            return False
        self._unreadable = False
        if pair in (self._loaded, self._failed):
            return False  # unchanged, or the broken pair already reported
        try:
            expiry = load_pair(self.context, *pair, origin=f"{self.cert} / {self.key}")
        except CertificateError as exc:
            self._failed = pair
            log.error("TLS certificate not reloaded, the previous one keeps serving: %s", exc)
            return False
        self._loaded, self._failed = pair, None
        log.info(
            "TLS certificate reloaded from %s: valid until %s",
            self.cert,
            datetime.datetime.fromtimestamp(expiry, datetime.UTC).isoformat(),
        )
        if self.on_load is not None:
            self.on_load(expiry)
        return True


class TlsClients:
    """The client context and server name of each TLS destination, from its set's settings
    and its own attrs (``tlsverify``). The server name (SNI, and the name the certificate must
    carry) is the configured one, else the destination's host: for the addresses of a DNS
    name, that name.

    Contexts are made once per distinct `TlsVerification` (loading a CA bundle costs
    milliseconds) and looked up by the destination's address; the index follows the table.
    """

    def __init__(self, table: Callable[[], DestinationTable | None]) -> None:
        self._table = table
        self._indexed: DestinationTable | None = None
        self._by_address: dict[Address, TlsVerification] = {}
        self._contexts: dict[TlsVerification, ssl.SSLContext] = {}

    def context(self, verification: TlsVerification) -> ssl.SSLContext:
        context = self._contexts.get(verification)
        if context is None:
            context = ssl.create_default_context(cafile=verification.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if not verification.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._contexts[verification] = context
        return context

    def verification(self, address: Address) -> TlsVerification:
        table = self._table()
        if table is not self._indexed:
            # a reloaded table: CA files are read again too (a bundle may have changed)
            self._indexed = table
            self._by_address = {}
            self._contexts = {}
            for dest_set in table.sets.values() if table is not None else ():
                for target in dest_set.targets:
                    dest = target.destination
                    if dest.transport == "tls":
                        # its set's settings, its own attrs over them (checked at load);
                        # a destination in two sets: the first set's
                        verification, _ = from_attrs(dest.attrs, dest_set.config.tls)
                        verification = verification or _DEFAULT
                        if verification.server_name is None and dest.name is not None:
                            # an address of a DNS name: the name is the server's identity
                            # (RFC 5922 4), not the address, nor an SRV target
                            name = parse_sip_uri(dest.name).host_address
                            verification = dataclasses.replace(verification, server_name=name)
                        self._by_address.setdefault((dest.host, dest.port), verification)
        return self._by_address.get(address, _DEFAULT)

    def options(self, address: Address) -> dict[str, Any]:
        """``create_connection`` keywords toward ``address``; raises `OSError` for a CA file
        that cannot be read (the branch fails like a refused connection)."""
        verification = self.verification(address)
        try:
            context = self.context(verification)
        except (ssl.SSLError, OSError) as exc:
            raise OSError(f"CA file {verification.ca_file}: {exc}") from None
        return {
            "ssl": context,
            "server_hostname": verification.server_name or address[0],
            "ssl_handshake_timeout": HANDSHAKE_TIMEOUT,
        }


class TlsTransport(TcpTransport):
    """All TLS connections of the proxy: TCP's, with a server and a client context."""

    name = "tls"

    def __init__(
        self,
        *args: Any,
        server: ssl.SSLContext | None,
        clients: TlsClients,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.server = server
        self.clients = clients

    def _listen_options(self) -> dict[str, Any]:
        if self.server is None:
            raise CertificateError("a tls listener needs a certificate and key (--tls-cert)")
        return {"ssl": self.server, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT}

    def _connect_options(self, address: Address) -> dict[str, Any]:
        return self.clients.options(address)
