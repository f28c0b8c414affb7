"""A test network the tests make themselves: one network namespace, one veth pair.

Why: a test whose gateways must be named in an EndpointSlice cannot put them on 127.0.0.x (the
API server refuses loopback addresses there: "may not be in the loopback range"), and test
traffic must never target anything but loopback or the addresses of the project's own test
hosts inside network namespaces that the tests create themselves (this host's own address,
and any private or public range, are never a target).  So such a test makes this::

    root namespace                                  namespace sdgw-<pid>-<n>
    sdg<pid>h<n>  10.213.<k>.1/24  <-- veth -->  sdg<pid>n<n>  10.213.<k>.2/24, .3, .4, ...
    (the proxy listens here; callers too)         (sipp gateways: ip netns exec NS sipp ...)

Everything sent to or from the gateways stays on that one veth pair: the namespace has no
route but its own /24 (no default route), and nothing is forwarded.  IPv6 is switched off on
both ends, so the pair carries only the test's own IPv4 traffic.

The block is ``10.213.0.0/16``, one ``/24`` per namespace: ``k`` is the lowest number (1-254)
that no address of the root namespace uses yet, picked under a lock file so parallel runs on
one machine never share a subnet.  Names carry the creating process's PID and a counter, so
runs never clash; namespaces and links left behind by a run that was killed (its PID gone) are
removed the next time a network is made (:func:`cleanup_leftovers`).

Needs root and iproute2's ``ip`` (``hack/bootstrap`` installs it).  Use::

    with GatewayNet.create() as net:         # or the ``gateway_net`` fixture
        gw = lab.gateway("gw1", ip=net.next_address(), netns=net.name)
        proxy listens on net.host ...
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest

__all__ = [
    "BLOCK",
    "GatewayNet",
    "NetnsError",
    "cleanup_leftovers",
    "gateway_net",
    "netns_unavailable",
]

BLOCK = "10.213"  # 10.213.0.0/16: one /24 per test network, on veth pairs only
NETNS_PREFIX = "sdgw-"  # namespaces: sdgw-<pid>-<n>
LINK_PREFIX = "sdg"  # veth ends: sdg<pid>h<n> (root namespace), sdg<pid>n<n> (namespace)
MAX_ADDRESSES = 250  # .2 .. .251 in the namespace

_NETNS_RE = re.compile(rf"^{re.escape(NETNS_PREFIX)}(\d+)-(\d+)$")
_LINK_RE = re.compile(rf"^{re.escape(LINK_PREFIX)}(\d+)[hn](\d+)$")
_counter = itertools.count()


class NetnsError(RuntimeError):
    """A network namespace or veth pair could not be made (or ``ip`` failed)."""


def _ip(*args: str, check: bool = True, netns: str | None = None) -> str:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def netns_unavailable() -> str | None:
    """None when this process can make test networks; otherwise why not."""
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed (hack/bootstrap installs it)"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _names(pid: int, n: int) -> tuple[str, str, str]:
    """(namespace, root-namespace veth end, namespace veth end); link names fit IFNAMSIZ."""
    return f"{NETNS_PREFIX}{pid}-{n}", f"{LINK_PREFIX}{pid}h{n}", f"{LINK_PREFIX}{pid}n{n}"


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Serialise subnet choice and leftover cleanup between processes on this machine."""
    folder = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    with (folder / "sipdispatch-test-netns.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _netns_names() -> list[str]:
    # "name" or "name (id: 3)"
    return [line.split()[0] for line in _ip("netns", "list", check=False).splitlines() if line]


def _root_links() -> list[str]:
    out = _ip("-o", "link", "show", check=False)
    # "7: sdg123h0@if6: <...>" (the peer's index after '@')
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _delete(netns: str | None, link: str | None) -> None:
    """Delete a namespace and a root-namespace link; either may be gone already."""
    if netns is not None and netns in _netns_names():
        _ip("netns", "delete", netns, check=False)
    if link is not None and link in _root_links():
        # deleting the namespace destroys the pair too, but asynchronously: say it here
        _ip("link", "delete", link, check=False)


def _cleanup_leftovers_locked() -> list[str]:
    removed = []
    for name in _netns_names():
        match = _NETNS_RE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _delete(name, None)
            removed.append(name)
    for link in _root_links():
        match = _LINK_RE.match(link)
        if match and not _pid_alive(int(match.group(1))):
            _delete(None, link)
            removed.append(link)
    return removed


def cleanup_leftovers() -> list[str]:
    """Remove test namespaces and veth ends whose creating process is gone (a killed run);
    the names removed.  Those of live processes (parallel runs) are left alone."""
    with _lock():
        return _cleanup_leftovers_locked()


def _used_subnets() -> set[int]:
    used = set()
    pattern = re.compile(rf"\binet {re.escape(BLOCK)}\.(\d+)\.\d+/")
    for line in _ip("-4", "-o", "addr", "show", check=False).splitlines():
        match = pattern.search(line)
        if match:
            used.add(int(match.group(1)))
    return used


def _disable_ipv6(netns: str | None, link: str) -> None:
    """No IPv6 on the pair (no link-local chatter): best effort, IPv6 may be absent."""
    paths = [f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6"]
    if netns is None:
        with contextlib.suppress(OSError):
            Path(paths[0]).write_text("1\n")
        return
    paths += ["/proc/sys/net/ipv6/conf/default/disable_ipv6"]
    script = "; ".join(f"echo 1 > {p} 2>/dev/null" for p in paths) + "; true"
    subprocess.run(
        ["ip", "netns", "exec", netns, "sh", "-c", script],
        capture_output=True,
        check=False,
        timeout=30,
    )


@dataclass
class GatewayNet:
    """One test network: namespace ``name``, root-namespace end ``host`` (10.213.k.1) and
    ``addresses`` (10.213.k.2, ...) inside the namespace.  ``close()`` removes it all; it is
    a context manager, and closing twice is harmless."""

    name: str
    host_link: str
    peer_link: str
    subnet: int
    addresses: list[str]
    _handed_out: int = 0
    _closed: bool = field(default=False, repr=False)

    @property
    def host(self) -> str:
        """The root namespace's end of the veth pair: where proxies and callers listen."""
        return f"{BLOCK}.{self.subnet}.1"

    @property
    def cidr(self) -> str:
        return f"{BLOCK}.{self.subnet}.0/24"

    @classmethod
    def create(cls, addresses: int = 4) -> GatewayNet:
        """Make the namespace, the veth pair and ``addresses`` namespace addresses."""
        why = netns_unavailable()
        if why is not None:
            raise NetnsError(f"cannot make a test network: {why}")
        if not 1 <= addresses <= MAX_ADDRESSES:
            raise ValueError(f"1 to {MAX_ADDRESSES} addresses, not {addresses}")
        netns, host_link, peer_link = _names(os.getpid(), next(_counter))
        with _lock():
            _cleanup_leftovers_locked()
            _delete(netns, host_link)  # a PID reused after a kill -9 of an earlier run
            free = sorted(set(range(1, 255)) - _used_subnets())
            if not free:
                raise NetnsError(f"every /24 of {BLOCK}.0.0/16 is in use on this machine")
            net = cls(
                netns,
                host_link,
                peer_link,
                free[0],
                [f"{BLOCK}.{free[0]}.{i}" for i in range(2, 2 + addresses)],
            )
            try:
                net._build()
            except BaseException:
                net.close()
                raise
        return net

    def _build(self) -> None:
        _ip("netns", "add", self.name)
        _disable_ipv6(self.name, "all")
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.peer_link)
        _disable_ipv6(None, self.host_link)
        _ip("link", "set", self.peer_link, "netns", self.name)
        # the host end's address is set before the lock is released: it marks k as taken
        _ip("addr", "add", f"{self.host}/24", "dev", self.host_link)
        for address in self.addresses:
            _ip("addr", "add", f"{address}/24", "dev", self.peer_link, netns=self.name)
        _ip("link", "set", "lo", "up", netns=self.name)
        _ip("link", "set", self.peer_link, "up", netns=self.name)
        _ip("link", "set", self.host_link, "up")

    def next_address(self) -> str:
        """The next namespace address not handed out yet (10.213.k.2, then .3, ...)."""
        if self._handed_out >= len(self.addresses):
            raise NetnsError(f"all {len(self.addresses)} addresses of {self.name} handed out")
        address = self.addresses[self._handed_out]
        self._handed_out += 1
        return address

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs: the PID is the
        program's own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def close(self) -> None:
        """Delete the namespace and the root-namespace veth end (processes still running in
        the namespace keep it alive until they end, without its addresses' veth)."""
        if self._closed:
            return
        self._closed = True
        _delete(self.name, self.host_link)

    def __enter__(self) -> GatewayNet:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@pytest.fixture
def gateway_net() -> Iterator[GatewayNet]:
    """A :class:`GatewayNet` with 8 namespace addresses, removed at the end of the test.

    Request it after ``sipp_lab`` (or any fixture that starts processes inside it), so that it
    is torn down after them."""
    why = netns_unavailable()
    if why is not None:
        pytest.fail(f"cannot make a test network: {why}")
    with GatewayNet.create(addresses=8) as net:
        yield net
