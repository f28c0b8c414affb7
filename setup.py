"""Optional native build of the proxy's hot path (the metadata lives in pyproject.toml).

``SIPDISPATCH_MYPYC=1 pip install .`` compiles the sans-I/O SIP core, and the glue and
destination selection that every message passes through, with mypyc, which turns the strictly
typed modules into C extensions: the same code, about 2.4x less CPU per call in the core and
1.7x in the whole proxy (see docs/benchmarks.md). Without the variable the package is pure
Python, which is what editable development installs use, so that an edited module is never
shadowed by a stale build. The native build also compiles two small modules written in C
(C_EXTENSIONS below).
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

#: the modules every message goes through; all are mypy --strict clean, as mypyc requires.
#: Not the server's wiring, metrics, the control API or configuration: they mostly call into
#: asyncio, prometheus_client, aiohttp and pydantic, where compiling the caller gains little.
HOT_PATH = [
    "src/sipdispatch/sip/errors.py",
    "src/sipdispatch/sip/identityenum.py",
    "src/sipdispatch/sip/memo.py",
    "src/sipdispatch/sip/grammar.py",
    "src/sipdispatch/sip/uri.py",
    "src/sipdispatch/sip/values.py",
    "src/sipdispatch/sip/message.py",
    "src/sipdispatch/sip/codec.py",
    "src/sipdispatch/sip/limits.py",
    "src/sipdispatch/sip/validation.py",
    "src/sipdispatch/sip/transaction.py",
    "src/sipdispatch/proxy/events.py",
    "src/sipdispatch/proxy/core/admission.py",
    "src/sipdispatch/proxy/core/policy.py",
    "src/sipdispatch/proxy/core/listeners.py",
    "src/sipdispatch/proxy/core/records.py",
    "src/sipdispatch/proxy/core/secure.py",
    "src/sipdispatch/proxy/core/affinity.py",
    "src/sipdispatch/proxy/core/outbox.py",
    "src/sipdispatch/proxy/core/deadlines.py",
    "src/sipdispatch/proxy/core/transaction.py",
    "src/sipdispatch/proxy/core/dialogs.py",
    "src/sipdispatch/proxy/core/probing.py",
    "src/sipdispatch/proxy/core/forwarding.py",
    "src/sipdispatch/proxy/core/proxy.py",
    # compiled too, so that ``sipdispatch.proxy.core.__file__`` tells a native build apart
    "src/sipdispatch/proxy/core/__init__.py",
    "src/sipdispatch/proxy/engine.py",
    "src/sipdispatch/proxy/transport/udp.py",
    # subclasses the compiled UdpEndpoint: an interpreted class cannot
    "src/sipdispatch/proxy/transport/workerudp.py",
    "src/sipdispatch/proxy/traffic.py",
    "src/sipdispatch/dispatch/context.py",
    "src/sipdispatch/dispatch/keys.py",
    "src/sipdispatch/dispatch/weights.py",
    "src/sipdispatch/dispatch/latency.py",
    "src/sipdispatch/dispatch/health.py",
    "src/sipdispatch/dispatch/algorithms.py",
    "src/sipdispatch/dispatch/destinations.py",
    "src/sipdispatch/dispatch/routes.py",
]

#: hand-written C, built with the compiled hot path: the loop over a message's header lines
#: and the count of their bytes, and the Via parameters' reader (the pure Python build runs
#: codec._parse_headers, codec._measure_text and values._token_params, which they are tested
#: against); UDP datagrams in and out by the batch (the pure Python build uses the event
#: loop's datagram transport)
C_EXTENSIONS = [
    Extension("sipdispatch.sip._lines", ["src/sipdispatch/sip/_lines.c"]),
    Extension("sipdispatch.sip._tokens", ["src/sipdispatch/sip/_tokens.c"]),
    Extension(
        "sipdispatch.proxy.transport._datagrams", ["src/sipdispatch/proxy/transport/_datagrams.c"]
    ),
]

ext_modules = []
if os.environ.get("SIPDISPATCH_MYPYC") == "1":
    from mypyc.build import mypycify

    ext_modules = [*mypycify(HOT_PATH, opt_level="3"), *C_EXTENSIONS]

setup(ext_modules=ext_modules)
