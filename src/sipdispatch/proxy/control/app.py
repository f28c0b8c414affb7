"""The control API of DESIGN.md 3.2, served inside the proxy's own loop (AppRunner/TCPSite).

Read calls are open; write calls (reload, set-state) need ``Authorization: Bearer <token>``
when a token is configured. Errors are JSON objects with a ``message``.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.dispatch.health import ADMIN_CODES
from sipdispatch.proxy.control.views import table_view
from sipdispatch.proxy.wallclock import clock_offset

__all__ = ["ControlledProxy", "make_app", "start_control"]


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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _authorized(request: web.Request) -> bool:
    token = request.app[TOKEN]
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


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
    if not _authorized(request):
        return _error(401, "a valid bearer token is required")
    try:
        await request.app[PROXY].reload()
    except ValueError as exc:
        return _error(422, f"reload failed, the previous table is still served: {exc}")
    return web.json_response({"status": "reloaded"})


async def set_state(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _error(401, "a valid bearer token is required")
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
    proxy: ControlledProxy, registry: CollectorRegistry, token: str = ""
) -> web.Application:
    app = web.Application()
    app[PROXY] = proxy
    app[REGISTRY] = registry
    app[TOKEN] = token
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
