"""The container image, built by ``hack/build-image`` (buildah, from Debian's packages) and run
with ``buildah run``: calls through the proxy inside it, the operator's command, the non-root
user and the compiled hot path.

caller (127.0.0.1) -> sipdispatch-proxy in the image (host network, uid 10001) -> sipp
gateways on 127.0.0.2 and 127.0.0.3.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sipdispatchproc import SipdispatchProxy

from sipphelpers import (
    REPO_ROOT,
    HarnessError,
    SippLab,
    Transport,
    dispatch_problems,
    routing_report,
)

# The first test to run builds the image: minutes when nothing is cached (the calls themselves
# are bounded by sipp's own timeouts).
pytestmark = [pytest.mark.image, pytest.mark.sipp, pytest.mark.timeout(1800)]

IMAGE = "localhost/sipdispatch:test"
CALLS = 40
# As hack/build-image runs it: a chroot needs no cgroup setup from the machine.
ISOLATION = os.environ.get("BUILDAH_ISOLATION", "chroot")


def buildah(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def image() -> str:
    """The image as a user builds it (its own smoke run skipped: this module is the check)."""
    built = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-image"), "--tag", IMAGE, "--no-smoke"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if built.returncode != 0:
        raise HarnessError(f"hack/build-image failed:\n{built.stderr[-3000:]}")
    print(built.stdout.strip())
    return IMAGE


@pytest.fixture
def container(image: str) -> Iterator[str]:
    """A working container of the image for ``buildah run``, removed afterwards."""
    made = buildah("from", "--quiet", "--pull=never", image)
    if made.returncode != 0:
        raise HarnessError(f"buildah from {image}: {made.stderr}")
    name = made.stdout.strip()
    yield name
    buildah("rm", name)


def run_in(container: str, *command: str) -> subprocess.CompletedProcess[str]:
    return buildah("run", "--isolation", ISOLATION, container, "--", *command)


def test_image_runs_as_uid_10001_with_the_compiled_hot_path(image: str, container: str) -> None:
    user = buildah("inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}", image)
    assert user.stdout.strip() == "10001:10001"
    ids = run_in(container, "id", "-u")
    assert ids.stdout.strip() == "10001", ids.stderr
    core = run_in(
        container, "python3", "-c", "import sipdispatch.proxy.core as c; print(c.__file__)"
    )
    assert core.returncode == 0, core.stderr
    assert core.stdout.strip().endswith(".so"), core.stdout
    lines = run_in(
        container,
        "python3",
        "-c",
        "from sipdispatch.sip import codec, values; print(codec._SCAN, values.TOKEN_PARAMS)",
    )
    assert lines.returncode == 0, lines.stderr
    # the hand-written C: the header loop and the Via parameters' reader
    assert "built-in function scan" in lines.stdout, lines.stdout
    assert "built-in function params" in lines.stdout, lines.stdout


def test_the_operator_command_runs_in_the_image(container: str) -> None:
    done = run_in(container, "sipdispatch-operator", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: sipdispatch-operator" in done.stdout


def _uids(pids: list[int]) -> set[int]:
    uids = set()
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uids |= {int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")}
    return uids


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_calls_go_through_the_proxy_in_the_image(
    container: str,
    sipp_lab: SippLab,
    proxies: list[SipdispatchProxy],
    tmp_path: Path,
    transport: Transport,
) -> None:
    gw1 = sipp_lab.gateway("gw1", ip="127.0.0.2", transport=transport)
    gw2 = sipp_lab.gateway("gw2", ip="127.0.0.3", transport=transport)
    workdir = tmp_path / "proxy"
    workdir.mkdir()
    workdir.chmod(0o755)  # the table is read by uid 10001, at the same path in the container
    in_image = [
        *("buildah", "run", "--isolation", ISOLATION, "--network", "host"),
        *("--volume", f"{workdir}:{workdir}:ro", container, "--", "sipdispatch-proxy"),
    ]
    proxy = SipdispatchProxy(workdir, [gw1, gw2], transport=transport, command=in_image)
    proxy.table.chmod(0o644)
    proxies.append(proxy.start(ready_timeout=60))
    # buildah, its chroot helper and the proxy itself, which runs as the image's user
    assert 10001 in _uids(proxy.process.group_pids())
    caller = sipp_lab.caller(proxy.hostport, transport=transport, rate=20, calls=CALLS)

    result = caller.run()

    report = routing_report([gw1, gw2], caller.call_ids())
    problems = dispatch_problems(result, report, calls=CALLS, tolerance=0.2)
    assert not problems, "\n".join(problems) + "\n" + proxy.log()[-3000:]
    assert caller.completed_call_ids() == caller.call_ids()
