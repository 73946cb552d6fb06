"""The Python environment the node-helper runs with inside a node.

The nodes run Debian trixie's Python (3.13), not the host's, so the helper's
dependencies are installed once into a layer of their own: an overlay upper
directory holding ``/opt/ferry/venv``, stacked over the cached root filesystem
when a node starts. It is keyed by the root filesystem and the dependency list,
so it is rebuilt only when one of them changes. The project's own source is not
in the layer: the nodes mount the working tree read-only at ``/opt/ferry/src``,
so a code change needs no rebuild.
"""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from importlib import resources
from pathlib import Path

from .procs import run

VENV = "/opt/ferry/venv"
SRC = "/opt/ferry/src"
#: The component folders on the helper's import path inside a node.
HELPER_PATHS = ("api", "wire", "node-helper")


def source_root() -> Path:
    """The working tree this package runs from (holding pyproject.toml)."""
    here = Path(str(resources.files("ferry_cluster"))).resolve()
    root = here.parent.parent
    if not (root / "pyproject.toml").exists():
        raise RuntimeError(
            f"ferry_cluster is not running from a source tree ({here}); the local cluster "
            "mounts the tree into the nodes, so install it with `pip install -e .`"
        )
    return root


def requirements(root: Path) -> list[str]:
    """What the helper's components need from PyPI (the components themselves are mounted)."""
    deps: set[str] = set()
    for component in HELPER_PATHS:
        data = tomllib.loads((root / component / "pyproject.toml").read_text())
        deps.update(d for d in data["project"]["dependencies"] if not d.startswith("ferry-"))
    return sorted(deps)


def helper_pythonpath() -> str:
    return ":".join(f"{SRC}/{p}" for p in HELPER_PATHS)


#: A shell prelude, run under ``unshare --mount``: a throwaway overlay of a root
#: (``$1`` lower, ``$2`` upper, ``$3`` work, ``$4`` where it is mounted) to chroot
#: into, with the host's network, resolver and CA bundle (pip and apt trust what
#: the host trusts, a proxy's CA say). Nothing of it outlives the namespace.
OVERLAY_CHROOT = """
set -eu
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
mount -t proc proc "$4/proc"
mount --bind /dev "$4/dev"
cp /etc/resolv.conf "$4/etc/resolv.conf" 2>/dev/null || true
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mount --bind /etc/ssl/certs/ca-certificates.crt "$4/etc/ssl/certs/ca-certificates.crt"
fi
"""

_BUILD = (
    OVERLAY_CHROOT
    + """
shift 4
chroot "$ROOT" /usr/bin/python3 -m venv {venv}
PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_FIND_LINKS= \
  chroot "$ROOT" {venv}/bin/pip install --no-cache-dir --disable-pip-version-check -q "$@"
"""
)


def ensure(cache_dir: Path, rootfs: Path) -> Path:
    """The layer directory for ``rootfs`` and the project's dependencies, built if missing."""
    deps = requirements(source_root())
    key = hashlib.sha256("\n".join([rootfs.name, *deps]).encode()).hexdigest()[:12]
    out = cache_dir / f"helper-layer-{key}"
    complete = cache_dir / f"helper-layer-{key}.complete"
    if complete.exists() and out.is_dir():
        return out
    tmp = cache_dir / f"helper-layer-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    upper, work, merged = tmp / "upper", tmp / "work", tmp / "merged"
    for directory in (upper, work, merged):
        directory.mkdir(parents=True)
    script = _BUILD.replace("{venv}", VENV).replace('"$ROOT"', str(merged))
    run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            script,
            "build-helper-layer",
            str(rootfs),
            str(upper),
            str(work),
            str(merged),
            *deps,
        ],
        timeout=1800,
    )
    # What the build touched outside the venv is not part of the layer.
    for leftover in ("etc/resolv.conf", "root", "tmp", "var"):
        target = upper / leftover
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    shutil.rmtree(out, ignore_errors=True)
    upper.rename(out)
    shutil.rmtree(tmp)
    complete.touch()
    return out
