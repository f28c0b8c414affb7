"""Write calls of the control API: JSON only (no cross-site simple request reaches them), and a
token, or a loopback-only API reached by a loopback name. A real proxy on loopback, its control
API served by aiohttp, called by an aiohttp client as a browser or a script would."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from loopback import free_udp_port

from sipdispatch.dispatch.config import ProbingSpec
from sipdispatch.proxy import ctl
from sipdispatch.proxy.control.app import is_loopback, make_app
from sipdispatch.proxy.server import ProxyServer
from sipdispatch.proxy.settings import ProxySettings
from sipdispatch.proxy.tables import FileTableSource
from sipphelpers import free_port

OFF = ProbingSpec.model_validate({"mode": "off"})
TOKEN = "s3cret-token"
SET_STATE = {"set": 1, "uri": "sip:127.0.0.2:5060", "state": "dx"}


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[ProxyServer]:
    table = tmp_path / "dispatcher.list"
    table.write_text("1 sip:127.0.0.2:5060\n")
    source = FileTableSource(table, kamailio_format=True, algorithm=4, default_set=None)
    settings = ProxySettings(
        listen=(f"udp:127.0.0.1:{free_udp_port()}",), control=None, probing=OFF
    )
    server = ProxyServer(source, settings)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def with_token(proxy: ProxyServer) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async with TestClient(TestServer(make_app(proxy, proxy.registry, TOKEN))) as client:
        yield client


@pytest.fixture
async def local(proxy: ProxyServer) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = make_app(proxy, proxy.registry, open_locally=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


CROSS_SITE = [
    # What a web page can make a browser send without a preflight ("simple requests").
    {"data": "{}", "headers": {"Content-Type": "text/plain", "Origin": "http://evil.example"}},
    {"data": "a=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    {"data": aiohttp.FormData({"a": "1"})},  # multipart/form-data
    {},  # no body, no Content-Type
]


@pytest.mark.parametrize("request_kwargs", CROSS_SITE)
async def test_a_cross_site_simple_request_cannot_write(
    with_token: TestClient,  # type: ignore[type-arg]
    local: TestClient,  # type: ignore[type-arg]
    request_kwargs: dict[str, object],
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for client, headers in ((with_token, auth), (local, {})):
        sent_headers = {**headers, **request_kwargs.get("headers", {})}  # type: ignore[dict-item]
        kwargs = {**request_kwargs, "headers": sent_headers}
        if isinstance(kwargs.get("data"), aiohttp.FormData):
            kwargs["data"] = aiohttp.FormData({"a": "1"})  # one use each
        reload = await client.post("/v1/reload", **kwargs)
        assert reload.status == 415, await reload.text()
        put = await client.put("/v1/destinations/state", **kwargs)
        assert put.status == 415


async def test_writes_need_the_token_when_there_is_one(
    with_token: TestClient,  # type: ignore[type-arg]
    proxy: ProxyServer,
) -> None:
    assert (await with_token.post("/v1/reload", json={})).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await with_token.post("/v1/reload", json={}, headers=wrong)).status == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await with_token.post("/v1/reload", json={}, headers=auth)).status == 200
    answer = await with_token.put("/v1/destinations/state", json=SET_STATE, headers=auth)
    assert (answer.status, (await answer.json())["state"]) == (200, "DX")
    assert proxy.table is not None
    assert proxy.table.find(1, "sip:127.0.0.2:5060").runtime.health.code == "DX"
    # Reads stay open.
    assert (await with_token.get("/v1/destinations")).status == 200


async def test_a_loopback_api_without_a_token_takes_writes_named_by_loopback_only(
    local: TestClient,  # type: ignore[type-arg]
) -> None:
    assert (await local.post("/v1/reload", json={})).status == 200
    for host in ("localhost:8080", "[::1]:8080", "127.0.0.5"):
        answer = await local.post("/v1/reload", json={}, headers={"Host": host})
        assert answer.status == 200, host
    # A page whose name was rebound to 127.0.0.1 sends its own name as Host (DNS rebinding).
    rebound = await local.post("/v1/reload", json={}, headers={"Host": "evil.example:8080"})
    assert rebound.status == 401


async def test_without_a_token_or_loopback_writes_are_refused(proxy: ProxyServer) -> None:
    async with TestClient(TestServer(make_app(proxy, proxy.registry))) as client:
        assert (await client.post("/v1/reload", json={})).status == 401


def test_loopback_names() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "evil.example", ""]))


async def _started(tmp_path: Path, control: str) -> ProxyServer:
    table = tmp_path / "dispatcher.list"
    table.write_text("1 sip:127.0.0.2:5060\n")
    source = FileTableSource(table, kamailio_format=True, algorithm=4, default_set=None)
    settings = ProxySettings(
        listen=(f"udp:127.0.0.1:{free_udp_port()}",), control=control, probing=OFF
    )
    server = ProxyServer(source, settings)
    await server.start()
    return server


async def test_an_api_on_every_address_without_a_token_makes_one_and_prints_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="sipdispatch.proxy.server"):
        server = await _started(tmp_path, f"0.0.0.0:{port}")
    try:
        (line,) = [r.getMessage() for r in caplog.records if "no token given" in r.getMessage()]
        token = line.rsplit(" ", 1)[1]
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/v1/reload", json={}) as answer:
                assert answer.status == 401  # loopback Host or not: the API is not loopback-only
            auth = {"Authorization": f"Bearer {token}"}
            async with session.post(f"{base}/v1/reload", json={}, headers=auth) as answer:
                assert answer.status == 200
    finally:
        await server.close()


async def test_sipdispatch_ctl_writes_to_a_loopback_api_without_a_token(tmp_path: Path) -> None:
    port = free_port()
    server = await _started(tmp_path, f"127.0.0.1:{port}")
    try:
        url = f"http://127.0.0.1:{port}"
        assert await asyncio.to_thread(ctl.main, ["--url", url, "reload"]) == 0
        args = ["--url", url, "set-state", "dx", "1", "sip:127.0.0.2:5060"]
        assert await asyncio.to_thread(ctl.main, args) == 0
        assert server.table is not None
        assert server.table.find(1, "sip:127.0.0.2:5060").runtime.health.code == "DX"
    finally:
        await server.close()


def test_sipdispatch_ctl_in_kubernetes_mode_refuses_a_bad_state_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No API server anywhere: the code is refused first, by name.
    missing = str(tmp_path / "no.kubeconfig")
    args = ["--dispatcherset", "voice", "--kubeconfig", missing, "set-state", "up", "1", "sip:a"]
    assert ctl.main(args) == 1
    assert "unknown state 'up'; expected one of" in capsys.readouterr().err
    args[5] = "dx"
    assert ctl.main([*args[:-1], "tel:+4930"]) == 1
    assert "not a SIP URI" in capsys.readouterr().err
    assert ctl.main(args) == 1
    assert "kubeconfig not found" in capsys.readouterr().err


def test_sipdispatch_ctl_in_kubernetes_mode_is_for_set_state_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        ctl.main(["--dispatcherset", "voice", "list"])
    assert "list talks to one proxy's control API" in capsys.readouterr().err
