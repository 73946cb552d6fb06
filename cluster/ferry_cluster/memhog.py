"""The benchmark's workload: ``memhog``, a counter that holds N MiB of random memory itself.

Memory in the process, not in a tmpfs, and random, so compression cannot
flatter anyone: what a checkpoint of a real service with a warm heap carries.
Every 100 ms it writes ``COUNT MAXGAP_MS`` to ``/tmp/count``: the longest gap
between two of its ticks is the downtime as the workload itself saw it. Built
with the host's C compiler as a static binary into a busybox image, cached by
the digest of its source.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from . import images

MEMHOG_IMAGE = "localhost/ferry/memhog:latest"
SOURCE = Path(__file__).with_name("memhog.c")


def binary(cache_dir: Path) -> Path:
    """The static memhog binary, compiled once per version of its source."""
    key = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    out = cache_dir / f"memhog-{key}"
    if out.exists():
        return out
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler to build memhog (apt-get install gcc libc6-dev)")
    partial = out.with_suffix(".partial")
    subprocess.run(
        [compiler, "-O2", "-static", "-o", str(partial), str(SOURCE)], check=True, timeout=120
    )
    partial.replace(out)
    return out


def archive(cache_dir: Path, rootfs: Path, out: Path) -> images.ImageArchive:
    """The memhog image (busybox and memhog) as a docker-archive at ``out``."""
    layer = images.busybox_layer(
        rootfs / "usr/bin/busybox", programs={"memhog": binary(cache_dir).read_bytes()}
    )
    return images.write_docker_archive(
        out, layer=layer, reference=MEMHOG_IMAGE, cmd=["/bin/memhog", "0"]
    )
