"""The operator's settings, read once from its environment (the Deployment sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: The operator's SSH private key; helpers list its public half as ``operator``.
    ssh_key: Path
    #: Let any namespace migrate any container (off: a container must carry the
    #: ``ferry.dev/namespace`` label naming the migration's namespace).
    allow_any_namespace: bool
    #: A helper whose heartbeat is older than this is not trusted with a migration.
    helper_stale_seconds: float
    #: Port of the Prometheus metrics endpoint (0: off).
    metrics_port: int
    #: Migrations that may use one node at once, as source or target (0: no limit).
    max_migrations_per_node: int = 2
    #: Registries (``host[:port]``, optionally with a path) checkpoint images may be pushed
    #: to; empty: any the helpers' credentials reach.
    allowed_registries: tuple[str, ...] = ()
    #: Port of the admission webhook that turns evictions into migrations (0: off); it
    #: serves TLS with ``tls.crt`` and ``tls.key`` from ``webhook_cert_dir``.
    webhook_port: int = 0
    webhook_cert_dir: Path = Path("/etc/ferry/webhook")
    #: The operator's own pod (namespace, name), from the downward API; it leaves a drained
    #: node after the pods it live-migrates off it.
    own_pod: tuple[str, str] | None = None

    def registry_allowed(self, repository: str) -> bool:
        """Whether ``repository`` (``host[:port]/path``) is one an allowed entry covers."""
        if not self.allowed_registries:
            return True
        return any(
            repository == entry or repository.startswith(entry.rstrip("/") + "/")
            for entry in self.allowed_registries
        )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        return cls(
            ssh_key=Path(env.get("FERRY_SSH_KEY", "/etc/ferry/ssh/operator")),
            allow_any_namespace=env.get("FERRY_ALLOW_ANY_NAMESPACE", "false").lower() == "true",
            helper_stale_seconds=float(env.get("FERRY_HELPER_STALE_SECONDS", "120")),
            metrics_port=int(env.get("FERRY_METRICS_PORT", "8080")),
            max_migrations_per_node=int(env.get("FERRY_MAX_MIGRATIONS_PER_NODE", "2")),
            own_pod=(
                (env["POD_NAMESPACE"], env["POD_NAME"])
                if env.get("POD_NAMESPACE") and env.get("POD_NAME")
                else None
            ),
            webhook_port=int(env.get("FERRY_WEBHOOK_PORT", "0")),
            webhook_cert_dir=Path(env.get("FERRY_WEBHOOK_CERT_DIR", "/etc/ferry/webhook")),
            allowed_registries=tuple(
                entry.strip()
                for entry in env.get("FERRY_ALLOWED_REGISTRIES", "").split(",")
                if entry.strip()
            ),
        )
