"""The harness's parsers and checks on fixed input (no processes): what the sipp tests rely on
to tell a good run from a bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

import sipphelpers
from sipdispatch.proxy.transport.udp import RECEIVE_BUFFER
from sipphelpers import (
    KAMAILIO_TEMPLATE_DIR,
    SCENARIO_DIR,
    CallerResult,
    GatewayCall,
    HarnessError,
    calls_from_messages,
    dispatch_problems,
    parse_shortmsg_log,
    parse_sipp_stat_csv,
    percentile,
    render_template,
    response_delays,
    routing_report,
    scenario_path,
    split_problems,
)


def test_harness_importable_from_tests_dir() -> None:
    assert Path(sipphelpers.__file__).resolve() == Path(__file__).resolve().parents[1] / (
        "sipphelpers.py"
    )
    for name in ("uac", "uas", "uas_503", "uas_486", "uas_refuse_blocked", "uas_ring"):
        assert scenario_path(name) == SCENARIO_DIR / f"{name}.xml"
    with pytest.raises(HarnessError):
        scenario_path("no-such-scenario")


SHORTMSG = (
    "2026-11-28\t18:50:54.444032\t1795891854.444032\tR\t1-10150@127.0.0.1\tCSeq:1 INVITE\t"
    "INVITE sip:service@127.0.0.2:5090 SIP/2.0\n"
    "2026-11-28\t18:50:54.444277\t1795891854.444277\tS\t1-10150@127.0.0.1\tCSeq:1 INVITE\t"
    "SIP/2.0 100 Trying\n"
    "2026-11-28\t18:50:54.446613\t1795891854.446613\tS\t1-10150@127.0.0.1\tCSeq:1 INVITE\t"
    "SIP/2.0 200 OK\n"
    "2026-11-28\t18:50:54.446630\t1795891854.446630\tR\t1-10150@127.0.0.1\tCSeq:1 ACK\t"
    "ACK sip:127.0.0.2:5090;transport=UDP SIP/2.0\n"
    "2026-11-28\t18:50:55.446630\t1795891855.446630\tR\t1-10150@127.0.0.1\tCSeq:2 BYE\t"
    "BYE sip:127.0.0.2:5090;transport=UDP SIP/2.0\n"
    "2026-11-28\t18:50:55.446700\t1795891855.446700\tS\t1-10150@127.0.0.1\tCSeq:2 BYE\t"
    "SIP/2.0 200 OK\n"
    "2026-11-28\t18:50:55.5\t1795891855.5\tR\tp1@127.0.0.1\tCSeq:10 OPTIONS\t"
    "OPTIONS sip:127.0.0.2:5090 SIP/2.0\n"
    "2026-11-28\t18:50:55.6\t1795891855.6\tS\tp1@127.0.0.1\tCSeq:10 OPTIONS\tSIP/2.0 200 OK\n"
    "2026-11-28\t18:50:55.7\t1795891855"  # cut short by a SIGKILL
)


def test_parse_shortmsg_log(tmp_path: Path) -> None:
    path = tmp_path / "gw.shortmsg.log"
    path.write_text(SHORTMSG)
    msgs = parse_shortmsg_log(path)
    assert len(msgs) == 8
    assert msgs[0].direction == "R"
    assert msgs[0].method == "INVITE"
    assert msgs[0].status is None
    assert msgs[2].status == 200
    assert msgs[2].cseq_method == "INVITE"
    assert msgs[4].cseq == 2
    assert msgs[0].time == pytest.approx(1795891854.444032)
    assert parse_shortmsg_log(tmp_path / "missing.log") == []

    calls = calls_from_messages(msgs, "gw1")
    call = calls["1-10150@127.0.0.1"]
    assert call.answered
    assert call.got_ack
    assert call.got_bye
    assert call.bye_answered
    assert call.rejected_with is None
    assert not call.options_only
    assert calls["p1@127.0.0.1"].options_only


def test_response_delays_and_percentile(tmp_path: Path) -> None:
    path = tmp_path / "caller.shortmsg.log"
    line = "2026-11-28\t18:50:54\t{t}\t{d}\t{cid}\tCSeq:{cseq}\t{first}\n"
    path.write_text(
        line.format(t="10.000000", d="S", cid="a", cseq="1 INVITE", first="INVITE sip:x SIP/2.0")
        + line.format(t="10.000500", d="S", cid="a", cseq="1 INVITE", first="INVITE sip:x SIP/2.0")
        + line.format(t="10.001000", d="R", cid="a", cseq="1 INVITE", first="SIP/2.0 100 Trying")
        + line.format(t="10.004000", d="R", cid="a", cseq="1 INVITE", first="SIP/2.0 200 OK")
        + line.format(t="10.005000", d="R", cid="a", cseq="1 INVITE", first="SIP/2.0 200 OK")
        + line.format(t="11.000000", d="R", cid="a", cseq="2 BYE", first="SIP/2.0 200 OK")
        + line.format(t="20.000000", d="S", cid="b", cseq="1 INVITE", first="INVITE sip:x SIP/2.0")
    )
    msgs = parse_shortmsg_log(path)
    assert response_delays(msgs) == {"a": pytest.approx(0.004)}
    assert response_delays(msgs, statuses=range(100, 101)) == {"a": pytest.approx(0.001)}
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0


def _call(cid: str, gw: str, requests: list[str], responses: list[tuple[int, str]]) -> GatewayCall:
    return GatewayCall(cid, gw, list(requests), list(responses))


GOOD = ["INVITE", "ACK", "BYE"]
ANSWER = [(100, "INVITE"), (200, "INVITE"), (200, "BYE")]


def test_routing_report_accepts_correct_routing() -> None:
    report = routing_report(
        {
            "gw1": {"a": _call("a", "gw1", GOOD, ANSWER)},
            "gw2": {"b": _call("b", "gw2", GOOD, ANSWER)},
        },
        caller_call_ids=["a", "b"],
    )
    assert report.problems() == []
    assert report.answered_by == {"a": "gw1", "b": "gw2"}
    assert report.per_gateway == {"gw1": 1, "gw2": 1}


def test_routing_report_catches_bye_at_wrong_gateway() -> None:
    report = routing_report(
        {
            # gw1 answered "a" but its BYE went to gw2
            "gw1": {"a": _call("a", "gw1", ["INVITE", "ACK"], [(200, "INVITE")])},
            "gw2": {"a": _call("a", "gw2", ["BYE"], [])},
        }
    )
    assert report.bye_elsewhere == [("a", "gw1", "gw2")]
    assert report.bye_missing == ["a"]
    problems = report.problems()
    assert any("did not answer" in p for p in problems)
    assert any("never reached the answering" in p for p in problems)


def test_routing_report_catches_missing_ack_unanswered_and_double_answers() -> None:
    report = routing_report(
        {
            "gw1": {
                "a": _call("a", "gw1", ["INVITE", "BYE"], [(200, "INVITE"), (200, "BYE")]),
                "b": _call("b", "gw1", GOOD, ANSWER),
                "r": _call("r", "gw1", ["INVITE", "ACK"], [(100, "INVITE"), (503, "INVITE")]),
            },
            "gw2": {"b": _call("b", "gw2", GOOD, ANSWER)},
        },
        caller_call_ids=["a", "b", "c", "r"],
    )
    assert report.ack_missing == ["a"]
    assert report.answered_twice == ["b"]
    assert report.not_answered == ["c", "r"]
    assert report.rejected == {"gw1": {503: 1}, "gw2": {}}
    assert len(report.problems()) == 3
    assert len(report.problems(require_ack=False)) == 2


def test_split_problems() -> None:
    assert split_problems({"gw1": 500, "gw2": 500}) == []
    assert split_problems({"gw1": 530, "gw2": 470}) == []
    assert len(split_problems({"gw1": 560, "gw2": 440})) == 2
    assert split_problems({"gw1": 1000, "gw2": 0}) != []
    assert split_problems({}) == ["no gateways"]


STAT_CSV = (
    "StartTime;TotalCallCreated;SuccessfulCall(C);FailedCall(C);FailedMaxUDPRetrans(C);"
    "FailedUnexpectedMessage(C);Retransmissions(C);OutOfCallMsgs(C);DeadCallMsgs(C);"
    "ResponseTimeanswer(C);ResponseTimetrying(C);\n"
    "2026-11-28\t18:50:54.4;50;40;10;0;0;0;0;0;00:00:00:002000;00:00:00:000000;\n"
    "2026-11-28\t18:50:54.4;100;97;3;1;2;5;0;1;00:00:00:003500;00:00:00:001000;\n"
)


def test_parse_sipp_stat_csv_and_caller_result(tmp_path: Path) -> None:
    path = tmp_path / "caller.stat.csv"
    path.write_text(STAT_CSV)
    stats = parse_sipp_stat_csv(path)
    assert stats["TotalCallCreated"] == "100"  # the last row: sipp writes it at exit
    result = CallerResult.from_stats(1, stats, elapsed_s=2.0, cpu_s=0.1, workdir=tmp_path)
    assert (result.created, result.successful, result.failed) == (100, 97, 3)
    assert result.failures == {"FailedMaxUDPRetrans": 1, "FailedUnexpectedMessage": 2}
    assert result.retransmissions == 5
    assert result.dead_call_msgs == 1
    assert result.answer_ms_mean == pytest.approx(3.5)
    assert result.trying_ms_mean == pytest.approx(1.0)
    assert "failed=3" in result.summary()
    assert parse_sipp_stat_csv(tmp_path / "missing.csv") == {}

    report = routing_report({"gw1": {}, "gw2": {}})
    problems = dispatch_problems(result, report, calls=100)
    assert "sipp caller exited with 1" in problems
    assert "3 failed calls" in problems


def test_render_template_requires_every_field(tmp_path: Path) -> None:
    path = tmp_path / "t.tmpl"
    path.write_text("a={{A}} b={{B}} $du stays\n")
    assert render_template(path, {"A": 1, "B": "x"}) == "a=1 b=x $du stays\n"
    with pytest.raises(HarnessError, match="missing"):
        render_template(path, {"A": 1})
    with pytest.raises(HarnessError, match="unknown"):
        render_template(path, {"A": 1, "B": 2, "C": 3})


def test_kamailio_templates_have_the_fields_the_harness_fills() -> None:
    cfg = (KAMAILIO_TEMPLATE_DIR / "kamailio.cfg.tmpl").read_text()
    for name in ("LISTEN_IP", "PORT", "CHILDREN", "DISPATCHER_LIST", "PING_INTERVAL"):
        assert "{{" + name + "}}" in cfg
    assert "{{DESTINATIONS}}" in (KAMAILIO_TEMPLATE_DIR / "dispatcher.list.tmpl").read_text()


def test_kamailio_may_grow_its_receive_buffer_as_sipdispatch_does() -> None:
    # a comparison where one balancer drops the bursts the other absorbs measures buffers
    cfg = (KAMAILIO_TEMPLATE_DIR / "kamailio.cfg.tmpl").read_text()
    (line,) = [x for x in cfg.splitlines() if x.startswith("maxbuffer=")]
    assert int(line.partition("=")[2]) == RECEIVE_BUFFER
