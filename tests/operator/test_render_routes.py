"""DispatcherSets carrying their match: the table's routes, conflicts named by field."""

from __future__ import annotations

from dataclasses import dataclass

from opfixtures import dset, endpoint, endpoint_slice

from sipdispatch.dispatch import configfile, routes
from sipdispatch.dispatch.destinations import DestinationTable
from sipdispatch.operator.memory import Memory
from sipdispatch.operator.render import render

NOW = 1_900_000_000.0
ASTERISK = {
    "setId": 1,
    "gateways": [{"service": "asterisk"}],
    "match": {"source": ["set:2", "198.51.100.0/24"], "requestUser": "^\\+?4930"},
}
CARRIERS = {
    "setId": 2,
    "destinations": [{"uri": "sip:203.0.113.10:5060"}],
    "match": {"source": ["set:1"]},
    "priority": 10,
}
SLICES = {"asterisk": [endpoint_slice("asterisk-a", [endpoint("10.1.0.5", pod="asterisk-0")])]}


@dataclass
class Req:
    source_host: str
    request_uri_user: str | None = "+4930123"
    method: str = "INVITE"
    request_uri_host: str | None = "sip.example.com"

    def header(self, name: str) -> str | None:
        return None


def decide(text: str, req: Req) -> int | routes.Refusal:
    config = configfile.parse_config(text, "table.yaml")
    table = DestinationTable.build(config.to_table_config(), None, 0.0)
    assert table.routes is not None
    return table.routes.decide(req)


def test_each_set_carries_its_match_into_the_table_by_priority() -> None:
    rendering = render(
        [dset("asterisk", ASTERISK), dset("carriers", CARRIERS)], SLICES, Memory(), NOW
    )
    assert rendering.data["routes"] == [
        {"name": "carriers", "match": {"source": ["set:1"]}, "set": 2},
        {"name": "asterisk", "match": ASTERISK["match"], "set": 1},
    ]
    assert decide(rendering.text, Req("203.0.113.10")) == 1  # a carrier, a DID in range
    assert decide(rendering.text, Req("10.1.0.5")) == 2  # asterisk's pod calls out
    assert decide(rendering.text, Req("192.0.2.1")) == routes.UNTRUSTED
    assert rendering.sets["asterisk"].takes == "from set:2,198.51.100.0/24 user~^\\+?4930"
    assert rendering.sets["carriers"].takes == "from set:1"


def test_without_matches_there_are_no_routes() -> None:
    plain = {key: value for key, value in CARRIERS.items() if key != "match"}
    rendering = render([dset("carriers", plain)], {}, Memory(), NOW)
    assert "routes" not in rendering.data
    assert rendering.sets["carriers"].takes == "unmatched"


def test_a_match_naming_no_set_of_the_proxy_keeps_the_last_good_spec() -> None:
    good = render([dset("asterisk", ASTERISK), dset("carriers", CARRIERS)], SLICES, Memory(), NOW)
    broken = {**CARRIERS, "match": {"source": ["set:7"]}}
    bad = render(
        [dset("asterisk", ASTERISK), dset("carriers", broken, generation=2)],
        SLICES,
        good.memory,
        NOW + 1,
    )
    assert bad.text == good.text
    carriers = bad.sets["carriers"]
    assert [str(i) for i in carriers.issues] == [
        "spec.match.source[0]: set 7 is not a set of proxy sipdispatch"
    ]
    assert carriers.served_generation == 1


def test_the_same_match_at_the_same_priority_is_ambiguous_and_the_newer_set_stays_out() -> None:
    first = dset("first", {**CARRIERS, "setId": 3}, created="2030-01-01T00:00:00Z")
    second = dset("second", {**CARRIERS, "setId": 4}, created="2030-01-02T00:00:00Z")
    plain = dset("plain", {"setId": 1})
    rendering = render([second, first, plain], {}, Memory(), NOW)
    assert [r["name"] for r in rendering.data["routes"]] == ["first"]
    assert rendering.sets["second"].set_id is None
    assert str(rendering.sets["second"].issues[0]) == (
        "spec.match: the same match and priority as DispatcherSet first: which set takes these "
        "requests would be ambiguous"
    )
    higher = dset("second", {**CARRIERS, "setId": 4, "priority": 11})
    rendering = render([higher, first, plain], {}, Memory(), NOW)
    assert [r["name"] for r in rendering.data["routes"]] == ["second", "first"]


def test_an_invalid_regex_is_refused_naming_the_field() -> None:
    bad = {**ASTERISK, "match": {"requestUser": "^(4930"}}
    rendering = render([dset("asterisk", bad)], SLICES, Memory(), NOW)
    issue = rendering.sets["asterisk"].issues[0]
    assert issue.location == "spec.match.requestUser"
    assert "invalid regex" in issue.message
