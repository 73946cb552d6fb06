"""The kubelet's side of a node: containerd, runc and the CNI plugins from Debian sid, as a layer.

The nodes' root filesystem keeps Debian trixie's Docker Engine with the
containerd it was built against. The kubelet's runtime is a second containerd
(2.1 from sid, the first with checkpoint restore through CRI, see issue 17),
with its own runc (1.3), installed under ``/opt/cri`` so the two never share a
binary; the CNI plugins go to ``/opt/cni/bin``, where containerd looks for
them, and the kubelet and kube-proxy built by ``build-binaries.sh`` to
``/usr/local/bin``. The packages are downloaded by apt inside a throwaway
overlay of the cached root filesystem (its sources list already names sid)
and unpacked with ``dpkg-deb``: nothing of apt's state enters the layer.

The layer is keyed by the root filesystem, the package list and the
Kubernetes version, and stacked between the helper layer and the root.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from .config import K8S_VERSION
from .helperlayer import OVERLAY_CHROOT
from .procs import run

PACKAGES = ("containerd", "runc", "containernetworking-plugins")
CRI_BIN = "/opt/cri/bin"
CNI_BIN = "/opt/cni/bin"
NODE_BINARIES = ("kubelet", "kube-proxy")
REVISION = "1"

_DOWNLOAD = (
    OVERLAY_CHROOT
    + """
root=$4 out=$5
shift 5
mkdir -p "$root/debs"
chroot "$root" sh -c 'apt-get update -q >/dev/null && cd /debs && apt-get download -q -t sid "$@"' \
  download "$@"
cp "$root"/debs/*.deb "$out"/
"""
)


def _key(rootfs: Path) -> str:
    text = "\n".join([rootfs.name, *PACKAGES, K8S_VERSION, REVISION])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _download(rootfs: Path, work: Path) -> list[Path]:
    upper, scratch, merged, debs = (work / d for d in ("upper", "work", "merged", "debs"))
    for directory in (upper, scratch, merged, debs):
        directory.mkdir(parents=True)
    run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            _DOWNLOAD,
            "download-cri-packages",
            str(rootfs),
            str(upper),
            str(scratch),
            str(merged),
            str(debs),
            *PACKAGES,
        ],
        timeout=1800,
    )
    return sorted(debs.glob("*.deb"))


def _unpack(debs: list[Path], work: Path, layer: Path) -> None:
    unpacked = work / "unpacked"
    for deb in debs:
        run(["dpkg-deb", "-x", str(deb), str(unpacked)])
    cri_bin = layer / CRI_BIN.lstrip("/")
    cri_bin.mkdir(parents=True)
    for name in ("containerd", "containerd-shim-runc-v2", "ctr"):
        shutil.copy2(unpacked / "usr/bin" / name, cri_bin / name)
    runc = next(p for p in (unpacked / "usr/sbin/runc", unpacked / "usr/bin/runc") if p.exists())
    shutil.copy2(runc, cri_bin / "runc")
    shutil.copytree(unpacked / "usr/lib/cni", layer / CNI_BIN.lstrip("/"))


def ensure(cache_dir: Path, rootfs: Path, bin_dir: Path) -> Path:
    """The layer directory for ``rootfs``, built if missing."""
    key = _key(rootfs)
    out = cache_dir / f"cri-layer-{key}"
    complete = cache_dir / f"cri-layer-{key}.complete"
    if complete.exists() and out.is_dir():
        return out
    work = cache_dir / f"cri-layer-{key}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    layer = work / "layer"
    debs = _download(rootfs, work)
    _unpack(debs, work, layer)
    local_bin = layer / "usr/local/bin"
    local_bin.mkdir(parents=True)
    for name in NODE_BINARIES:
        shutil.copy2((bin_dir / name).resolve(), local_bin / name)
    shutil.rmtree(out, ignore_errors=True)
    layer.rename(out)
    shutil.rmtree(work)
    complete.touch()
    return out
