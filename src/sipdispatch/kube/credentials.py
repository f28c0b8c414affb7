"""Who this process is to the API server: a kubeconfig, or the pod's ServiceAccount.

Found as client-go finds them: ``--kubeconfig``, else ``KUBECONFIG`` (a list of files, merged),
else the pod's ServiceAccount, else ``~/.kube/config``. A kubeconfig user may hold a token, a
token file, a client certificate or an ``exec`` credential plugin (run again when the token it
gave expires; its ``expirationTimestamp`` says when).

The ServiceAccount token is a bound token that kubelet rotates in place: it is read again
whenever the file changes (kubernetes_asyncio's own in-cluster loader re-reads it once a
minute; a stat per request costs nothing and a new token is used at once).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import ConfigException, load_kube_config
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader
from kubernetes_asyncio.config.kube_config import KubeConfigLoader, KubeConfigMerger

from sipdispatch.kube.errors import KubeConfigError

__all__ = ["SERVICE_ACCOUNT_DIR", "Credentials", "Login", "locate"]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path("~/.kube/config")
# An exec plugin's token is renewed this long before it expires, so no request carries a
# token that expires on the way.
EXPIRY_MARGIN = timedelta(seconds=10)


@dataclass(frozen=True)
class Credentials:
    """One snapshot of the credentials, as another client (kopf) takes them."""

    server: str
    namespace: str
    ca_file: str | None
    insecure: bool
    token: str | None
    cert_file: str | None
    key_file: str | None
    #: when the token expires (an exec plugin's), else None
    expires: datetime | None


class Login(abc.ABC):
    """Where the credentials come from. ``configuration()`` loads them (again) for a client."""

    namespace: str
    description: str

    @abc.abstractmethod
    async def configuration(self) -> Configuration:
        """A new client configuration, with a hook that renews the token before requests."""

    def expires(self, configuration: Configuration) -> datetime | None:
        """When the token of ``configuration`` expires, if it says."""
        return None

    async def credentials(self) -> Credentials:
        configuration = await self.configuration()
        await configuration.get_api_key_with_prefix("BearerToken")  # runs the renewal hook
        bearer = configuration.api_key.get("BearerToken")
        return Credentials(
            server=configuration.host or "",
            namespace=self.namespace,
            ca_file=configuration.ssl_ca_cert,
            insecure=not configuration.verify_ssl,
            token=bearer.removeprefix("Bearer ") if bearer else None,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            expires=self.expires(configuration),
        )


class KubeconfigLogin(Login):
    """A kubeconfig (or several, merged): its current context."""

    def __init__(self, paths: str) -> None:
        self.paths = paths
        self.description = f"kubeconfig {paths}"
        try:
            merged = KubeConfigMerger(paths).config
            if merged is None:
                raise KubeConfigError(f"kubeconfig not found: {paths}")
            context = KubeConfigLoader(config_dict=merged, config_base_path=None).current_context
        except (ConfigException, OSError, KeyError, TypeError, AssertionError) as exc:
            raise KubeConfigError(f"cannot use {self.description}: {exc}") from None
        self.namespace = str((context or {}).get("context", {}).get("namespace") or "default")

    async def configuration(self) -> Configuration:
        configuration = Configuration()
        try:
            loader = await load_kube_config(
                config_file=self.paths, client_configuration=configuration, persist_config=False
            )
        except (ConfigException, OSError, ValueError) as exc:
            raise KubeConfigError(f"cannot use {self.description}: {exc}") from None
        if getattr(loader, "exec_plugin_expiry", None) is not None:
            configuration.refresh_api_key_hook = _ExecRenewal(loader)
        return configuration

    def expires(self, configuration: Configuration) -> datetime | None:
        hook = configuration.refresh_api_key_hook
        return hook.loader.exec_plugin_expiry if isinstance(hook, _ExecRenewal) else None


class _ExecRenewal:
    """Runs the exec plugin again when the token it gave is about to expire."""

    def __init__(self, loader: KubeConfigLoader) -> None:
        self.loader = loader

    async def __call__(self, configuration: Configuration) -> None:
        expiry: datetime = self.loader.exec_plugin_expiry
        if datetime.now(UTC) + EXPIRY_MARGIN < expiry:
            return
        del self.loader.exec_plugin_expiry  # the loader skips the plugin while it is set
        await self.loader.load_from_exec_plugin()
        configuration.api_key["BearerToken"] = self.loader.token


class ServiceAccountLogin(Login):
    """The pod's ServiceAccount: the API server's Service from the environment, a token file
    that rotates, the cluster's CA."""

    def __init__(self, directory: Path, environ: Mapping[str, str]) -> None:
        self.directory = directory
        self.environ = dict(environ)
        self.description = f"ServiceAccount token {directory / 'token'}"
        namespace = directory / "namespace"
        self.namespace = namespace.read_text().strip() if namespace.exists() else "default"

    async def configuration(self) -> Configuration:
        configuration = Configuration()
        try:
            InClusterConfigLoader(
                token_filename=str(self.directory / "token"),
                cert_filename=str(self.directory / "ca.crt"),
                try_refresh_token=False,
                environ=self.environ,
            ).load_and_set(configuration)
        except (ConfigException, OSError) as exc:
            raise KubeConfigError(f"cannot use {self.description}: {exc}") from None
        configuration.refresh_api_key_hook = _RotatingToken(self.directory / "token")
        return configuration


class _RotatingToken:
    """The token file, read again whenever it changes (kubelet swaps in a new one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: int | None = None

    def __call__(self, configuration: Configuration) -> None:
        changed = self.path.stat().st_mtime_ns
        if changed != self._seen:
            configuration.api_key["BearerToken"] = f"Bearer {self.path.read_text().strip()}"
            self._seen = changed


def locate(
    kubeconfig: Path | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    service_account: Path = SERVICE_ACCOUNT_DIR,
) -> Login:
    """Where the credentials are; ``KubeConfigError`` when there are none. Reads the
    kubeconfig's current context (for its namespace) but runs no plugin yet."""
    if kubeconfig is not None:
        if not kubeconfig.exists():
            raise KubeConfigError(f"kubeconfig not found: {kubeconfig}")
        return KubeconfigLogin(str(kubeconfig))
    if environ.get("KUBECONFIG"):
        return KubeconfigLogin(environ["KUBECONFIG"])
    if environ.get("KUBERNETES_SERVICE_HOST") and (service_account / "token").exists():
        return ServiceAccountLogin(service_account, environ)
    default = DEFAULT_KUBECONFIG.expanduser()
    if default.exists():
        return KubeconfigLogin(str(default))
    raise KubeConfigError(
        "no Kubernetes credentials: give --kubeconfig, set KUBECONFIG, or run in a pod "
        "with a ServiceAccount token"
    )
