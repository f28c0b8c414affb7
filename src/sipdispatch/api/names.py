"""Names the proxy and the operator must spell alike: the API group, labels, table keys."""

from __future__ import annotations

__all__ = [
    "API_VERSION",
    "DEFAULT_PROXY",
    "GATEWAY_GRANT",
    "GROUP",
    "PROXY_LABEL",
    "TABLE_KEY",
    "VERSION",
]

GROUP = "sipdispatch.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
#: the proxy Deployment a DispatcherSet serves when it names none
DEFAULT_PROXY = "sipdispatch"
#: on the table ConfigMap and the reports: which proxy Deployment they belong to
PROXY_LABEL = f"{GROUP}/proxy"
#: the table ConfigMap's key that holds the ``--config`` YAML the proxies serve
TABLE_KEY = "table.yaml"
#: on a Service: the namespaces whose DispatcherSets may use it as a gateway (comma-separated)
GATEWAY_GRANT = f"{GROUP}/allow-dispatchersets-from"
