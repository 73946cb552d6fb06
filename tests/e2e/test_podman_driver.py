"""The podman driver, run for real where the helper runs: inside the simulated nodes.

Each test drives :class:`ferry_helper.drivers.podman.PodmanDriver` with a small program
run by the node's helper Python (the repository is mounted in the nodes, so this
is the code under test), which prints JSON; the test then checks the result as a
user would: with podman, with the archive's bytes, and by whether a counter
counts on after a move instead of starting over.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from typing import Any

import helper_python
import pytest
from ferry_cluster import images, nodes
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import counter_script, read_count, wait_counting

pytestmark = pytest.mark.e2e

PREFIX = "drv-"
IMAGE = "localhost/ferry/drv-img:latest"
COUNTER = counter_script()

# The program every test runs inside a node: its body is the test's, `args` its parameters.
PROGRAM = """
import asyncio, json, sys
from pathlib import Path
from ferry_helper.drivers.errors import RuntimeCommandError
from ferry_helper.drivers.libpod import Libpod
from ferry_helper.drivers.podman import PodmanDriver
from ferry_helper.drivers.records import CheckpointOptions

args = json.loads(sys.argv[1])
driver = PodmanDriver(timeout=120)

def failure(error):
    return {
        "type": type(error).__name__,
        "message": str(error),
        "decisive_line": error.decisive_line,
        "exit_code": error.exit_code,
        "command": error.command,
        "criu_log": str(error.criu_log) if error.criu_log else None,
        "criu_errors": list(error.criu_errors),
    }

def dump(model):
    return None if model is None else model.model_dump(mode="json")

async def body():
BODY

async def main():
    global driver
    if not args.get("api"):
        return await body()
    # The helper's way: a podman service of its own, the CLI only where the API is not used.
    api = Libpod(Path("/run/drv-podman.sock"))
    assert await api.start(), "podman's REST API service did not start"
    driver = PodmanDriver(timeout=120, api=api)
    try:
        return await body()
    finally:
        await api.stop()
        assert api.answered > 0, "nothing went through the REST API"

print(json.dumps(asyncio.run(main())))
"""


def drive(node: NodeSpec, body: str, *, via: str = "cli", **args: Any) -> Any:
    """Run ``body`` (the inside of an async function) with the helper's Python in ``node``;
    ``via="api"``: with the driver using podman's REST API as the helper does."""
    return helper_python.drive(node, PROGRAM, body, api=via == "api", **args)


# What each test that reads podman runs through: its CLI, and its REST API where the
# helper uses it (small containers' checkpoints and restores, queries).
VIA = pytest.mark.parametrize("via", ["cli", "api"])


def sh(node: NodeSpec, script: str, *, timeout: float = 120) -> str:
    result = nodes.run_in(node, ["sh", "-c", script], check=False, timeout=timeout)
    assert result.returncode == 0, f"{node.name}: {script!r} failed:\n{result.stderr}"
    return result.stdout.strip()


def start_counter(node: NodeSpec, name: str, *, image: str = images.BUSYBOX_IMAGE) -> str:
    return sh(node, f"podman run -d --name {name} {image} sh -c '{COUNTER}'")


def last_logged(node: NodeSpec, container: str) -> int:
    return int(sh(node, f"podman logs {container} | tail -n 1"))


def assert_counts_on(node: NodeSpec, container: str, at_checkpoint: int) -> None:
    """The counter goes past its checkpointed value, and its log never started over."""
    wait_counting(node, container, above=at_checkpoint)
    logged = [int(v) for v in sh(node, f"podman logs {container}").split()]
    assert logged == list(range(1, len(logged) + 1)), "the process started over"
    assert logged[-1] > at_checkpoint


def copy_between(source: NodeSpec, target: NodeSpec, path: str) -> None:
    shutil.copyfile(nodes.host_path(source, path), nodes.host_path(target, path))


def host_digest(node: NodeSpec, path: str) -> tuple[int, str]:
    data = nodes.host_path(node, path).read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def clean(node: NodeSpec) -> None:
    sh(
        node,
        f"ids=$(podman ps -aq --filter name=^{PREFIX}); "
        '[ -z "$ids" ] || podman rm -f -t 0 $ids >/dev/null; '
        f"podman rmi -f -i {IMAGE} >/dev/null; rm -rf /tmp/{PREFIX}*",
    )


@pytest.fixture
def node_pair(local_cluster: ClusterConfig) -> Iterator[tuple[NodeSpec, NodeSpec]]:
    node_a, node_b = local_cluster.node_specs()[:2]
    for node in (node_a, node_b):
        clean(node)
    yield node_a, node_b
    for node in (node_a, node_b):
        clean(node)


@VIA
def test_runtime_info_and_inspect(node_pair: tuple[NodeSpec, NodeSpec], via: str) -> None:
    node_a, _ = node_pair
    sh(
        node_a,
        f"podman run -d --name {PREFIX}up --label ferry.dev/namespace=team-a "
        f"{images.BUSYBOX_IMAGE} sleep 600",
    )
    sh(node_a, f"podman run -d --name {PREFIX}down {images.BUSYBOX_IMAGE} sleep 600")
    sh(node_a, f"podman stop -t 0 {PREFIX}down")
    out = drive(
        node_a,
        """
        up = await driver.inspect(args["prefix"] + "up")
        return {
            "runtime": dump(await driver.runtime_info()),
            "missing": dump(await driver.inspect(args["prefix"] + "missing")),
            "up": dump(up),
            "by_id": dump(await driver.inspect(up.id[:12])),
            "down": dump(await driver.inspect(args["prefix"] + "down")),
        }
        """,
        via=via,
        prefix=PREFIX,
    )
    assert out["runtime"]["name"] == "podman"
    assert out["runtime"]["version"] == sh(node_a, "podman version --format '{{.Client.Version}}'")
    assert out["runtime"]["oci_runtime"] == "crun"
    assert out["runtime"]["oci_runtime_version"][0].isdigit()

    assert out["missing"] is None
    up, down = out["up"], out["down"]
    assert (up["name"], up["state"], up["running"]) == (f"{PREFIX}up", "running", True)
    assert up["pid"] > 0
    assert up["labels"] == {"ferry.dev/namespace": "team-a"}
    assert up["image_name"] == images.BUSYBOX_IMAGE
    assert up["image_id"] == sh(
        node_a, f"podman image inspect --format '{{{{.Id}}}}' {images.BUSYBOX_IMAGE}"
    )
    assert out["by_id"]["name"] == up["name"]
    assert (down["state"], down["running"], down["pid"]) == ("exited", False, 0)


MAGIC = {"zstd": b"\x28\xb5\x2f\xfd", "gzip": b"\x1f\x8b"}

CHECKPOINT = """
result = await driver.checkpoint(
    args["name"], Path(args["archive"]), CheckpointOptions(**args["options"])
)
return {
    "result": dump(result),
    "statistics": result.statistics.as_dict(),
    "source": dump(await driver.inspect(args["name"])),
}
"""

RESTORE = """
restored = await driver.restore(Path(args["archive"]), name=args.get("as"))
return {"result": dump(restored), "statistics": restored.statistics.as_dict()}
"""


@pytest.mark.parametrize(
    ("compression", "via"),
    [("zstd", "cli"), ("gzip", "cli"), ("none", "cli"), ("zstd", "api"), ("gzip", "api")],
)
def test_counter_moves_to_another_node(
    node_pair: tuple[NodeSpec, NodeSpec], compression: str, via: str
) -> None:
    node_a, node_b = node_pair
    name, archive = f"{PREFIX}move-{compression}", f"/tmp/{PREFIX}move.tar"
    source_id = start_counter(node_a, name)
    wait_counting(node_a, name, above=10)

    out = drive(
        node_a,
        CHECKPOINT,
        via=via,
        name=name,
        archive=archive,
        options={"compression": compression},
    )
    at_checkpoint = last_logged(node_a, name)
    result, source = out["result"], out["source"]
    assert (source["running"], source["state"], source["checkpointed"]) == (False, "exited", True)
    assert (result["size_bytes"], result["sha256"]) == host_digest(node_a, archive)
    head = nodes.host_path(node_a, archive).read_bytes()[:512]
    if compression in MAGIC:
        assert head.startswith(MAGIC[compression])
    else:
        assert head[257:262] == b"ustar"  # a plain tar
    assert not list(nodes.host_path(node_a, "/tmp").glob("*.partial"))
    assert out["statistics"]["frozen_time"] > 0
    assert out["statistics"]["pages_written"] > 0
    assert 0 < result["seconds"] < 30

    copy_between(node_a, node_b, archive)
    restored = drive(node_b, RESTORE, via=via, archive=archive)
    # Without a new name the container keeps its name and ID.
    assert restored["result"]["container_id"] == source_id
    assert restored["result"]["name"] == name
    assert restored["statistics"]["restore_time"] > 0
    assert restored["statistics"]["pages_restored"] > 0
    assert_counts_on(node_b, name, at_checkpoint)


def test_leave_running_keeps_the_source_running(node_pair: tuple[NodeSpec, NodeSpec]) -> None:
    node_a, node_b = node_pair
    name, archive = f"{PREFIX}twin", f"/tmp/{PREFIX}twin.tar.zst"
    source_id = start_counter(node_a, name)
    before = wait_counting(node_a, name, above=10)

    out = drive(node_a, CHECKPOINT, name=name, archive=archive, options={"leave_running": True})
    assert out["source"]["running"] is True
    assert out["source"]["checkpointed"] is False
    wait_counting(node_a, name, above=before + 5)  # the source never stopped

    copy_between(node_a, node_b, archive)
    restored = drive(node_b, RESTORE, archive=archive, **{"as": f"{name}-copy"})
    assert restored["result"]["name"] == f"{name}-copy"
    assert restored["result"]["container_id"] != source_id
    # The copy resumes from the checkpoint, not from 1, and counts on. (Not its
    # log: podman exports the log after the dump, while the source still writes.)
    resumed = read_count(node_b, f"{name}-copy")
    assert resumed >= before
    wait_counting(node_b, f"{name}-copy", above=resumed)


ROLLBACK = """
results = [dump(await driver.rollback(args["name"], Path(args["archive"])))]
if args.get("twice"):
    results.append(dump(await driver.rollback(args["name"], Path(args["archive"]))))
return {"results": results, "container": dump(await driver.inspect(args["name"]))}
"""


def test_rollback_restores_the_source_in_place(node_pair: tuple[NodeSpec, NodeSpec]) -> None:
    node_a, _ = node_pair
    name, archive = f"{PREFIX}back", f"/tmp/{PREFIX}back.tar.zst"
    source_id = start_counter(node_a, name)
    wait_counting(node_a, name, above=10)
    drive(node_a, CHECKPOINT, name=name, archive=archive, options={})
    at_checkpoint = last_logged(node_a, name)
    # In place: podman restores from the container's own CRIU images, not the archive.
    nodes.host_path(node_a, archive).unlink()

    out = drive(node_a, ROLLBACK, name=name, archive=archive, twice=True)
    first, again = out["results"]
    assert (first["container_id"], first["name"]) == (source_id, name)
    assert first["statistics"]["restore_time"] > 0
    assert out["container"]["running"] is True
    # A second rollback finds it running and leaves it alone.
    assert (again["container_id"], again["seconds"]) == (source_id, 0.0)
    assert_counts_on(node_a, name, at_checkpoint)


# The counter sent over a TCP connection inside the container. The listener's
# stdin is a FIFO it holds itself (busybox nc hangs up at EOF on stdin; and a
# long `sleep` cannot hold it: it returns early after a checkpoint).
TCP_COUNTER = (
    "mkfifo /tmp/hold; exec 3<>/tmp/hold; nc -l -p 9000 <&3 >/tmp/received & sleep 0.3; "
    f"({COUNTER}) | nc 127.0.0.1 9000"
)


def test_rollback_keeps_an_established_connection(node_pair: tuple[NodeSpec, NodeSpec]) -> None:
    node_a, _ = node_pair
    name, archive = f"{PREFIX}tcp-back", f"/tmp/{PREFIX}tcp-back.tar.zst"
    sh(node_a, f"podman run -d --name {name} {images.BUSYBOX_IMAGE} sh -c '{TCP_COUNTER}'")
    before = wait_counting(node_a, name, above=10)
    options = {"tcp_established": True}
    drive(node_a, CHECKPOINT, name=name, archive=archive, options=options)

    # The rollback is not told: it finds the established connections in CRIU's images.
    out = drive(node_a, ROLLBACK, name=name, archive=archive)
    assert out["container"]["running"] is True
    assert read_count(node_a, name) >= before
    wait_counting(node_a, name, above=before + 5)
    received = [int(v) for v in sh(node_a, f"podman exec {name} cat /tmp/received").split()]
    # Every number crossed the connection once, before and after the freeze.
    assert received == list(range(1, len(received) + 1))
    assert received[-1] > before


@pytest.mark.parametrize("damage", ["removed", "images-damaged"])
def test_rollback_falls_back_to_the_archive(
    node_pair: tuple[NodeSpec, NodeSpec], damage: str
) -> None:
    node_a, _ = node_pair
    name, archive = f"{PREFIX}fallback", f"/tmp/{PREFIX}fallback.tar.zst"
    source_id = start_counter(node_a, name)
    wait_counting(node_a, name, above=10)
    drive(node_a, CHECKPOINT, name=name, archive=archive, options={})
    at_checkpoint = last_logged(node_a, name)
    if damage == "removed":
        sh(node_a, f"podman rm {name}")
    else:
        # CRIU then fails in the middle of the in-place restore (and leaves cgroups behind).
        static = sh(node_a, f"podman inspect --format '{{{{.StaticDir}}}}' {name}")
        sh(node_a, f"rm {static}/checkpoint/pages-*.img")

    out = drive(node_a, ROLLBACK, name=name, archive=archive)
    # From the archive, without --name: the same name and the same ID.
    assert (out["results"][0]["container_id"], out["results"][0]["name"]) == (source_id, name)
    assert out["container"]["running"] is True
    assert_counts_on(node_a, name, at_checkpoint)


def test_image_moves_with_its_id(node_pair: tuple[NodeSpec, NodeSpec]) -> None:
    node_a, node_b = node_pair
    sh(
        node_a,
        f"podman run --name {PREFIX}build {images.BUSYBOX_IMAGE} sh -c 'echo ferry > /marker' "
        f"&& podman commit -q {PREFIX}build {IMAGE} >/dev/null && podman rm {PREFIX}build",
    )
    image_id = sh(node_a, f"podman image inspect --format '{{{{.Id}}}}' {IMAGE}")
    name, image_tar, archive = f"{PREFIX}on-img", f"/tmp/{PREFIX}img.tar", f"/tmp/{PREFIX}ck.tar"
    start_counter(node_a, name, image=IMAGE)
    wait_counting(node_a, name, above=5)
    drive(
        node_a,
        """
        await driver.save_image(args["image_id"], Path(args["image_tar"]))
        await driver.checkpoint(args["name"], Path(args["archive"]), CheckpointOptions())
        return None
        """,
        image_id=image_id,  # by ID: saved under its name all the same
        image_tar=image_tar,
        name=name,
        archive=archive,
    )
    at_checkpoint = last_logged(node_a, name)
    copy_between(node_a, node_b, image_tar)
    copy_between(node_a, node_b, archive)

    out = drive(
        node_b,
        """
        before = await driver.image_exists(args["image_id"])
        loaded = await driver.load_image(Path(args["image_tar"]))
        after = await driver.image_exists(args["image_id"])
        restored = await driver.restore(Path(args["archive"]))
        return {"before": before, "loaded": loaded, "after": after, "restored": dump(restored)}
        """,
        image_id=image_id,
        image_tar=image_tar,
        archive=archive,
    )
    assert (out["before"], out["loaded"], out["after"]) == (False, image_id, True)
    assert sh(node_b, f"podman image inspect --format '{{{{.Id}}}}' {IMAGE}") == image_id
    # The checkpoint restores onto the shipped image, files and all.
    assert out["restored"]["name"] == name
    assert sh(node_b, f"podman exec {name} cat /marker") == "ferry"
    assert_counts_on(node_b, name, at_checkpoint)


@VIA
def test_restore_over_an_existing_name_fails_clearly(
    node_pair: tuple[NodeSpec, NodeSpec], via: str
) -> None:
    node_a, node_b = node_pair
    name, archive = f"{PREFIX}clash", f"/tmp/{PREFIX}clash.tar.zst"
    start_counter(node_a, name)
    drive(node_a, CHECKPOINT, name=name, archive=archive, options={})
    copy_between(node_a, node_b, archive)
    occupant = sh(node_b, f"podman run -d --name {name} {images.BUSYBOX_IMAGE} sleep 600")

    out = drive(
        node_b,
        """
        try:
            await driver.restore(Path(args["archive"]))
        except RuntimeCommandError as error:
            return failure(error)
        return None
        """,
        via=via,
        archive=archive,
    )
    assert out is not None, "the restore over an existing name succeeded"
    assert out["exit_code"] == 125
    assert f'the container name "{name}" is already in use' in out["decisive_line"]
    assert out["message"].startswith("podman container restore failed: ")
    assert out["criu_log"] is None
    # The container that holds the name is not the driver's to remove.
    assert sh(node_b, f"podman inspect --format '{{{{.Id}}}} {{{{.State.Running}}}}' {name}") == (
        f"{occupant} true"
    )


@VIA
def test_criu_failures_name_what_broke(node_pair: tuple[NodeSpec, NodeSpec], via: str) -> None:
    node_a, node_b = node_pair
    # A dump: an established TCP connection without --tcp-established.
    talk = "sleep 600 | nc -l -p 9000 >/dev/null & sleep 0.3; sleep 600 | nc 127.0.0.1 9000"
    sh(node_a, f"podman run -d --name {PREFIX}tcp {images.BUSYBOX_IMAGE} sh -c '{talk}'")
    # A restore: a file held open in a bind mount that the target node lacks.
    hold = "exec 3</data/held; " + COUNTER
    sh(node_a, f"mkdir -p /tmp/{PREFIX}vol && echo held > /tmp/{PREFIX}vol/held")
    sh(
        node_a,
        f"podman run -d --name {PREFIX}vol -v /tmp/{PREFIX}vol:/data "
        f"{images.BUSYBOX_IMAGE} sh -c '{hold}'",
    )
    time.sleep(0.5)
    out = drive(
        node_a,
        """
        try:
            await driver.checkpoint(args["tcp"], Path(args["tcp_archive"]), CheckpointOptions())
            dumped = None
        except RuntimeCommandError as error:
            dumped = failure(error)
        await driver.checkpoint(args["vol"], Path(args["archive"]), CheckpointOptions())
        return dumped
        """,
        via=via,
        tcp=f"{PREFIX}tcp",
        tcp_archive=f"/tmp/{PREFIX}tcp.tar.zst",
        vol=f"{PREFIX}vol",
        archive=f"/tmp/{PREFIX}vol.tar.zst",
    )
    assert out is not None, "a connected TCP socket was dumped without --tcp-established"
    assert out["decisive_line"] == (
        "inet: Connected TCP socket, consider using --tcp-established option."
    )
    assert out["criu_log"].endswith("/dump.log")
    assert out["message"].startswith("podman container checkpoint failed: inet: Connected TCP")
    assert not nodes.host_path(node_a, f"/tmp/{PREFIX}tcp.tar.zst").exists()
    assert not list(nodes.host_path(node_a, "/tmp").glob("*.partial"))

    at_checkpoint = last_logged(node_a, f"{PREFIX}vol")
    copy_between(node_a, node_b, f"/tmp/{PREFIX}vol.tar.zst")
    sh(node_b, f"mkdir -p /tmp/{PREFIX}vol")
    restore_twice = """
    try:
        await driver.restore(Path(args["archive"]))
        return None
    except RuntimeCommandError as error:
        failed = failure(error)
    left = dump(await driver.inspect(args["vol"]))
    Path(args["held"]).write_text("held\\n")
    restored = await driver.restore(Path(args["archive"]))
    return {"failed": failed, "left": left, "restored": dump(restored)}
    """
    out = drive(
        node_b,
        restore_twice,
        via=via,
        archive=f"/tmp/{PREFIX}vol.tar.zst",
        vol=f"{PREFIX}vol",
        held=f"/tmp/{PREFIX}vol/held",
    )
    assert out is not None, "the restore found a file the node does not have"
    failed = out["failed"]
    assert (
        failed["decisive_line"] == "Can't open file data/held on restore: No such file or directory"
    )
    assert failed["criu_log"].endswith("/restore.log")
    assert failed["criu_errors"][0] == failed["decisive_line"]
    assert not any("RLIMIT_NOFILE" in line for line in failed["criu_errors"])
    # Nothing left to block a retry: no `created` container, no stale cgroups; the
    # retry (with the same container ID) works once the file is there.
    assert out["left"] is None
    assert out["restored"]["name"] == f"{PREFIX}vol"
    assert_counts_on(node_b, f"{PREFIX}vol", at_checkpoint)
