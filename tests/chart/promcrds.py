"""The Prometheus Operator's own CRDs (ServiceMonitor, PodMonitor, PrometheusRule), so that the
chart's monitoring objects are checked by the API server against the real schemas.

They come from the operator's Go module (its example/prometheus-operator-crd/ directory),
downloaded once through the Go module proxy with ``go mod download`` (checksummed against the
Go checksum database) and kept outside git in ``~/.cache/sipdispatch/prometheus-operator-crds/
<version>/``, like hack/test-cluster's binaries: a cold fetch takes seconds, later runs none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

VERSION = "v0.85.0"
MODULE = "github.com/prometheus-operator/prometheus-operator"
KINDS = ("servicemonitors", "podmonitors", "prometheusrules")


def _cache() -> Path:
    root = Path(os.environ.get("SIPDISPATCH_CACHE", Path.home() / ".cache" / "sipdispatch"))
    return root / "prometheus-operator-crds" / VERSION


def crd_files() -> list[Path]:
    """The CRD files, fetched into the cache if they are not there yet (fails loudly)."""
    cache = _cache()
    files = [cache / f"monitoring.coreos.com_{kind}.yaml" for kind in KINDS]
    if all(path.is_file() for path in files):
        return files
    with tempfile.TemporaryDirectory() as work:
        # Outside any module, so that no go.mod of the repository is touched.
        found = subprocess.run(
            ["go", "mod", "download", "-json", f"{MODULE}@{VERSION}"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
        )
        if found.returncode != 0:
            raise RuntimeError(f"go mod download {MODULE}@{VERSION}:\n{found.stdout}{found.stderr}")
        source = Path(json.loads(found.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache.parent))
        staging.chmod(0o755)
        for path in files:
            shutil.copyfile(source / path.name, staging / path.name)
        try:
            staging.rename(cache)  # whole or not at all, when two runs race
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return files
