"""Listeners as given (``--listen``, YAML ``listen``), their advertised addresses, and tables
whose ``socket=`` names a listener the proxy lacks: refused with the set, destination and
socket named, the previous table serving on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sipdispatch.dispatch.config import ProxyConfig
from sipdispatch.dispatch.uris import ListenAddress, SocketAddress, parse_listen
from sipdispatch.proxy.core import Listener, Signer
from sipdispatch.proxy.engine import Engine
from sipdispatch.proxy.healthbook import HealthBook
from sipdispatch.proxy.server import ProxyServer, make_listeners
from sipdispatch.proxy.settings import DEFAULTS, ProxySettings, core_settings, probe_settings
from sipdispatch.proxy.tablekeeper import TableKeeper
from sipdispatch.proxy.tables import FileTableSource, TableError
from sipphelpers import free_port

LISTENERS = (
    Listener("udp:127.0.0.1:5060", "udp", ("127.0.0.1", 5060), ("127.0.0.1", 5060)),
    Listener("udp:127.0.0.2:5060", "udp", ("127.0.0.2", 5060), ("127.0.0.2", 5060)),
)


def test_a_listener_may_advertise_an_address_of_its_own() -> None:
    assert parse_listen("udp:10.0.0.1:5060") == ListenAddress(
        SocketAddress("udp", "10.0.0.1", 5060)
    )
    given = parse_listen("udp:10.0.0.1:5060 advertise 203.0.113.1:5080")
    assert given.advertise == ("203.0.113.1", 5080)
    assert str(given) == "udp:10.0.0.1:5060 advertise 203.0.113.1:5080"
    assert parse_listen("tcp:[::1]:5060 advertise sip.example.com").advertise == (
        "sip.example.com",
        None,
    )


@pytest.mark.parametrize(
    "text",
    ["udp:10.0.0.1:5060 advertise", "udp:10.0.0.1:5060 announce 1.2.3.4", "udp:10.0.0.1 x"],
)
def test_a_malformed_listener_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="proto:host:port"):
        parse_listen(text)


def test_the_yaml_listen_takes_an_advertised_address_too() -> None:
    config = ProxyConfig.model_validate(
        {"listen": ["udp:10.0.0.1:5060 advertise 203.0.113.1"], "sets": []}
    )
    assert [str(x) for x in config.listeners()] == ["udp:10.0.0.1:5060 advertise 203.0.113.1"]


def test_each_listener_advertises_its_own_then_the_global_then_its_address() -> None:
    listens = [
        parse_listen("udp:127.0.0.1:5060 advertise 203.0.113.1"),
        parse_listen("udp:127.0.0.2:5070"),
        parse_listen("udp:[::1]:5060"),
    ]
    own = make_listeners(listens, None)
    assert [x.advertise for x in own] == [
        ("203.0.113.1", 5060),  # no port given: the listener's
        ("127.0.0.2", 5070),
        ("::1", 5060),
    ]
    assert [x.family for x in own] == [4, 4, 6]
    assert [x.id for x in own] == ["udp:127.0.0.1:5060", "udp:127.0.0.2:5070", "udp:[::1]:5060"]
    shared = make_listeners(listens, "sip.example.com:5062")
    assert [x.advertise for x in shared] == [
        ("203.0.113.1", 5060),
        ("sip.example.com", 5062),
        ("sip.example.com", 5062),
    ]


def write(path: Path, socket: str) -> None:
    path.write_text(
        "sets:\n- id: 1\n  destinations:\n"
        "  - {uri: 'sip:127.0.0.5:5060'}\n"
        f"  - {{uri: 'sip:127.0.0.6:5060', socket: '{socket}'}}\n"
    )


async def test_a_table_naming_a_socket_the_proxy_lacks_is_refused_and_the_last_serves(
    tmp_path: Path,
) -> None:
    path = tmp_path / "table.yaml"
    write(path, "udp:127.0.0.2:5060")
    book = HealthBook(probe_settings(None, DEFAULTS), clock=lambda: 1.0, max_dialog_age=1.0)
    source = FileTableSource(path, kamailio_format=False, algorithm=4, default_set=None)
    keeper = TableKeeper(source, DEFAULTS, book)
    loaded = await keeper.first()
    assert keeper.table is not None
    settings = core_settings(loaded.config, DEFAULTS, {}, ("127.0.0.1", 5060), listeners=LISTENERS)
    engine = Engine(settings, keeper.table, Signer())
    engine.check(loaded.table)  # every socket it names is a listener
    keeper.engine = engine
    served = keeper.table
    assert engine.core.sockets == {"127.0.0.6~5060~udp": "udp:127.0.0.2:5060"}

    write(path, "udp:127.0.0.9:5060")
    with pytest.raises(TableError) as refused:
        await keeper.reload()
    assert str(refused.value) == (
        "set 1, destination sip:127.0.0.6:5060: socket udp:127.0.0.9:5060 is not a listener"
        " of this proxy (listening on udp:127.0.0.1:5060, udp:127.0.0.2:5060)"
    )
    assert keeper.table is served
    assert engine.table is served


async def test_the_yaml_config_names_listeners_their_addresses_and_the_default(
    tmp_path: Path,
) -> None:
    first, second = free_port("127.0.0.1"), free_port("127.0.0.2")
    path = tmp_path / "config.yaml"
    path.write_text(
        f"listen:\n- udp:127.0.0.1:{first}\n- udp:127.0.0.2:{second} advertise 203.0.113.2\n"
        "advertise: sip.example.com:5070\n"
        "probing: {mode: 'off'}\n"
        "sets:\n- id: 1\n  destinations:\n"
        f"  - {{uri: 'sip:127.0.0.5:5060', socket: 'udp:127.0.0.2:{second}'}}\n"
    )
    server = ProxyServer(
        FileTableSource(path, kamailio_format=False, algorithm=4, default_set=None),
        ProxySettings(control=""),
    )
    await server.start()
    try:
        assert [(x.id, x.local, x.advertise) for x in server.sockets] == [
            (f"udp:127.0.0.1:{first}", ("127.0.0.1", first), ("sip.example.com", 5070)),
            (f"udp:127.0.0.2:{second}", ("127.0.0.2", second), ("203.0.113.2", second)),
        ]
        assert server.engine is not None
        assert set(server.engine.udp_by_id) == {x.id for x in server.sockets}
    finally:
        await server.close()


async def test_a_first_table_naming_a_socket_the_proxy_lacks_stops_the_start(
    tmp_path: Path,
) -> None:
    port = free_port("127.0.0.1")
    path = tmp_path / "table.yaml"
    write(path, "udp:127.0.0.9:5060")
    server = ProxyServer(
        FileTableSource(path, kamailio_format=False, algorithm=4, default_set=None),
        ProxySettings(listen=(f"udp:127.0.0.1:{port}",), control=""),
    )
    try:
        with pytest.raises(
            TableError, match=re.escape("socket udp:127.0.0.9:5060 is not a listener")
        ):
            await server.start()
    finally:
        await server.close()
