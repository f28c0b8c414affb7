"""Kamailio dispatcher.list parsing: good files and one clear error per bad line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipdispatch.dispatch import tablefile, tlsverify
from sipdispatch.dispatch.tablefile import TableFileError
from sipdispatch.dispatch.tlsverify import TlsVerification

EXAMPLES = Path(__file__).parents[2] / "examples"

KAMAILIO_SAMPLE = """\
#
# dispatcher destination sets (groups)
#

# proxies
2 sip:127.0.0.1:5080;transport=tcp 0 10 class=4;prefix=448;strip=2
2 sip:127.0.0.1:5082;px=vx 0 5 duid=abc;socket=udp:192.168.0.125:5060;pipe=p10

# gateways
1 sip:127.0.0.1:7070 0 0 duid=xyz;maxload=20
1 sip:127.0.0.1:7072 0 5
1 sip:127.0.0.1:7074
"""


def test_the_kamailio_documentation_sample_parses() -> None:
    config = tablefile.parse_table(KAMAILIO_SAMPLE, algorithm=10)
    assert [s.set_id for s in config.sets] == [2, 1]
    proxies, gateways = config.sets
    assert proxies.algorithm == gateways.algorithm == "call-load"
    tcp, px = proxies.destinations
    assert (tcp.transport, tcp.port, tcp.priority) == ("tcp", 5080, 10)
    assert dict(tcp.attrs) == {"class": "4", "prefix": "448", "strip": "2"}
    assert (px.duid, px.socket, px.attrs["pipe"]) == ("abc", "udp:192.168.0.125:5060", "p10")
    assert [(d.port, d.priority, d.maxload) for d in gateways.destinations] == [
        (7070, 0, 20),
        (7072, 5, 0),
        (7074, 0, 0),
    ]


def test_the_example_file_is_set_1_with_the_two_loopback_gateways() -> None:
    config = tablefile.load_table_file(EXAMPLES / "dispatcher.list")
    [only] = config.sets
    assert only.set_id == 1
    assert only.algorithm == "round-robin"
    assert [d.uri for d in only.destinations] == ["sip:127.0.0.2:5060", "sip:127.0.0.3:5060"]


def test_comments_blank_lines_whitespace_and_trailing_semicolons() -> None:
    text = (
        "   # indented comment\n"
        "\n"
        "\t1\tsip:10.0.0.1   8  3 weight=5;   # trailing comment\n"
        "1 sip:10.0.0.2 0 0 note=a#b\n"
        "\r\n"
    )
    [dest_set] = tablefile.parse_table(text, algorithm="weight").sets
    first, second = dest_set.destinations
    assert (first.flags, first.priority, first.weight) == (8, 3, 5)
    assert second.attrs["note"] == "a#b"  # '#' only starts a comment at the start of a field


def test_an_empty_file_is_an_empty_table() -> None:
    assert tablefile.parse_table("# nothing yet\n").sets == ()


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("1 sip:10.0.0.1\n\n1 foo\n", "dispatcher.list:3: uri: 'foo' is not a SIP URI"),
        ("1\n", "dispatcher.list:1: uri: missing"),
        ("one sip:10.0.0.1\n", "dispatcher.list:1: setid: 'one' is not"),
        ("-1 sip:10.0.0.1\n", "dispatcher.list:1: setid:"),
        ("1 sip:10.0.0.1 x\n", "dispatcher.list:1: flags: 'x' is not"),
        ("1 sip:10.0.0.1 128\n", "dispatcher.list:1: flags: 128 has unknown bits"),
        ("1 sip:10.0.0.1 0 high\n", "dispatcher.list:1: priority: 'high' is not an integer"),
        ("1 sip:10.0.0.1 0 0 weight\n", "dispatcher.list:1: attrs: 'weight' is not name=value"),
        ("1 sip:10.0.0.1 0 0 a=1;a=2\n", "dispatcher.list:1: attrs: 'a' is given twice"),
        ("1 sip:10.0.0.1 0 0 weight=x\n", "dispatcher.list:1: attrs.weight: 'x' is not"),
        ("1 sip:10.0.0.1 0 0 maxload=-2\n", "dispatcher.list:1: attrs.maxload:"),
        ("1 sip:10.0.0.1 0 0 socket=udp:a:b\n", "dispatcher.list:1: attrs.socket:"),
        ("1 sip:10.0.0.1 0 0 ping_from=nobody\n", "dispatcher.list:1: attrs.ping_from:"),
        ("1 sips:10.0.0.1 0 0 tls_verify=2\n", "dispatcher.list:1: attrs.tls_verify: '2' is"),
        ("1 sips:10.0.0.1 0 0 tls_ca=\n", "dispatcher.list:1: attrs.tls_ca: empty"),
        ("1 sips:10.0.0.1 0 0 tls_server_name=a_b\n", "dispatcher.list:1: attrs.tls_server_name:"),
        ("1 sip:10.0.0.1 0 0 a=1 b=2\n", "dispatcher.list:1: attrs: unexpected text"),
        ("1 sip:10.0.0.1:0\n", "dispatcher.list:1: uri: 'sip:10.0.0.1:0' has an invalid port"),
        (
            "# gateways\n1 sip:10.0.0.1\n1 SIP:10.0.0.1:5060\n",
            "dispatcher.list:3: uri: SIP:10.0.0.1:5060 is already in set 1 (line 2)",
        ),
    ],
)
def test_each_bad_line_names_its_line_and_field(text: str, prefix: str) -> None:
    with pytest.raises(TableFileError) as info:
        tablefile.parse_table(text)
    assert str(info.value).startswith(prefix)


def test_errors_name_the_file_they_came_from(tmp_path: Path) -> None:
    path = tmp_path / "gateways.list"
    path.write_text("1 sip:10.0.0.1\n2 sip:\n")
    with pytest.raises(TableFileError) as info:
        tablefile.load_table_file(path)
    assert str(info.value).startswith(f"{path}:2: uri: 'sip:' is not a SIP URI")
    assert (info.value.line, info.value.field) == (2, "uri")


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(TableFileError, match="cannot read"):
        tablefile.load_table_file(tmp_path / "missing.list")


def test_the_same_uri_may_be_in_two_sets() -> None:
    config = tablefile.parse_table("1 sip:10.0.0.1\n2 sip:10.0.0.1\n")
    assert [s.set_id for s in config.sets] == [1, 2]


def test_a_bad_algorithm_is_the_callers_error_not_the_files() -> None:
    with pytest.raises(ValueError, match="unknown algorithm") as info:
        tablefile.parse_table("1 sip:10.0.0.1\n", algorithm="fastest")
    assert not isinstance(info.value, TableFileError)
    config = tablefile.parse_table("1 sip:10.0.0.1\n", algorithm=7, hash_key="ruri.user")
    assert (config.sets[0].algorithm, config.sets[0].hash_key) == ("hash-key", "ruri.user")


def test_tls_attrs_override_the_sets_verification_per_destination() -> None:
    [dest_set] = tablefile.parse_table(
        "1 sips:10.0.0.1 0 0 tls_verify=0;tls_server_name=GW.example\n"
        "1 sips:10.0.0.2 0 0 tls_ca=/etc/ca.pem\n1 sips:10.0.0.3\n"
    ).sets
    base = TlsVerification(True, "/etc/set-ca.pem", None)
    found = [tlsverify.from_attrs(d.attrs, base)[0] for d in dest_set.destinations]
    assert found == [
        TlsVerification(False, "/etc/set-ca.pem", "gw.example"),
        TlsVerification(True, "/etc/ca.pem", None),
        base,
    ]
