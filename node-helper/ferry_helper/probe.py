"""What this node can do: runtimes, CRIU and its features, kernel, cgroups, CPU.

Published in the node's ``NodeHelper`` status, so the operator can refuse a
migration the target cannot restore before anything is frozen. Probing runs
real tools (each runtime's, ``criu check --feature``); a tool that is missing
or fails leaves its part empty rather than failing the probe. Only the
runtimes the helper found on the node are asked: a node with docker and no
podman reports docker alone. The status also says which wire protocol this
helper speaks (``protocolVersion``), so an operator never guesses from an
error's text.
"""

from __future__ import annotations

import asyncio
import platform
import re
from collections.abc import Mapping
from pathlib import Path

from ferry_api.nodehelper import (
    CgroupVersion,
    CpuInfo,
    CriuFeatures,
    CriuInfo,
    NodeHelperStatus,
    RuntimeInfo,
)
from ferry_api.runtime import Runtime
from ferry_wire import PROTOCOL_VERSION

from .cri import Ctr
from .drivers.capabilities import Driver
from .drivers.errors import RuntimeCommandError

PROBE_TIMEOUT = 30.0


async def _run(*args: str) -> tuple[int, str]:
    try:
        process = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError:
        return 127, ""
    try:
        out, _ = await asyncio.wait_for(process.communicate(), PROBE_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        return 124, ""
    return process.returncode or 0, out.decode(errors="replace")


def parse_criu_version(text: str) -> str | None:
    match = re.search(r"Version:\s*(\S+)", text)
    return match.group(1) if match else None


def feature_supported(returncode: int, text: str) -> bool:
    """``criu check --feature`` answers in words; "OFF" and errors mean no."""
    return returncode == 0 and "is supported" in text and "Error" not in text


async def criu_info() -> CriuInfo | None:
    code, text = await _run("criu", "--version")
    if code != 0:
        return None
    names = {
        "uffd": "uffd",
        "uffd_noncoop": "uffd-noncoop",
        "dirty_page_tracking": "mem_dirty_track",
        "pidfd_store": "pidfd_store",
        "time_namespace": "timens",
    }
    answers = await asyncio.gather(*(_run("criu", "check", "--feature", f) for f in names.values()))
    found = {
        field: feature_supported(*answer) for field, answer in zip(names, answers, strict=True)
    }
    features = CriuFeatures(
        uffd=found["uffd"],
        uffd_noncoop=found["uffd_noncoop"],
        lazy_pages=found["uffd"] and found["uffd_noncoop"],
        dirty_page_tracking=found["dirty_page_tracking"],
        pidfd_store=found["pidfd_store"],
        time_namespace=found["time_namespace"],
    )
    return CriuInfo(version=parse_criu_version(text), features=features)


def cgroup_version(mountinfo: str) -> CgroupVersion:
    types = {
        line.partition(" - ")[2].split()[0]
        for line in mountinfo.splitlines()
        if " - cgroup" in line
    }
    if types == {"cgroup2"}:
        return CgroupVersion.V2
    return CgroupVersion.HYBRID if "cgroup2" in types else CgroupVersion.V1


def cpu_info(cpuinfo: str) -> CpuInfo:
    model = flags = None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and flags is None:
            flags = tuple(sorted(value.split()))
    return CpuInfo(model=model, flags=flags or ())


async def _runtime(name: Runtime, driver: Driver) -> RuntimeInfo | None:
    """The runtime as the status reports it; None when it does not answer."""
    try:
        info = await driver.runtime_info()
    except (RuntimeCommandError, OSError, TimeoutError):
        return None
    return RuntimeInfo(
        name=name,
        version=info.version,
        oci_runtime=info.oci_runtime,
        oci_runtime_version=info.oci_runtime_version,
    )


async def probe(drivers: Mapping[Runtime, Driver], *, cri: Ctr | None = None) -> NodeHelperStatus:
    """The node as its NodeHelper status reports it (without the helper's own address).

    ``cri``: the kubelet's containerd, reported when it answers (pods can move).
    """
    found = [await _runtime(name, driver) for name, driver in drivers.items()]
    runtimes = [runtime for runtime in found if runtime is not None]
    return NodeHelperStatus(
        runtimes=tuple(runtimes),
        criu=await criu_info(),
        kernel=platform.release(),
        cgroup_version=cgroup_version(
            await asyncio.to_thread(Path("/proc/self/mountinfo").read_text)
        ),
        cpu=cpu_info(await asyncio.to_thread(Path("/proc/cpuinfo").read_text)),
        cri=await cri.info() if cri is not None else None,
        protocol_version=PROTOCOL_VERSION,
    )
