"""The local cluster's OCI registry: Debian's docker-registry on the bridge, TLS and a password.

ContainerCheckpoints with registry storage push checkpoint images here, and any
node pulls them. It serves on the host's bridge address with the API server's
certificate (the cluster CA signed it for that address), and the nodes trust
that CA for this registry only (``/etc/containers/certs.d/<host:port>/``, and
``/etc/docker/certs.d/`` for docker).
One user, ``ferry``, with a password made once per cluster; the helpers get an
``auth.json`` for it from a Secret, as pods get image pull secrets. Deleting
manifests is on, so a deleted checkpoint's image can go.

A second instance serves the same storage read-only and without a password
(:func:`pull_address`): containerd restoring a pod from a checkpoint pulls the
checkpointed container's base image by the ``NAME@DIGEST`` recorded in the
archive, with its default resolver (no credentials, the system's CAs), so a pod
that is to move runs an image pulled from there. The nodes trust the cluster CA
system-wide for it (kubenode.py).
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import nodes, procs
from .config import ClusterConfig, NodeSpec
from .pki import Pki

USER = "ferry"
BINARY = "/usr/bin/docker-registry"
READY_TIMEOUT = 30.0


def port(config: ClusterConfig) -> int:
    return 5000 + config.index


def address(config: ClusterConfig) -> str:
    """``host:port`` of the registry, as image references name it."""
    return f"{config.gateway}:{port(config)}"


def pull_address(config: ClusterConfig) -> str:
    """``host:port`` of the read-only, password-less instance on the same storage."""
    return f"{config.gateway}:{port(config) + 300}"


def _dir(config: ClusterConfig) -> Path:
    return config.state_dir / "registry"


def _pid_file(config: ClusterConfig) -> Path:
    return _dir(config) / "registry.pid"


def password(config: ClusterConfig) -> str:
    path = _dir(config) / "password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def auth_json(config: ClusterConfig) -> str:
    """A podman ``--authfile`` for the registry."""
    token = base64.b64encode(f"{USER}:{password(config)}".encode()).decode()
    return json.dumps({"auths": {address(config): {"auth": token}}})


def _config_file(config: ClusterConfig) -> Path:
    pki = Pki(directory=config.pki_dir)
    root = _dir(config)
    htpasswd = root / "htpasswd"
    hashed = procs.run(["htpasswd", "-Bbn", USER, password(config)]).stdout.strip()
    htpasswd.write_text(hashed + "\n")
    htpasswd.chmod(0o600)
    text = f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root / "data"}
  delete:
    enabled: true
http:
  addr: {address(config)}
  tls:
    certificate: {pki.apiserver_cert}
    key: {pki.apiserver_key}
auth:
  htpasswd:
    realm: ferry-{config.name}
    path: {htpasswd}
"""
    path = root / "config.yml"
    path.write_text(text)
    return path


def _pull_config_file(config: ClusterConfig) -> Path:
    pki = Pki(directory=config.pki_dir)
    root = _dir(config)
    path = root / "pull.yml"
    path.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root / "data"}
  maintenance:
    readonly:
      enabled: true
http:
  addr: {pull_address(config)}
  tls:
    certificate: {pki.apiserver_cert}
    key: {pki.apiserver_key}
""")
    return path


def _context(config: ClusterConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(Pki(directory=config.pki_dir).ca_cert))


def _answers(config: ClusterConfig, host: str | None = None) -> bool:
    request = urllib.request.Request(f"https://{host or address(config)}/v2/")
    try:
        urllib.request.urlopen(request, context=_context(config), timeout=3)  # noqa: S310
    except urllib.error.HTTPError as error:
        return error.code == 401  # up, and asking for the password
    except OSError:
        return False
    return True


def trust(config: ClusterConfig, node: NodeSpec) -> None:
    """Let ``node``'s podman and docker verify the registry (the cluster CA, that address only)."""
    ca = Pki(directory=config.pki_dir).ca_cert.read_bytes()
    for certs_d in ("/etc/containers/certs.d", "/etc/docker/certs.d"):
        for host in (address(config), pull_address(config)):
            target = nodes.host_path(node, f"{certs_d}/{host}/ca.crt")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ca)


def ensure(config: ClusterConfig) -> str:
    """Start the registry unless it runs, trust it on every node; its ``host:port``."""
    if procs.read_pid(_pid_file(config), str(_dir(config))) is None:
        if not Path(BINARY).exists():
            raise RuntimeError(f"{BINARY} is missing: apt-get install docker-registry")
        config_file = _config_file(config)
        procs.start(
            [BINARY, "serve", config_file],
            pid_file=_pid_file(config),
            log_file=_dir(config) / "registry.log",
        )
    if procs.read_pid(_dir(config) / "pull.pid", str(_dir(config))) is None:
        procs.start(
            [BINARY, "serve", _pull_config_file(config)],
            pid_file=_dir(config) / "pull.pid",
            log_file=_dir(config) / "pull.log",
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while not (_answers(config) and _answers(config, pull_address(config))):
        if time.monotonic() > deadline:
            log = (_dir(config) / "registry.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the registry at {address(config)} did not come up:\n{log}")
        time.sleep(0.2)
    for node in config.node_specs():
        trust(config, node)
    return address(config)


def manifest_exists(config: ClusterConfig, repository: str, reference: str) -> bool:
    """Whether the registry serves ``repository:reference`` (a tag or a digest)."""
    token = base64.b64encode(f"{USER}:{password(config)}".encode()).decode()
    request = urllib.request.Request(
        f"https://{address(config)}/v2/{repository}/manifests/{reference}",
        method="HEAD",
        headers={
            "Authorization": f"Basic {token}",
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json",
        },
    )
    try:
        urllib.request.urlopen(request, context=_context(config), timeout=5)  # noqa: S310
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise
    return True


def push(config: ClusterConfig, node: NodeSpec, image: str, repository: str) -> str:
    """Push ``image`` from ``node``'s podman; the reference pods pull it by (read-only, digest)."""
    authfile, digestfile = "/run/ferry-registry-auth.json", "/run/ferry-push-digest"
    nodes.host_path(node, authfile).write_text(auth_json(config))
    try:
        nodes.run_in(
            node,
            [
                "podman",
                "push",
                "--authfile",
                authfile,
                "--digestfile",
                digestfile,
                image,
                f"{address(config)}/{repository}:latest",
            ],
        )
        digest = nodes.host_path(node, digestfile).read_text().strip()
    finally:
        nodes.host_path(node, authfile).unlink(missing_ok=True)
    return f"{pull_address(config)}/{repository}@{digest}"
