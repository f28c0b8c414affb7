"""The proxy's settings: each default declared once, and the command line takes them from there."""

from __future__ import annotations

import dataclasses
import resource
import time

import pytest

from sipdispatch.dispatch.config import ProbingSpec, ProxyConfig
from sipdispatch.proxy import cli
from sipdispatch.proxy.core import CoreSettings
from sipdispatch.proxy.core.policy import RequestPolicy
from sipdispatch.proxy.settings import (
    DEFAULTS,
    TCP_CONNECTIONS,
    ProbeSettings,
    ProxySettings,
    core_settings,
    probe_settings,
    with_failover,
)
from sipdispatch.sip.limits import MessageLimits

ADDRESS = ("127.0.0.1", 5060)


def test_the_command_lines_defaults_are_the_settings_defaults() -> None:
    args = cli.build_parser().parse_args(["--dispatcher-list", "x"])
    chosen = {
        "answer_timeout": args.answer_timeout,
        "timer_t1": args.timer_t1,
        "drain_timeout": args.drain_timeout,
        "control": args.control,
        "max_dialog_age": args.max_dialog_age,
        "dialog_lifetime": args.dialog_lifetime,
    }
    assert chosen == {name: getattr(DEFAULTS, name) for name in chosen}
    assert cli._probing(args) == DEFAULTS.probing


def test_the_cores_own_defaults_are_the_proxys() -> None:
    core = CoreSettings(local={"udp": ADDRESS}, advertise=ADDRESS)
    built = core_settings(None, DEFAULTS, {"udp": ADDRESS}, ADDRESS)
    # A dispatcher.list with no flags runs the core as it comes, on the wall clock (routes
    # expire by the time every replica shares, not by one process's monotonic clock), its
    # policy limited to the proxy's own addresses (the core alone knows none).
    own = RequestPolicy(domains=frozenset({ADDRESS[0]}))
    assert dataclasses.replace(built, clock_offset=0.0) == dataclasses.replace(core, policy=own)
    assert built.clock_offset == pytest.approx(time.time() - time.monotonic(), abs=1.0)


def test_a_configs_probing_wins_over_the_command_lines() -> None:
    settings = ProxySettings(probing=ProbingSpec.model_validate({"interval": 3}))
    config = ProxyConfig.model_validate({"probing": {"interval": 7}})
    assert probe_settings(None, settings).interval == 3
    assert probe_settings(config, settings).interval == 7
    assert probe_settings(config, settings) == ProbeSettings.from_spec(config.probing)


def test_timers_scale_with_t1() -> None:
    timers = core_settings(None, ProxySettings(timer_t1=1.0), {}, ADDRESS).timers
    assert (timers.t1, timers.t2, timers.t4) == (1.0, 8.0, 5.0)


def test_a_failover_section_replaces_only_what_it_changes() -> None:
    current = core_settings(None, ProxySettings(answer_timeout=1.5), {}, ADDRESS)
    assert with_failover(current, None) is current
    config = ProxyConfig.model_validate({"failover": {"codes": ["502"], "maxAttempts": 2}})
    changed = with_failover(current, config)
    assert changed.failover_codes == {408, 502}
    assert (changed.max_attempts, changed.answer_timeout) == (2, 1.5)


def test_the_message_limits_flags_reach_the_core_and_default_to_the_limits_own() -> None:
    args = cli.build_parser().parse_args(["--dispatcher-list", "x", "--max-via", "9"])
    limits = ("max_message_size", "max_headers", "max_line_length", "max_route")
    assert {n: getattr(args, n) for n in limits} == {n: getattr(DEFAULTS, n) for n in limits}
    assert DEFAULTS.limits() == MessageLimits()
    settings = ProxySettings(max_via=args.max_via, max_message_size=4000)
    core = core_settings(None, settings, {}, ADDRESS)
    assert (core.limits.max_via, core.limits.max_message_size) == (9, 4000)
    reloaded = with_failover(core, ProxyConfig.model_validate({"failover": {"maxAttempts": 2}}))
    assert reloaded.limits == core.limits  # a reload changes failover only


def test_the_admission_flags_default_to_the_settings_and_reach_the_core() -> None:
    args = cli.build_parser().parse_args(["--dispatcher-list", "x"])
    names = ("source_rate", "dialog_rate", "source_ban", "rate_sources", "max_transactions")
    names += ("retry_after", "tcp_max_connections", "tcp_max_per_source", "tcp_idle_timeout")
    assert {n: getattr(args, n) for n in names} == {n: getattr(DEFAULTS, n) for n in names}
    assert args.rate_reply == "drop"
    settings = ProxySettings(source_rate=7, max_transactions=9, rate_reply_udp=True)
    admission = core_settings(None, settings, {}, ADDRESS).admission
    assert (admission.source_rate, admission.max_transactions, admission.reply_udp) == (7, 9, True)


def test_the_tcp_connection_cap_stays_below_the_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert DEFAULTS.tcp_limits().max_connections == 512
        assert ProxySettings(tcp_max_connections=0).tcp_limits().max_connections == 0
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft >= 2 * TCP_CONNECTIONS:
        assert DEFAULTS.tcp_limits().max_connections == TCP_CONNECTIONS


def test_the_request_policy_flags_reach_the_settings_and_default_to_them() -> None:
    args = cli.build_parser().parse_args(["--dispatcher-list", "x"])
    names = ("request_policy", "allow_methods", "deny_user_agents", "max_forwards")
    assert {n: getattr(args, n) for n in names} == {n: getattr(DEFAULTS, n) for n in names}
    assert (args.allow_domains, args.loop_detection, args.refuse_control_characters) == (
        [],
        True,
        True,
    )
    args = cli.build_parser().parse_args(
        [
            *("--dispatcher-list", "x", "--allow-methods", "invite,REGISTER"),
            *("--allow-domain", "sip.example.com", "--deny-user-agents", ""),
            *("--max-forwards", "20", "--no-loop-detection", "--allow-control-characters"),
        ]
    )
    settings = ProxySettings(
        allow_methods=args.allow_methods,
        allow_domains=tuple(args.allow_domains),
        deny_user_agents=args.deny_user_agents,
        max_forwards=args.max_forwards,
        loop_detection=args.loop_detection,
        refuse_control_characters=args.refuse_control_characters,
    )
    policy = core_settings(None, settings, {"udp": ADDRESS}, ADDRESS).policy
    assert policy.methods == {"INVITE", "REGISTER", "ACK", "CANCEL"}
    assert policy.domains == {"sip.example.com", ADDRESS[0]}
    assert (policy.user_agents, policy.max_forwards, policy.loops, policy.controls) == (
        None,
        20,
        False,
        False,
    )
    off = cli.build_parser().parse_args(["--dispatcher-list", "x", "--no-request-policy"])
    assert off.request_policy is False
    for bad in ("0", "256"):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["--dispatcher-list", "x", "--max-forwards", bad])
