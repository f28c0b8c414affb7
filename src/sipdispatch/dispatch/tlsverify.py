"""How the proxy verifies a TLS destination's certificate: `TlsVerification`.

A set gives it (``tls:`` in YAML and in a DispatcherSet); a destination may say otherwise in
its attrs, as Kamailio's tls module configures each server it connects to (``[client:IP:port]``
with ``verify_certificate``, ``ca_list``, ``server_name``): ``tls_verify=0|1``,
``tls_ca=FILE``, ``tls_server_name=NAME``. That is how a ``dispatcher.list``, which has no
set-level line, configures it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sipdispatch.dispatch import uris as _uris

__all__ = ["TLS_ATTRS", "TlsVerification", "from_attrs"]

#: the attrs of a destination that set its verification
TLS_ATTRS = ("tls_verify", "tls_ca", "tls_server_name")
_ON = ("1", "on", "yes", "true")
_OFF = ("0", "off", "no", "false")


@dataclass(frozen=True, slots=True)
class TlsVerification:
    """How the proxy checks the certificates of TLS destinations."""

    #: check the certificate chain and the name; off: any certificate is accepted
    verify: bool = True
    #: CA bundle (PEM file) the chain must lead to; None: the system's CAs
    ca_file: str | None = None
    #: the name sent as SNI and expected in the certificate; None: the destination's host
    server_name: str | None = None


def from_attrs(
    attrs: Mapping[str, str], base: TlsVerification | None
) -> tuple[TlsVerification | None, str]:
    """``base`` (a set's) with the destination's TLS attrs over it, and "" ; or (None, the
    bad attr's name and why) for an attr that does not parse."""
    if not any(name in attrs for name in TLS_ATTRS):
        return base, ""
    current = base or TlsVerification()
    verify, ca_file, server_name = current.verify, current.ca_file, current.server_name
    if "tls_verify" in attrs:
        text = attrs["tls_verify"].strip().lower()
        if text not in _ON + _OFF:
            return None, f"tls_verify: {text!r} is not 0 or 1 (off or on)"
        verify = text in _ON
    if "tls_ca" in attrs:
        ca_file = attrs["tls_ca"].strip()
        if not ca_file:
            return None, "tls_ca: empty (a PEM file of CAs)"
    if "tls_server_name" in attrs:
        try:
            server_name = _uris.parse_host(attrs["tls_server_name"].strip())
        except ValueError as exc:
            return None, f"tls_server_name: {exc}"
    return TlsVerification(verify, ca_file, server_name), ""
