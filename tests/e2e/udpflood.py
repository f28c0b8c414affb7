"""A bounded UDP INVITE flood from one source address, run as its own process (so that its
sending does not share an interpreter lock with the test that measures).

``python udpflood.py SOURCE_IP TARGET_IP PORT RATE SECONDS`` sends at most RATE x SECONDS
INVITEs, each with its own Call-ID and branch, paced in 5 ms ticks, for at most SECONDS (plus
the last tick); it then prints ``{"sent": N, "seconds": S}`` as JSON. What it reaches is what
it prints: on a busy machine that can be less than RATE.
"""

from __future__ import annotations

import json
import socket
import sys
import time

TICK = 0.005


def invite_template(source: str, port: int, target: str) -> bytes:
    """An INVITE with ``%d`` where each one differs (branch, tag, Call-ID)."""
    return (
        f"INVITE sip:flood@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-f%d\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:flood@{source}>;tag=f%d\r\n"
        f"To: <sip:svc@{target}>\r\n"
        f"Call-ID: flood-%d@{source}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:flood@{source}:{port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def flood(source: str, target: str, port: int, rate: int, seconds: float) -> dict[str, float]:
    total = int(rate * seconds)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        template = invite_template(source, sock.getsockname()[1], target)
        address = (target, port)
        sent = 0
        started = time.monotonic()
        while sent < total:
            elapsed = time.monotonic() - started
            if elapsed > seconds:
                break
            due = min(total, int(rate * elapsed) + 1)
            while sent < due:
                sock.sendto(template % (sent, sent, sent), address)
                sent += 1
            time.sleep(TICK)
        return {"sent": sent, "seconds": time.monotonic() - started}


if __name__ == "__main__":
    source_ip, target_ip, target_port, per_second, duration = sys.argv[1:6]
    result = flood(source_ip, target_ip, int(target_port), int(per_second), float(duration))
    print(json.dumps(result))
