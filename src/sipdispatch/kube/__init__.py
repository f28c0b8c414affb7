"""Talking to Kubernetes: the one package that imports the Kubernetes client.

A thin layer over kubernetes_asyncio (asyncio-native, on the aiohttp the proxy already runs):
the proxy's event loop must never block on a request, which rules out the synchronous
``kubernetes`` client there. Measured in a fresh interpreter that has already imported
aiohttp, PyYAML and pydantic (as the proxy has): importing kubernetes_asyncio's client, config
and watch takes about 120 ms and 37 MiB of RSS (it loads all 768 generated models at once),
the synchronous client about 90 ms and 14 MiB (it loads its models lazily) but blocks.

* ``credentials``: where the credentials are (kubeconfig, its ``exec`` plugins included, or
  the pod's rotating ServiceAccount token) and how they are renewed;
* ``client``: ``Kube``, one connection, failures turned into ``KubeError``;
* ``objects``: get, list, server-side apply, merge patch, create, delete, as JSON dicts;
* ``watch``: ``Follow``, list then watch, resumed from the last resourceVersion, listed again
  on 410 Gone;
* ``lease``: ``Elector``, leader election on a coordination.k8s.io Lease.
"""

from __future__ import annotations

from sipdispatch.kube.client import Kube
from sipdispatch.kube.credentials import Credentials, Login, locate
from sipdispatch.kube.errors import KubeConfigError, KubeError
from sipdispatch.kube.lease import Elector
from sipdispatch.kube.objects import CONFIG_MAP, EVENT, LEASE, SECRET, Kind
from sipdispatch.kube.watch import Changed, Follow, Listed

__all__ = [
    "CONFIG_MAP",
    "EVENT",
    "LEASE",
    "SECRET",
    "Changed",
    "Credentials",
    "Elector",
    "Follow",
    "Kind",
    "Kube",
    "KubeConfigError",
    "KubeError",
    "Listed",
    "Login",
    "locate",
]
