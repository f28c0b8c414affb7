"""Kubernetes mode: the destination table from a ConfigMap, followed through the API.

``KubeTableSource`` reads the table the operator renders (a ConfigMap whose ``table.yaml`` is
the ``--config`` format) and follows it with a watch, so a change reaches the proxy as soon
as the API server has it (a mounted ConfigMap volume lags a minute or more). The watch resumes
from the last resourceVersion; when that is too old (410 Gone) it lists again. List and watch
carry a ``metadata.name`` field selector, so RBAC can grant access to this one ConfigMap only
(``resourceNames``).

``KubeClient`` is a small asyncio client on aiohttp (the proxy's event loop must never block on
a synchronous client): credentials from ``--kubeconfig``/``KUBECONFIG`` (token, token file or
client certificate; exec plugins are not supported) or from the pod's ServiceAccount, whose
token file is read again when it changes (bound tokens rotate). The operator uses it too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import logging
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from sipdispatch.api.names import PROXY_LABEL, TABLE_KEY
from sipdispatch.dispatch import configfile
from sipdispatch.proxy.tables import LoadedTable, TableError

__all__ = [
    "KubeClient",
    "KubeConfig",
    "KubeConfigError",
    "KubeError",
    "KubeTableSource",
    "add_arguments",
    "load_config",
    "table_source",
]

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


class KubeConfigError(ValueError):
    """No usable credentials: the message says what was looked for."""


class KubeError(RuntimeError):
    """The API server refused a request; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class KubeConfig:
    """Where the API server is and how to authenticate to it."""

    server: str
    namespace: str = "default"
    ca_data: str | None = None  # PEM
    insecure: bool = False
    token: str | None = None
    token_file: Path | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None


def _read_bytes(data: str | None, path: str | None, base: Path) -> bytes | None:
    if data:
        return base64.b64decode(data)
    if path:
        return (base / path).read_bytes()
    return None


def _from_kubeconfig(path: Path) -> KubeConfig:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc}") from None
    base = path.parent

    def named(section: str, name: str | None) -> dict[str, Any]:
        for item in doc.get(section) or []:
            if item.get("name") == name:
                return dict(item.get(section[:-1]) or {})
        raise KubeConfigError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    context = named("contexts", doc.get("current-context"))
    cluster = named("clusters", context.get("cluster"))
    user = named("users", context.get("user")) if context.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise KubeConfigError(f"kubeconfig {path}: exec and auth-provider users are not supported")
    ca = _read_bytes(
        cluster.get("certificate-authority-data"), cluster.get("certificate-authority"), base
    )
    token_file = user.get("tokenFile")
    return KubeConfig(
        server=str(cluster.get("server", "")).rstrip("/"),
        namespace=str(context.get("namespace") or "default"),
        ca_data=ca.decode() if ca else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=user.get("token"),
        token_file=base / token_file if token_file else None,
        cert_pem=_read_bytes(
            user.get("client-certificate-data"), user.get("client-certificate"), base
        ),
        key_pem=_read_bytes(user.get("client-key-data"), user.get("client-key"), base),
    )


def _in_cluster() -> KubeConfig | None:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = SERVICE_ACCOUNT_DIR / "token"
    if not host or not token.exists():
        return None
    host = f"[{host}]" if ":" in host else host
    namespace_file = SERVICE_ACCOUNT_DIR / "namespace"
    ca = SERVICE_ACCOUNT_DIR / "ca.crt"
    return KubeConfig(
        server=f"https://{host}:{port}",
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
        ca_data=ca.read_text() if ca.exists() else None,
        token_file=token,
    )


def load_config(kubeconfig: Path | None = None) -> KubeConfig:
    """Credentials as client-go finds them: an explicit kubeconfig or ``KUBECONFIG``, else the
    pod's ServiceAccount, else ``~/.kube/config``."""
    if kubeconfig is None and os.environ.get("KUBECONFIG"):
        kubeconfig = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    if kubeconfig is not None:
        return _from_kubeconfig(kubeconfig)
    found = _in_cluster()
    if found is not None:
        return found
    default = Path.home() / ".kube" / "config"
    if default.exists():
        return _from_kubeconfig(default)
    raise KubeConfigError(
        "no Kubernetes credentials: give --kubeconfig, set KUBECONFIG, or run in a pod "
        "with a ServiceAccount token"
    )


def _ssl_context(config: KubeConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=config.ca_data)
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert_pem and config.key_pem:
        # The ssl module loads client certificates from files only.
        with tempfile.TemporaryDirectory(prefix="sipdispatch-kube-") as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(config.cert_pem)
            key.touch(mode=0o600)
            key.write_bytes(config.key_pem)
            context.load_cert_chain(cert, key)
    return context


class KubeClient:
    """Just enough of the Kubernetes API: JSON requests and watch streams."""

    def __init__(self, config: KubeConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        self.timeout = timeout
        self._ssl = _ssl_context(config) if config.server.startswith("https") else None
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[float, str] | None = None  # (mtime, token) from token_file

    @classmethod
    def from_environment(cls, kubeconfig: Path | None = None) -> KubeClient:
        return cls(load_config(kubeconfig))

    def _headers(self) -> dict[str, str]:
        token = self.config.token
        if self.config.token_file is not None:
            mtime = self.config.token_file.stat().st_mtime
            if self._token is None or self._token[0] != mtime:
                self._token = (mtime, self.config.token_file.read_text().strip())
            token = self._token[1]
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl else False)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One API call; the decoded JSON answer, or ``KubeError``."""
        headers = self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self._http().request(
            method,
            self.config.server + path,
            params=params,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise KubeError(response.status, _message(text))
            result: dict[str, Any] = json.loads(text) if text else {}
            return result

    def request_blocking(self, method: str, path: str, *, timeout: float) -> None:
        """One call without the event loop (for shutdown, when the loop cancels everything)."""
        request = urllib.request.Request(
            self.config.server + path, method=method, headers=self._headers()
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl):
                pass
        except urllib.error.HTTPError as exc:
            raise KubeError(exc.code, _message(exc.read().decode(errors="replace"))) from None

    async def watch(
        self, path: str, params: Mapping[str, str], *, server_timeout: float = 300.0
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request (``{"type": ..., "object": ...}``) until the server
        ends it (after ``server_timeout`` seconds at the latest)."""
        query = {**params, "watch": "1", "timeoutSeconds": str(int(server_timeout))}
        async with self._http().get(
            self.config.server + path,
            params=query,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=server_timeout + 30
            ),
        ) as response:
            if response.status >= 400:
                raise KubeError(response.status, _message(await response.text()))
            # Lines can be longer than aiohttp's line limit (a big table): split by hand.
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        return text.strip()[:500]


def configmap_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


class KubeTableSource:
    """The operator's rendered table, a ConfigMap, read and watched through the API."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        *,
        key: str = TABLE_KEY,
        algorithm: str | int = "round-robin",
        default_set: int | None = None,
        watch_timeout: float = 300.0,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.key = key
        self.algorithm = algorithm
        self.default_set = default_set
        self.watch_timeout = watch_timeout
        #: resourceVersion of the ConfigMap whose table is served ("" before the first)
        self.version = ""
        #: name of the proxy, from the ConfigMap's label (reports carry it)
        self.proxy = name.removesuffix("-table")
        self._seen = ""  # resourceVersion to watch from
        self._text: str | None = None

    @property
    def description(self) -> str:
        return f"configmap {self.namespace}/{self.name}"

    def _selector(self) -> dict[str, str]:
        return {"fieldSelector": f"metadata.name={self.name}"}

    async def _list(self) -> dict[str, Any] | None:
        answer = await self.client.request(
            "GET", configmap_path(self.namespace), params=self._selector()
        )
        self._seen = str(answer.get("metadata", {}).get("resourceVersion", ""))
        items = answer.get("items") or []
        return dict(items[0]) if items else None

    async def first(self) -> LoadedTable:
        """The first table; waits (the pod stays unready) until the operator has one."""
        delay = 0.5
        while True:
            try:
                found = await self._list()
                if found is None:
                    log.warning("waiting for %s: not found", self.description)
                else:
                    return self._load(found)
            except TableError as exc:
                log.error("waiting for a valid table: %s", exc)
            except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("waiting for %s: %s", self.description, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def reload(self) -> LoadedTable:
        try:
            found = await self._list()
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            raise TableError(f"{self.description}: {exc}") from None
        if found is None:
            raise TableError(f"{self.description}: not found")
        return self._load(found)

    async def changes(self) -> AsyncIterator[LoadedTable | TableError]:
        delay = 0.5
        while True:
            try:
                if not self._seen:  # never listed, or the watch fell too far behind
                    found = await self._list()
                    change = self._changed(found) if found is not None else None
                    if change is not None:
                        yield change
                async for event in self.client.watch(
                    configmap_path(self.namespace),
                    {
                        **self._selector(),
                        "resourceVersion": self._seen,
                        "allowWatchBookmarks": "true",
                    },
                    server_timeout=self.watch_timeout,
                ):
                    change = self._event(event)
                    if change is not None:
                        yield change
                delay = 0.5
            except (KubeError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning(
                    "watch of %s failed, retrying in %.1fs: %s", self.description, delay, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _event(self, event: Mapping[str, Any]) -> LoadedTable | TableError | None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                log.info("watch of %s expired (410 Gone): listing again", self.description)
                self._seen = ""
                return None
            raise KubeError(int(obj.get("code") or 500), str(obj.get("message")))
        self._seen = str(obj.get("metadata", {}).get("resourceVersion", self._seen))
        if kind == "DELETED":
            log.warning("%s was deleted: still serving the last table", self.description)
            return None
        if kind in ("ADDED", "MODIFIED"):
            return self._changed(obj)
        return None  # BOOKMARK: only the resourceVersion moves

    def _changed(self, obj: Mapping[str, Any]) -> LoadedTable | TableError | None:
        text = (obj.get("data") or {}).get(self.key)
        if text == self._text:
            self._note(obj)  # same table, newer object (the operator's memory moved)
            return None
        try:
            return self._load(obj)
        except TableError as exc:
            return exc

    def _note(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.version = str(meta.get("resourceVersion", ""))
        self.proxy = (meta.get("labels") or {}).get(PROXY_LABEL) or self.proxy

    def _load(self, obj: Mapping[str, Any]) -> LoadedTable:
        text = (obj.get("data") or {}).get(self.key)
        self._text = text
        if text is None:
            raise TableError(f"{self.description} has no key {self.key!r}")
        try:
            config = configfile.parse_config(text, f"{self.description} {self.key}")
            table = config.to_table_config(self.algorithm)
            if self.default_set is not None:
                table = dataclasses.replace(table, default_set=self.default_set)
        except ValueError as exc:
            raise TableError(str(exc)) from None
        self._note(obj)
        return LoadedTable(table, config)


# ---------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser, table: argparse._MutuallyExclusiveGroup) -> None:
    """``--kubernetes-table`` (in the table-source group) and ``--kubeconfig``."""
    table.add_argument(
        "--kubernetes-table",
        metavar="[NAMESPACE/]NAME",
        help="Kubernetes mode: follow the table the operator renders into this ConfigMap "
        "(e.g. sipdispatch-table; namespace: POD_NAMESPACE or the credentials' own)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="credentials for Kubernetes mode (default: KUBECONFIG, else the pod's "
        "ServiceAccount, else ~/.kube/config)",
    )


def table_source(args: argparse.Namespace) -> KubeTableSource:
    """The source ``--kubernetes-table`` asks for; ``KubeConfigError`` without credentials."""
    client = KubeClient.from_environment(args.kubeconfig)
    namespace, _, name = str(args.kubernetes_table).rpartition("/")
    namespace = namespace or os.environ.get("POD_NAMESPACE") or client.config.namespace
    return KubeTableSource(
        client, namespace, name, algorithm=args.algorithm, default_set=args.default_set
    )
