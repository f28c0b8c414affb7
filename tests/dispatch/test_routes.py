"""Routes: which set takes a request, trusted sources, no hairpin, and errors at load."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sipdispatch.dispatch import configfile, routes
from sipdispatch.dispatch.configfile import ConfigError
from sipdispatch.dispatch.destinations import DestinationTable

CONFIG = """
sets:
  - id: 1                       # asterisk
    destinations:
      - uri: sip:127.0.0.10:5060
      - uri: sip:127.0.0.11:5060
  - id: 2                       # carriers
    destinations:
      - uri: sip:127.0.0.20:5060
      - uri: sip:carrier.example.com:5060
routes:
  - name: carriers-to-asterisk
    match:
      source: ["set:2", "198.51.100.0/24"]
      requestUser: "^\\\\+?4930"
    set: 1
  - name: asterisk-to-carriers
    match: {source: ["set:1"]}
    set: 2
  - name: tenant
    match:
      source: ["127.0.0.0/8"]
      methods: [message]
      requestHost: SIP.example.com
      header: {name: X-Tenant, regex: "^acme$"}
    set: 1
  - name: no-options
    match: {source: ["127.0.0.5"], methods: [OPTIONS]}
    reject: {code: 405}
"""


@dataclass
class Req:
    source_host: str
    method: str = "INVITE"
    request_uri_user: str | None = "+4930123"
    request_uri_host: str | None = "sip.example.com"
    headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def table_of(text: str) -> DestinationTable:
    config = configfile.parse_config(textwrap.dedent(text), "routes.yaml")
    return DestinationTable.build(config.to_table_config(), None, 0.0)


def decide(table: DestinationTable, req: Req) -> int | routes.Refusal:
    assert table.routes is not None
    return table.routes.decide(req)


def test_carriers_reach_asterisk_and_asterisk_reaches_carriers() -> None:
    table = table_of(CONFIG)
    assert decide(table, Req("127.0.0.20")) == 1  # a carrier member, a DID in range
    assert decide(table, Req("198.51.100.7")) == 1  # a carrier by CIDR
    assert decide(table, Req("127.0.0.10", request_uri_user="+4930555")) == 2  # asterisk out
    assert decide(table, Req("127.0.0.11", request_uri_user="0049891")) == 2


def test_sources_no_route_trusts_get_403() -> None:
    table = table_of(CONFIG.replace('"127.0.0.0/8"', '"10.9.0.0/16"'))
    refusal = decide(table, Req("192.0.2.1"))
    assert refusal == routes.UNTRUSTED
    assert isinstance(refusal, routes.Refusal)
    assert (refusal.status, refusal.reason) == (403, "Forbidden")
    assert decide(table, Req("not-an-address")) == routes.UNTRUSTED


def test_a_carrier_call_outside_the_did_range_goes_nowhere_near_its_own_set() -> None:
    # From a carrier with a DID outside asterisk's range: the only other route that trusts
    # carriers would send it back into set 2 (it does not), the default set is the lowest, 1.
    table = table_of(CONFIG)
    assert decide(table, Req("127.0.0.20", request_uri_user="0049891")) == 1


def test_no_hairpin_into_the_default_set() -> None:
    table = table_of(CONFIG + "defaultSet: 2\n")
    assert decide(table, Req("127.0.0.20", request_uri_user="0049891")) == routes.HAIRPIN


def test_a_route_that_names_its_own_set_as_source_may_hairpin() -> None:
    text = """
    sets:
      - id: 1
        destinations: [{uri: "sip:127.0.0.10"}, {uri: "sip:127.0.0.11"}]
    routes:
      - name: back-in
        match: {source: ["set:1"]}
        set: 1
    """
    assert decide(table_of(text), Req("127.0.0.10")) == 1


def test_without_a_source_route_a_member_is_still_kept_out_of_its_set() -> None:
    text = """
    sets:
      - id: 1
        destinations: [{uri: "sip:127.0.0.10"}]
      - id: 2
        destinations: [{uri: "sip:127.0.0.20"}]
    routes:
      - {name: everyone-to-1, set: 1}
      - {name: else-to-2, set: 2}
    """
    table = table_of(text)
    assert decide(table, Req("127.0.0.10")) == 2
    assert decide(table, Req("127.0.0.99")) == 1  # nobody is untrusted: no route names sources


def test_every_match_part_must_hold() -> None:
    table = table_of(CONFIG)
    tenant = Req(
        "127.0.0.99", method="MESSAGE", request_uri_user="bob", headers={"x-tenant": "acme"}
    )
    assert decide(table, tenant) == 1
    # Each part wrong in turn: the route does not match, nothing else takes 127.0.0.99.
    others = [
        Req("127.0.0.99", method="INVITE", request_uri_user="bob", headers=tenant.headers),
        Req("127.0.0.99", "MESSAGE", "bob", "other.example.com", tenant.headers),
        Req("127.0.0.99", "MESSAGE", "bob", headers={"x-tenant": "acme-corp"}),
        Req("127.0.0.99", "MESSAGE", "bob"),
    ]
    for req in others:
        assert decide(table, req) == 1  # the default set (lowest id) takes what no route does
    assert table_of(CONFIG + "unrouted: {code: 404}\n").routes is not None
    unrouted = decide(table_of(CONFIG + "unrouted: {code: 404}\n"), others[0])
    assert unrouted == routes.Refusal(404, "Not Found", "unrouted")


def test_a_reject_route_answers_with_its_code() -> None:
    refusal = decide(table_of(CONFIG), Req("127.0.0.5", method="OPTIONS"))
    assert refusal == routes.Refusal(405, "", "route", "no-options")


def test_without_routes_there_is_no_route_table() -> None:
    table = table_of("sets: [{id: 3, destinations: [{uri: 'sip:127.0.0.2'}]}]")
    assert table.routes is None
    assert table.fallback_set == 3


def test_sources_are_remembered_in_a_bounded_cache() -> None:
    table = table_of(CONFIG)
    assert table.routes is not None
    for i in range(routes.SOURCE_CACHE_SIZE + 10):
        table.routes.decide(Req(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"))
    assert len(table.routes._sources) <= routes.SOURCE_CACHE_SIZE


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("    set: 1\n  - name: asterisk", "    set: 7\n  - name: asterisk"),
            "routes.yaml:16: routes[0].set: set 7 is not defined in sets",
        ),
        (
            ('"^\\\\+?4930"', '"^(4930"'),
            "routes.yaml:15: routes[0].match.requestUser: invalid regex '^(4930'",
        ),
        (
            ('["set:1"]', '["set:9"]'),
            "routes.yaml:18: routes[1].match.source[0]: set 9 is not defined in sets",
        ),
        (
            ('"198.51.100.0/24"', '"198.51.100.0/33"'),
            "routes.yaml:14: routes[0].match.source: '198.51.100.0/33' is neither a CIDR",
        ),
        (
            ('regex: "^acme$"', 'regex: "[a"'),
            "routes.yaml:25: routes[2].match.header.regex: invalid regex '[a'",
        ),
        (
            ("reject: {code: 405}", "set: 1\n    reject: {code: 405}"),
            "routes.yaml:29: routes[3].set: give either set or reject",
        ),
        (
            ("name: tenant", "name: no-options"),
            "routes.yaml:27: routes[3].name: already the name of routes[2]",
        ),
    ],
)
def test_a_bad_route_is_refused_naming_file_line_and_field(
    change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in CONFIG
    with pytest.raises(ConfigError) as info:
        configfile.parse_config(CONFIG.replace(old, new, 1), "routes.yaml")
    assert str(info.value).startswith(expected), str(info.value)


def test_the_routing_example_loads_and_routes_as_it_says() -> None:
    path = Path(__file__).parents[2] / "examples" / "routing.yaml"
    config = configfile.load_config(path)
    table = DestinationTable.build(config.to_table_config(), None, 0.0)
    assert decide(table, Req("127.0.0.4", request_uri_user="+493055")) == 1
    assert decide(table, Req("198.51.100.9", request_uri_user="493055")) == 1
    assert decide(table, Req("127.0.0.3", request_uri_user="0049891")) == 2
    assert decide(table, Req("127.0.0.5", request_uri_user="0049891")) == routes.HAIRPIN
    assert decide(table, Req("127.0.0.9")) == routes.UNTRUSTED
    register = decide(table, Req("127.0.0.2", method="REGISTER"))
    assert isinstance(register, routes.Refusal)
    assert (register.status, register.route) == (403, "no-registrations")
