"""``Kube``: one connection to the API server through kubernetes_asyncio's generated client.

The client is made in the running loop on first use (its aiohttp session belongs to that
loop). Every call goes through ``call``, which turns the client's failures into ``KubeError``
and, on a 401, loads the credentials again and tries once more (a token revoked or expired
early, a renewed client certificate), as client-go does.

Answers are read as the API's own JSON, not as the generated models: the models cost a
conversion each way, and some operations deserialise only some success codes (a server-side
apply that creates its object answers 201, which ``patch_namespaced_custom_object`` turns
into ``None``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from kubernetes_asyncio import client as generated
from kubernetes_asyncio.client.exceptions import ApiException

from sipdispatch.kube.credentials import Login
from sipdispatch.kube.errors import KubeError

__all__ = ["Kube"]

# The generated API classes are not annotated: held as Any, typed at this package's surface.
_APIS: dict[str, Any] = {
    "core": generated.CoreV1Api,
    "coordination": generated.CoordinationV1Api,
    "custom": generated.CustomObjectsApi,
}


class Kube:
    """The API server as ``login`` reaches it; ``namespace`` is the credentials' own."""

    def __init__(self, login: Login, *, timeout: float = 30.0) -> None:
        self.login = login
        self.timeout = timeout
        self._client: Any = None
        self._apis: dict[str, Any] = {}
        self._connecting = asyncio.Lock()

    @property
    def namespace(self) -> str:
        return self.login.namespace

    async def _connect(self) -> Any:
        async with self._connecting:
            if self._client is None:
                configuration = await self.login.configuration()
                made: Any = generated.ApiClient
                self._client = made(configuration)
                self._apis = {name: api(self._client) for name, api in _APIS.items()}
            return self._client

    async def _reconnect(self, stale: Any) -> None:
        async with self._connecting:
            if self._client is stale:  # not already replaced by a concurrent 401
                self._client = None
                await stale.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def call(
        self, api: str, operation: str, *, stream: bool = False, **arguments: Any
    ) -> Any:
        """``operation`` of the generated ``api`` ("core": CoreV1Api, "coordination":
        CoordinationV1Api, "custom": CustomObjectsApi) with keyword ``arguments``: the
        answer's JSON, or with ``stream`` the open response (a watch; the caller releases
        it). ``KubeError`` on failure."""
        arguments.setdefault("_request_timeout", self.timeout)
        arguments["_preload_content"] = False
        for attempt in (1, 2):
            client = await self._connect()
            try:
                response = await getattr(self._apis[api], operation)(**arguments)
                if response.status >= 400:
                    raise await _refused(response)
                if stream:
                    return response
                try:
                    body = await response.read()
                finally:
                    response.release()
                return json.loads(body) if body else {}
            except ApiException as exc:
                if exc.status == 401 and attempt == 1:
                    await self._reconnect(client)
                    continue
                raise KubeError(int(exc.status or 0), _message(exc)) from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise KubeError(0, str(exc) or type(exc).__name__) from None
            except ValueError as exc:  # not JSON: not an API server
                raise KubeError(0, f"{operation}: the answer is not JSON ({exc})") from None
        raise AssertionError("unreachable")


async def _refused(response: aiohttp.ClientResponse) -> ApiException:
    refused = ApiException(status=response.status, reason=response.reason)
    refused.body = await response.read()
    response.release()
    return refused


def _message(exc: ApiException) -> str:
    body = exc.body
    try:
        found = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        found = None
    text = found or (body.decode(errors="replace") if isinstance(body, bytes) else body)
    return str(text or exc.reason or "")[:500]
