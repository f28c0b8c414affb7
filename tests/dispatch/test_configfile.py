"""The YAML configuration: model, defaults, and errors naming file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sipdispatch.dispatch import config, configfile, health, tablefile
from sipdispatch.dispatch.configfile import ConfigError, load_config
from sipdispatch.dispatch.tableconfig import TlsVerification

EXAMPLES = Path(__file__).parents[2] / "examples"


def parse(text: str) -> config.ProxyConfig:
    return configfile.parse_config(textwrap.dedent(text), "config.yaml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


def test_the_example_matches_the_example_dispatcher_list() -> None:
    loaded = configfile.load_config(EXAMPLES / "sipdispatch.yaml")
    table = loaded.to_table_config()
    listed = tablefile.load_table_file(EXAMPLES / "dispatcher.list")
    assert table.default_set == 1
    for ours, theirs in zip(table.sets, listed.sets, strict=True):
        assert (ours.set_id, ours.algorithm) == (theirs.set_id, theirs.algorithm)
        assert [d.key for d in ours.destinations] == [d.key for d in theirs.destinations]
        assert [d.uri for d in ours.destinations] == ["sip:127.0.0.2:5060", "sip:127.0.0.3:5060"]
        assert [d.duid for d in ours.destinations] == [d.duid for d in theirs.destinations]


def test_defaults() -> None:
    loaded = parse("{}")
    assert loaded.listen == ["udp:0.0.0.0:5060"]
    assert loaded.sets == []
    assert loaded.probing.policy() == health.HealthPolicy(3, 2, health.ProbingMode.ALL)
    assert loaded.probing.accepts(200)
    assert not loaded.probing.accepts(404)
    assert loaded.failover.triggers(503)
    assert not loaded.failover.triggers(486)
    assert configfile.parse_config("", "empty.yaml") == loaded


def test_a_full_configuration_in_camel_case() -> None:
    loaded = parse(
        """
        listen: ["udp:127.0.0.1:5060", "tcp:[::1]:5060"]
        advertise: sip.example.com:5060
        defaultSet: 2
        sets:
          - id: 2
            algorithm: 7
            hashKey: ruri.user
            destinations:
              - uri: sip:10.0.0.5:5060;transport=tcp
                priority: 10
                weight: 50
                rweight: 5
                maxLoad: 20
                duid: gw5
                socket: udp:10.0.0.1:5060
                pingFrom: sip:probe@lb.example.com
                attrs: {class: "4"}
              - uri: sips:gw6.example.com
                disabled: true
        probing:
          mode: 0
          interval: 5
          timeout: 1.5
          failureThreshold: 1
          successThreshold: 4
          replyCodes: [200, 404, "3xx"]
          from: sip:lb@example.com
        failover:
          codes: [408, "5xx"]
          onTimeout: false
          maxAttempts: 5
        """
    )
    assert [str(a) for a in loaded.listeners()] == ["udp:127.0.0.1:5060", "tcp:[::1]:5060"]
    assert loaded.probing.policy() == health.HealthPolicy(1, 4, health.ProbingMode.FAILED)
    assert loaded.probing.accepts(404)
    assert loaded.probing.accepts(302)
    assert not loaded.probing.accepts(500)
    assert loaded.failover.triggers(408)
    assert loaded.failover.statuses() == frozenset({408, *range(500, 600)})
    assert not loaded.failover.on_timeout
    table = loaded.to_table_config()
    [dest_set] = table.sets
    assert (dest_set.set_id, dest_set.algorithm, dest_set.hash_key) == (2, "hash-key", "ruri.user")
    first, second = dest_set.destinations
    assert (first.weight, first.rweight, first.maxload, first.duid) == (50, 5, 20, "gw5")
    assert (first.priority, first.transport, first.attrs["class"]) == (10, "tcp", "4")
    assert first.socket == "udp:10.0.0.1:5060"
    assert first.ping_from == "sip:probe@lb.example.com"
    assert second.disabled
    assert second.transport == "tls"


def test_snake_case_names_are_accepted_too() -> None:
    loaded = parse(
        """
        default_set: 1
        sets: [{id: 1, destinations: [{uri: "sip:10.0.0.1", max_load: 3}]}]
        probing: {failure_threshold: 2}
        """
    )
    assert loaded.default_set == 1
    assert loaded.sets[0].destinations[0].max_load == 3
    assert loaded.probing.failure_threshold == 2


def test_sets_without_an_algorithm_take_the_default() -> None:
    loaded = parse("sets: [{id: 1}, {id: 2, algorithm: hash-callid}]")
    table = loaded.to_table_config(default_algorithm=9)
    assert [s.algorithm for s in table.sets] == ["weight", "hash-callid"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            """
            sets:
              - id: 1
                destinations:
                  - uri: sip:10.0.0.1
                  - uri: foo
            """,
            "config.yaml:6: sets[0].destinations[1].uri: 'foo' is not a SIP URI",
        ),
        (
            """
            sets:
              - id: 1
                algorithm: fastest
            """,
            "config.yaml:4: sets[0].algorithm: unknown algorithm 'fastest'",
        ),
        (
            """
            sets:
              - id: 1
                destinations:
                  - {uri: "sip:10.0.0.1", maxLoad: -1}
            """,
            "config.yaml:5: sets[0].destinations[0].maxLoad: Input should be greater than or "
            "equal to 0 (got -1)",
        ),
        (
            """
            sets:
              - id: 1
                destinations:
                  - uri: sip:10.0.0.1
                    wieght: 3
            """,
            "config.yaml:6: sets[0].destinations[0].wieght: unknown field",
        ),
        (
            """
            sets:
              - id: 1
                destinations:
                  - priority: 3
            """,
            "config.yaml:5: sets[0].destinations[0].uri: required field is missing",
        ),
        (
            """
            sets:
              - id: 1
                destinations:
                  - uri: sip:10.0.0.1
                  - uri: SIP:10.0.0.1:5060
            """,
            "config.yaml:6: sets[0].destinations[1].uri: same destination as destinations[0]",
        ),
        (
            """
            sets:
              - id: 1
              - id: 1
            """,
            "config.yaml:4: sets[1].id: set 1 is already defined by sets[0]",
        ),
        (
            """
            defaultSet: 4
            sets: [{id: 1}]
            """,
            "config.yaml:2: defaultSet: set 4 is not defined in sets",
        ),
        (
            """
            sets:
              - id: 1
                algorithm: hash-key
            """,
            "config.yaml:3: sets[0].hashKey: required by algorithm hash-key",
        ),
        (
            """
            sets:
              - id: 1
                algorithm: round-robin
                hashKey: X-Queue
            """,
            "config.yaml:5: sets[0].hashKey: only used by algorithm hash-key",
        ),
        (
            """
            sets:
              - id: 1
                destinations:
                  - uri: sip:10.0.0.1
                    attrs: {weight: "5"}
            """,
            "config.yaml:6: sets[0].destinations[0].attrs.weight: 'weight' has its own field",
        ),
        (
            """
            sets:
              - id: 1
                tls:
                  serverName: "gw example"
            """,
            "config.yaml:5: sets[0].tls.serverName: 'gw example' is not a host name or IP",
        ),
        (
            """
            sets:
              - id: 1
                tls: {verify: maybe}
            """,
            "config.yaml:4: sets[0].tls.verify: Input should be a valid boolean",
        ),
        (
            """
            tls:
              certFile: /etc/sipdispatch/tls/tls.crt
            """,
            "config.yaml:3: tls.keyFile: required field is missing",
        ),
        (
            """
            listen:
              - udp:0.0.0.0:5060
              - tls:sip.example.com:5061
            """,
            "config.yaml:4: listen[1]: 'tls:sip.example.com:5061': listen on an IP address",
        ),
        ("advertise: 'sip.example.com:99999'", "config.yaml:1: advertise: 'sip.example.com:99999'"),
        (
            """
            probing:
              interval: 2
              timeout: 3
            """,
            "config.yaml:4: probing.timeout: 3s is longer than the interval",
        ),
        (
            """
            probing:
              replyCodes: [200, 7xx]
            """,
            "config.yaml:3: probing.replyCodes[1]: '7xx' is not a status code",
        ),
        ("probing: {mode: sometimes}", "config.yaml:1: probing.mode: unknown probing mode"),
        (
            """
            failover:
              codes: [500, 603]
            """,
            "config.yaml:3: failover.codes[1]: '603': only 4xx and 5xx answers",
        ),
        (
            """
            failover:
              maxAttempts: 0
            """,
            "config.yaml:3: failover.maxAttempts: Input should be greater than or equal to 1",
        ),
        ("- just\n- a list\n", "config.yaml:1: Input should be a valid dictionary"),
    ],
)
def test_each_error_names_line_and_field(text: str, message: str) -> None:
    assert error_of(text).startswith(message)


def test_all_problems_are_reported_in_one_message() -> None:
    message = error_of(
        """
        listen: ["udp:nowhere:5060"]
        sets:
          - id: x
        probing:
          bogus: 1
        """
    )
    lines = message.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("config.yaml:2: listen[0]: 'udp:nowhere:5060': listen on an IP")
    assert lines[1].startswith("config.yaml:4: sets[0].id: Input should be a valid integer")
    assert lines[2] == "config.yaml:6: probing.bogus: unknown field"


def test_yaml_syntax_errors_name_the_line() -> None:
    message = error_of(
        """
        sets:
          - id: 1
            destinations: [
        """
    )
    assert message.startswith("config.yaml:5: invalid YAML:")


def test_duplicate_keys_are_errors_not_silently_dropped() -> None:
    message = error_of(
        """
        sets:
          - id: 1
            algorithm: hash-callid
            algorithm: round-robin
        """
    )
    assert message == "config.yaml:5: sets[0].algorithm: key given twice"


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text("sets:\n  - id: 1\n    destinations: [{uri: nope}]\n")
    with pytest.raises(ConfigError) as info:
        configfile.load_config(path)
    assert str(info.value).startswith(f"{path}:3: sets[0].destinations[0].uri: 'nope'")
    [issue] = info.value.issues
    assert issue.path == ("sets", 0, "destinations", 0, "uri")
    with pytest.raises(ConfigError, match="cannot read"):
        configfile.load_config(tmp_path / "missing.yaml")


def test_validate_config_takes_parsed_data_and_names_fields_without_lines() -> None:
    with pytest.raises(ConfigError) as info:
        configfile.validate_config({"sets": [{"id": 1, "destinations": [{"uri": 5}]}]}, "crd")
    assert str(info.value).startswith("crd: sets[0].destinations[0].uri: Input should be")


def test_the_schema_accepts_names_or_numbers_for_kubernetes() -> None:
    schema = config.ProxyConfig.model_json_schema(by_alias=True)
    set_spec = schema["$defs"]["SetSpec"]
    assert set_spec["additionalProperties"] is False
    assert "hashKey" in set_spec["properties"]
    algorithm = set_spec["properties"]["algorithm"]
    assert "x-kubernetes-int-or-string" in str(algorithm)


def test_a_sets_tls_settings_reach_its_table_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "sets:\n  - id: 1\n"
        "    tls: {verify: false, caFile: /etc/ca.pem, serverName: GW.Example.com}\n"
        "  - id: 2\n"
    )
    table = load_config(path).to_table_config()
    verifying, default = (s.tls for s in table.sets)
    assert verifying == TlsVerification(False, "/etc/ca.pem", "gw.example.com")
    assert default is None
