"""Signatures (a keyed MAC) for what the proxy later trusts from the wire (DESIGN.md 3.5).

Two things come back to the proxy in messages it did not keep state for:

* its Record-Route, in the Route of every in-dialog request: the parameters name the gateway the
  dialog was sent to (``did``) and the caller's From tag (``ftag``); the signature covers them and
  the Call-ID, so nobody can make the proxy send a request to a host of their choosing;
* the Via branch of statelessly forwarded requests: the signature covers the Via below ours, so a
  response is relayed only to the hop that really sent the request (RFC 4475 bcast).

Every replica of a deployment shares the secret, which is why any replica can route any dialog.
The MAC is BLAKE2b in its keyed mode (RFC 7693), a MAC by design and one call per signature,
which matters at two signatures per in-dialog request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["Signer"]

_SIGNATURE_BYTES = 10  # 80 bits: forging one takes 2**79 tries on average


class Signer:
    """Makes and checks short hex signatures with one shared secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes | None = None) -> None:
        # A random secret works for one standalone process; replicas must share theirs.
        key = secret if secret else secrets.token_bytes(32)
        # BLAKE2b takes keys of up to 64 bytes; longer secrets are hashed down first.
        self._key = key if len(key) <= 64 else hashlib.sha256(key).digest()

    def sign(self, *parts: str) -> str:
        data = "\x00".join(parts).encode("utf-8", "surrogateescape")
        return hashlib.blake2b(data, key=self._key, digest_size=_SIGNATURE_BYTES).hexdigest()

    def verify(self, signature: str, *parts: str) -> bool:
        return hmac.compare_digest(signature, self.sign(*parts))
