"""Errors of the SIP layer, split the h11 way.

``RemoteProtocolError`` means the peer sent something we cannot accept; it carries the status code
to answer with (400 unless a more precise one applies: 413, 416, 420, 483, 505...). When the bad
message is a response, or a request whose Via cannot be read, nobody can be answered and the
caller drops it. ``LocalProtocolError`` means our own code tried something SIP forbids (a bug).
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "RemoteProtocolError", "SipError"]


class SipError(Exception):
    """Base class of every SIP-layer error."""


class LocalProtocolError(SipError):
    """We tried to do something SIP does not allow."""


class RemoteProtocolError(SipError):
    """The peer sent something invalid; ``status`` is what a UAS or proxy should answer with."""

    def __init__(self, message: str, status: int = 400, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        #: the reason phrase for the error response (defaults to the standard phrase)
        self.reason = reason
