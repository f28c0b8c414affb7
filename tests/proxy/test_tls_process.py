"""A running ``sipdispatch-proxy`` process (uvloop, the command line) serving TLS: it answers
over TLS with the certificate of ``--tls-cert``, picks up a new one written over the files,
and refuses a start without a usable pair."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from tlspeers import SigningCa

from sipphelpers import control_page, free_port, proxy_command


def _options(port: int, ca: SigningCa) -> tuple[str, int]:
    """One OPTIONS over a new TLS connection: the status line and the served serial."""
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=3) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        local = "{}:{}".format(*sock.getsockname()[:2])
        sock.sendall(
            (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS {local};branch=z9hG4bK-p{time.monotonic_ns()};rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
                f"Call-ID: tls-process-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        status = sock.recv(65535).decode().split("\r\n", 1)[0]
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return status, x509.load_der_x509_certificate(der).serial_number


def test_the_process_serves_tls_and_reloads_its_certificate(tmp_path: Path) -> None:
    ca = SigningCa(tmp_path / "ca")
    cert, key, first = ca.issue_files("proxy")
    table = tmp_path / "dispatcher.list"
    table.write_text("1 sip:127.0.0.1:9\n")
    port, control = free_port(), free_port()
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *proxy_command(),
                *("--dispatcher-list", str(table), "--probe-mode", "off"),
                *("--listen", f"tls:127.0.0.1:{port}", "--control", f"127.0.0.1:{control}"),
                *("--tls-cert", str(cert), "--tls-key", str(key)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        control_page(f"http://127.0.0.1:{control}/readyz", process, log)
        assert _options(port, ca) == ("SIP/2.0 200 OK", first)

        new_cert, new_key, second = ca.issue("proxy-renewed", days=30)
        key.write_bytes(new_key)
        cert.write_bytes(new_cert)
        changed = time.monotonic()
        while _options(port, ca)[1] != second:
            assert time.monotonic() - changed < 6.0, log.read_text()
            time.sleep(0.1)
        assert "TLS certificate reloaded" in log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{control}/metrics") as page:
            metrics = page.read().decode()
        assert "sipdispatch_tls_certificate_expiry_timestamp_seconds " in metrics
    finally:
        process.terminate()
        process.wait(10)
    assert "Traceback" not in log.read_text()


def test_a_start_without_a_usable_certificate_exits_naming_it(tmp_path: Path) -> None:
    table = tmp_path / "dispatcher.list"
    table.write_text("1 sip:127.0.0.1:9\n")
    cert = tmp_path / "tls.crt"
    cert.write_text("nothing")
    common = [*proxy_command(), "--dispatcher-list", str(table), "--control", "off"]
    listen = ["--listen", f"tls:127.0.0.1:{free_port()}"]
    cases = [
        (listen, "a tls listener needs --tls-cert and --tls-key"),
        ([*listen, "--tls-cert", str(cert)], "--tls-cert and --tls-key go together"),
        ([*listen, "--tls-cert", str(cert), "--tls-key", str(cert)], "tls.crt: not a PEM"),
    ]
    for extra, message in cases:
        result = subprocess.run(
            [*common, *extra], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
