"""Features whose cost per call the bench measures beside the plain proxy, in the same run.

Each is a ``Variant``: YAML added to the bench's config, flags added to the command line. The
calls are the ladder's (INVITE, 100, 180, 200, ACK, BYE), from the caller on 127.0.0.1.
"""

from __future__ import annotations

from rigs import Variant

__all__ = ["CONTROL", "DEFAULTS", "VARIANTS"]

# The proxy as it comes: every default protection on (the rate per source too, which the
# ladders lift). The other variants are measured against it.
DEFAULTS = Variant("defaults")

# Five routes, the call's INVITE matching only the last: four are tried and passed over,
# each kind of match once (method, Request-URI user, header, source).
FIVE_ROUTES = Variant(
    "five routes",
    config=(
        "routes:\n"
        "  - name: no-registrations\n"
        "    match: {methods: [REGISTER]}\n"
        "    reject: {code: 403, reason: Forbidden}\n"
        "  - name: no-subscriptions\n"
        "    match: {methods: [SUBSCRIBE, PUBLISH]}\n"
        "    reject: {code: 405, reason: Method Not Allowed}\n"
        "  - name: emergency\n"
        '    match: {requestUser: "^(112|911)$"}\n'
        "    set: 1\n"
        "  - name: tenant-acme\n"
        '    match: {header: {name: X-Tenant, regex: "^acme$"}}\n'
        "    set: 1\n"
        "  - name: local-callers\n"
        '    match: {source: ["127.0.0.1/32"], methods: [INVITE]}\n'
        "    set: 1\n"
    ),
)

# Every protection that can be off, off (0: off): the plain proxy has the defaults, so what
# the default protections cost is the plain figure against this one. A new protection with an
# off switch belongs here. Message limits stay on: they are checked inside the parse.
# (The request policy is on by default too: off here with the rest.)
PROTECTIONS_OFF = Variant(
    "protections off",
    args=(
        *("--source-rate", "0", "--dialog-rate", "0", "--max-transactions", "0"),
        *("--tcp-max-connections", "0", "--tcp-max-per-source", "0"),
        *("--tcp-idle-timeout", "0", "--tcp-message-timeout", "0"),
        "--no-request-policy",
    ),
    turns_off=True,
)

# The plain proxy once more, as a rig of its own: what it differs from the plain proxy by is
# the noise of this machine and of the bench, the floor under every other figure.
CONTROL = Variant("defaults, again", control=True)

VARIANTS: list[Variant] = [FIVE_ROUTES, PROTECTIONS_OFF, CONTROL]
