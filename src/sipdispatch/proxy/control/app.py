"""The control API of DESIGN.md 3.2, served inside the proxy's own loop (AppRunner/TCPSite).

Read calls are open. Write calls (reload, set-state) take ``application/json`` only, so that no
web page can make a browser send one without a CORS preflight (which this API never grants):
a cross-site form or ``text/plain`` POST gets 415. They need ``Authorization: Bearer <token>``
when the API has a token; without one they are open only when the API is bound to loopback
(``open_locally``), and then only to a client that names it by a loopback Host, so that a page
whose DNS name is rebound to 127.0.0.1 cannot reach them either. Errors are JSON objects with a
``message``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.dispatch.health import ADMIN_CODES
from sipdispatch.proxy.control.views import table_view
from sipdispatch.proxy.wallclock import clock_offset

__all__ = ["ControlledProxy", "is_loopback", "make_app", "start_control"]


class ControlledProxy(Protocol):
    """What the control API needs from the running proxy."""

    @property
    def table(self) -> DestinationTable | None: ...

    @property
    def draining(self) -> bool: ...

    def now(self) -> float: ...

    def status(self) -> dict[str, Any]: ...

    async def reload(self) -> None: ...

    def set_state(self, set_id: int, uri: str, code: str) -> None: ...


PROXY = web.AppKey("proxy", ControlledProxy)
REGISTRY = web.AppKey("registry", CollectorRegistry)
TOKEN = web.AppKey("token", str)
#: write calls without a token are allowed (no token, and the API bound to loopback)
OPEN_LOCALLY = web.AppKey("open_locally", bool)
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host of a Host header (``name:port``, ``[v6]:port``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _authorized(request: web.Request) -> bool:
    token = request.app[TOKEN]
    if not token:
        return request.app[OPEN_LOCALLY] and is_loopback(_host_of(request.host))
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every write call: JSON only (no simple cross-site request), then the token."""
    if request.method in _WRITES:
        if request.content_type != "application/json":
            return _error(415, "write calls take a JSON body (Content-Type: application/json)")
        if not _authorized(request):
            return _error(401, "a valid bearer token is required")
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    if proxy.table is None:
        return _error(503, "no destination table loaded yet")
    if proxy.draining:
        return _error(503, "draining: stopping after the transactions in flight")
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def destinations(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    table = proxy.table
    if table is None:
        return _error(503, "no destination table loaded yet")
    now = proxy.now()
    view = table_view(table, now, clock_offset())
    view["status"] = proxy.status()
    return web.json_response(view)


async def reload(request: web.Request) -> web.Response:
    try:
        await request.app[PROXY].reload()
    except ValueError as exc:
        return _error(422, f"reload failed, the previous table is still served: {exc}")
    return web.json_response({"status": "reloaded"})


async def set_state(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return _error(400, 'body must be JSON: {"set": 1, "uri": "sip:...", "state": "dx"}')
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    set_id, uri, state = body.get("set"), body.get("uri"), body.get("state")
    if not isinstance(set_id, int) or not isinstance(uri, str) or not isinstance(state, str):
        return _error(400, "fields: set (integer), uri (string), state (string)")
    if state.lower() not in ADMIN_CODES:
        return _error(400, f"state: {state!r} is not one of {', '.join(sorted(ADMIN_CODES))}")
    try:
        request.app[PROXY].set_state(set_id, uri, state)
    except LookupError as exc:
        return _error(404, str(exc.args[0]) if exc.args else str(exc))
    except ValueError as exc:
        return _error(400, str(exc))
    return web.json_response({"set": set_id, "uri": uri, "state": state.upper()})


def make_app(
    proxy: ControlledProxy,
    registry: CollectorRegistry,
    token: str = "",
    *,
    open_locally: bool = False,
) -> web.Application:
    """The control API; write calls need ``token``, or with none, ``open_locally`` (the API
    is bound to loopback), else they are refused."""
    app = web.Application(middlewares=[guard_writes])
    app[PROXY] = proxy
    app[REGISTRY] = registry
    app[TOKEN] = token
    app[OPEN_LOCALLY] = open_locally
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/destinations", destinations)
    app.router.add_post("/v1/reload", reload)
    app.router.add_put("/v1/destinations/state", set_state)
    return app


async def start_control(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
