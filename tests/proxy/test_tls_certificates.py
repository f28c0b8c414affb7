"""The TLS transport's certificate handling: loading a pair, and the watch that reloads it."""

from __future__ import annotations

import dataclasses
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from tlspeers import SigningCa

from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.dispatch.tableconfig import Destination, SetConfig, TableConfig
from sipdispatch.dispatch.tlsverify import TlsVerification
from sipdispatch.proxy.transport import tls


def _served_serial(context: ssl.SSLContext) -> int:
    """The serial of the certificate ``context`` serves, read through an in-memory handshake."""
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out)
    server_side = context.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(10):
        for index, side in enumerate((client_side, server_side)):
            if not done[index]:
                try:
                    side.do_handshake()
                    done[index] = True
                except ssl.SSLWantReadError:
                    continue
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done[0]:
            break
    der = client_side.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_the_watch_loads_a_new_pair_and_keeps_the_old_one_for_a_broken_pair(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = SigningCa(tmp_path)
    cert, key, first = ca.issue_files("one")
    context, expiry = tls.server_context(cert, key)
    loaded: list[float] = []
    watch = tls.CertificateWatch(cert, key, context, on_load=loaded.append)
    assert _served_serial(context) == first
    assert watch.check() is False  # unchanged

    new_cert, new_key, second = ca.issue("two", days=30)
    cert.write_bytes(new_cert)
    key.write_bytes(new_key)
    assert watch.check() is True
    assert _served_serial(context) == second
    assert loaded[0] > expiry

    caplog.set_level(logging.ERROR)
    _, other_key, _ = ca.issue("three")
    key.write_bytes(other_key)  # the key of another certificate
    assert watch.check() is False
    assert watch.check() is False
    assert _served_serial(context) == second
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # said once, not every poll
    assert "previous one keeps serving" in errors[0]
    assert "key values mismatch" in errors[0].lower() or "do not load" in errors[0]

    key.unlink()
    assert watch.check() is False
    assert watch.check() is False
    assert _served_serial(context) == second
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2

    key.write_bytes(new_key)  # the good pair again: nothing to load, it is the one serving
    assert watch.check() is False
    assert len(loaded) == 1


def test_a_pair_that_is_no_certificate_is_refused_naming_the_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not a certificate")
    key.write_text("nor a key")
    with pytest.raises(tls.CertificateError, match=r"tls\.crt / .*tls\.key: not a PEM"):
        tls.server_context(cert, key)
    with pytest.raises(tls.CertificateError, match="cannot read"):
        tls.server_context(tmp_path / "missing.crt", key)


def test_client_contexts_follow_the_verification_asked(tmp_path: Path) -> None:
    ca = SigningCa(tmp_path)
    clients = tls.TlsClients(lambda: None)
    strict = clients.options(("127.0.0.1", 5061))
    assert strict["ssl"].verify_mode == ssl.CERT_REQUIRED
    assert strict["server_hostname"] == "127.0.0.1"
    lax = clients.context(TlsVerification(verify=False))
    assert lax.verify_mode == ssl.CERT_NONE
    assert not lax.check_hostname
    custom = clients.context(TlsVerification(ca_file=str(ca.cert_file)))
    assert [c["subject"] for c in custom.get_ca_certs()] == [((("commonName", ca.name),),)]
    assert clients.context(TlsVerification(verify=False)) is lax  # made once


def test_the_server_name_of_a_dns_destination_is_its_name_not_its_address() -> None:
    named = Destination.create(1, "sips:gw.example.com")
    resolved = dataclasses.replace(
        named,
        uri="sips:192.0.2.7:5061;transport=tls",
        host="192.0.2.7",
        key="1:sips:192.0.2.7:5061;transport=tls",
        name=named.uri,
    )
    by_address = Destination.create(1, "sips:192.0.2.8", attrs={"tls_verify": "0"})
    config = TableConfig((SetConfig(1, (resolved, by_address)),))
    table = DestinationTable.build(config, None, 0.0)
    clients = tls.TlsClients(lambda: table)
    assert clients.options(("192.0.2.7", 5061))["server_hostname"] == "gw.example.com"
    lax = clients.options(("192.0.2.8", 5061))
    assert lax["server_hostname"] == "192.0.2.8"
    assert lax["ssl"].verify_mode == ssl.CERT_NONE  # its attrs
