"""SIP over TLS in the chart, rendered offline: off by default; on, the proxy listens on the
TLS port with the certificate of the kubernetes.io/tls Secret mounted as a directory (so that a
renewal reaches it), and the Service and NetworkPolicy carry the port."""

from __future__ import annotations

from charthelpers import CHART, Helm, Render, container, find, option

from sipdispatch.proxy.cli import build_parser as proxy_parser

TLS = ("--set", "proxy.tls.enabled=true", "--set", "proxy.tls.secretName=sip-example-com-tls")


def test_tls_is_off_by_default(render: Render) -> None:
    docs = render()
    proxy = container(find(docs, "Deployment", "sipdispatch-proxy"), "proxy")
    assert not [a for a in proxy["args"] if a.startswith(("--listen=tls:", "--tls-"))]
    assert [p["name"] for p in find(docs, "Service", "sipdispatch")["spec"]["ports"]] == [
        "sip-udp",
        "sip-tcp",
    ]


def test_tls_from_a_secret_adds_the_listener_the_mount_and_the_ports(render: Render) -> None:
    docs = render(*TLS, "--set", "networkPolicy.enabled=true")
    deployment = find(docs, "Deployment", "sipdispatch-proxy")
    proxy = container(deployment, "proxy")
    args = proxy["args"]
    assert option(args, "--listen")[-1] == "tls:$(POD_IP):5061"
    cert, key = option(args, "--tls-cert"), option(args, "--tls-key")
    assert cert == ["/etc/sipdispatch/tls/tls.crt"]
    assert key == ["/etc/sipdispatch/tls/tls.key"]
    parsed = proxy_parser().parse_args(
        [a.replace("$(POD_NAME)", "p").replace("$(POD_IP)", "10.0.0.1") for a in args]
    )
    assert str(parsed.tls_cert) == cert[0]
    mount = next(m for m in proxy["volumeMounts"] if m["name"] == "tls")
    assert mount == {"name": "tls", "mountPath": "/etc/sipdispatch/tls", "readOnly": True}
    assert "subPath" not in mount  # a subPath mount never sees the Secret's renewals
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "sip-example-com-tls"
    assert {"name": "sip-tls", "containerPort": 5061, "protocol": "TCP"} in proxy["ports"]
    service_ports = find(docs, "Service", "sipdispatch")["spec"]["ports"]
    assert {"name": "sip-tls", "port": 5061, "targetPort": "sip-tls", "protocol": "TCP"} in (
        service_ports
    )
    policy = find(docs, "NetworkPolicy", "sipdispatch-proxy")
    assert {"port": 5061, "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]


def test_tls_without_a_secret_is_refused(helm_cli: Helm) -> None:
    result = helm_cli("template", "x", str(CHART), "--set", "proxy.tls.enabled=true", check=False)
    assert result.returncode != 0
    assert "proxy.tls.secretName" in result.stderr
