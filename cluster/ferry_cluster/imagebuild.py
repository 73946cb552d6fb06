"""The operator's and the node-helper's images, built from their Containerfiles without a registry.

The Containerfiles are the ones a release uses: ``FROM`` any Debian trixie
image, packages from Debian, the project from its source. Here nothing can be
pulled, so:

- the base is a debootstrap minbase trixie made on the host
  (``scripts/build-base.sh``, cached) and imported into a node's podman as
  :data:`BASE_IMAGE`;
- the node's podman builds in the node's mount, PID and cgroup namespaces but
  the host's network, and the ``RUN`` steps share it (``--network=host``): apt
  and pip reach the same package registries the host does. The host's CA
  bundle and pip settings are lent to the build as read-only volumes, which do
  not become part of the image;
- the images are saved as docker-archives in the cache, keyed by the
  Containerfiles and every file they copy, so an unchanged tree is not rebuilt.
"""

from __future__ import annotations

import configparser
import hashlib
import resource
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import helperlayer, nodes, procs
from .config import ClusterConfig, NodeSpec

BASE_IMAGE = "localhost/ferry/debian:trixie"
#: Image name (without tag) -> its Containerfile, relative to the repository root.
CONTAINERFILES = {
    "ferry/operator": "operator/Containerfile",
    "ferry/node-helper": "node-helper/Containerfile",
}
#: What the Containerfiles COPY (each image its own components): the cache key covers all of it.
COPIED = ("api", "wire", "operator", "node-helper")
IN_NODE = "/var/lib/ferry-build"
LENT_DIR = "/run/ferry-build-host"
BUILD_TIMEOUT = 1800.0
Log = Callable[[str], None]


@dataclass(frozen=True)
class BuiltImage:
    reference: str
    archive: Path


def version(root: Path) -> str:
    """The images' tag: the operator's version (every component has the same)."""
    data = tomllib.loads((root / "operator" / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def tree_key(root: Path) -> str:
    """A digest of the Containerfiles and every file they copy (bytecode aside)."""
    digest = hashlib.sha256()
    paths = [root / f for f in CONTAINERFILES.values()]
    for name in COPIED:
        top = root / name
        paths += sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
    for path in sorted(set(paths)):
        if "__pycache__" in path.parts or path.suffix == ".pyc" or ".egg-info" in str(path):
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def tree_tag(root: Path) -> str:
    """A tag naming this very tree's images (``0.1.0-<tree key>``): a deploy of a changed
    tree then changes the pods' image, so the kubelets replace them."""
    return f"{version(root)}-{tree_key(root)}"


def base_tarball() -> Path:
    script = Path(__file__).parent / "scripts" / "build-base.sh"
    out = procs.run(["bash", script], timeout=BUILD_TIMEOUT).stdout.strip()
    return Path(out.splitlines()[-1])


def _pip_conf() -> str:
    """The host's pip settings with its CA bundle where the build mounts it."""
    parser = configparser.ConfigParser()
    parser.read("/etc/pip.conf")
    if not parser.has_section("global"):
        parser.add_section("global")
    parser.set("global", "cert", f"{LENT_DIR}/ca-certificates.crt")
    lines = []
    for section in parser.sections():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in parser.items(section)]
    return "\n".join(lines) + "\n"


def _lend(node: NodeSpec) -> list[str]:
    """Write the host's CA bundle, pip and apt settings into the node; the volume flags."""
    lent = nodes.host_path(node, LENT_DIR)
    lent.mkdir(parents=True, exist_ok=True, mode=0o755)
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", lent / "ca-certificates.crt")
    (lent / "pip.conf").write_text(_pip_conf())
    flags = [
        f"--volume={LENT_DIR}/ca-certificates.crt:{LENT_DIR}/ca-certificates.crt:ro",
        f"--volume={LENT_DIR}/pip.conf:/etc/pip.conf:ro",
    ]
    apt_conf = Path("/etc/apt/apt.conf.d")
    for index, conf in enumerate(sorted(apt_conf.glob("99*")) if apt_conf.is_dir() else []):
        shutil.copyfile(conf, lent / f"apt-{index}.conf")
        flags.append(f"--volume={LENT_DIR}/apt-{index}.conf:/etc/apt/apt.conf.d/99host-{index}:ro")
    return flags


def _ulimits() -> list[str]:
    flags = []
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(limit)[1]
        if hard != resource.RLIM_INFINITY:
            flags.append(f"--ulimit={name}={hard}:{hard}")
    return flags


def _podman(node: NodeSpec, args: list[str], *, timeout: float = 600) -> str:
    argv = nodes.exec_args(node, ["podman", *args], host_network=True)
    return procs.run(argv, timeout=timeout).stdout


def build(config: ClusterConfig, node: NodeSpec, log: Log = print) -> list[BuiltImage]:
    """Build (or take from the cache) both images, with ``node``'s podman; their archives."""
    root = helperlayer.source_root()
    tag, key = version(root), tree_key(root)
    out_dir = config.cache_dir / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {
        f"{name}:{tag}": out_dir / f"{name.split('/')[-1]}-{tag}-{key}.tar"
        for name in CONTAINERFILES
    }
    if all(archive.exists() for archive in wanted.values()):
        log(f"==> images for tree {key} are cached in {out_dir}")
        return [BuiltImage(ref, archive) for ref, archive in wanted.items()]

    log("==> the local base image (debootstrap minbase trixie, built once, then cached)")
    base = base_tarball()
    work = nodes.host_path(node, IN_NODE)
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(base, work / "base.tar")
    if procs.run(
        nodes.exec_args(node, ["podman", "image", "exists", BASE_IMAGE]), check=False
    ).returncode:
        _podman(node, ["import", f"{IN_NODE}/base.tar", BASE_IMAGE])
    volumes = _lend(node)
    built = []
    for (reference, archive), containerfile in zip(
        wanted.items(), CONTAINERFILES.values(), strict=True
    ):
        log(f"==> podman build {reference} from {containerfile}")
        _podman(
            node,
            [
                "build",
                "--network=host",
                "--pull=never",
                # buildah raises RUN steps to its own defaults, which a host
                # with lower hard limits refuses (EPERM): ask for what there is.
                *_ulimits(),
                f"--build-arg=BASE={BASE_IMAGE}",
                *volumes,
                f"--file={helperlayer.SRC}/{containerfile}",
                f"--tag={reference}",
                helperlayer.SRC,
            ],
            timeout=BUILD_TIMEOUT,
        )
        name = archive.name
        _podman(node, ["save", "--format=docker-archive", f"--output={IN_NODE}/{name}", reference])
        shutil.move(work / name, archive.with_suffix(".partial"))
        archive.with_suffix(".partial").replace(archive)
        # One archive per image is kept: older trees' are only disk (hundreds of MB each).
        for stale in out_dir.glob(f"{reference.split('/')[-1].split(':')[0]}-*.tar"):
            if stale != archive:
                stale.unlink()
        built.append(BuiltImage(reference, archive))
    (work / "base.tar").unlink(missing_ok=True)
    return built
